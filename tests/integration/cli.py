"""Run ``python -m iamdb`` in a child process with extra environment (for CLI tests)."""

from __future__ import annotations

import os
import subprocess
import sys


def run_iamdb(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "iamdb", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
