"""SnapStart: after a (simulated) restore, iamdb drops tokens, credentials and connections.

The child process finds a stand-in ``snapshot_restore_py`` first on its path, which records
the hooks iamdb registers, so the test can run them as Lambda does after a restore.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

FAKE_RUNTIME = """
after_restore = []
def register_after_restore(func, *args, **kwargs):
    after_restore.append((func, args, kwargs))
    return func
def register_before_snapshot(func, *args, **kwargs):
    return func
"""

CHILD = """
import json
import snapshot_restore_py
import iamdb
from iamdb._registry import default

before = iamdb.get_pg()                      # init: connect, sign, as a primed function would
signed_before = iamdb.info("pg").tokens_signed
for func, args, kwargs in snapshot_restore_py.after_restore:   # Lambda restores the snapshot
    func(*args, **kwargs)
after = iamdb.get_pg()
print(json.dumps({
    "hooks": len(snapshot_restore_py.after_restore),
    "old_closed": before.closed,
    "new_connection": after is not before,
    "fresh_token_cache": iamdb.info("pg").tokens_signed == 1 and signed_before == 1,
    "works": after.execute("SELECT 1").fetchone()[0],
}))
"""


def test_restore_hook_drops_connections_and_tokens(
    stack: Any, stack_env: Any, tmp_path: Path
) -> None:
    (tmp_path / "snapshot_restore_py.py").write_text(FAKE_RUNTIME)
    env = {**os.environ, **stack.env}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "hooks": 1,
        "old_closed": True,
        "new_connection": True,
        "fresh_token_cache": True,
        "works": 1,
    }
