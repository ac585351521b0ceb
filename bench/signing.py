"""Signing benchmarks: iamdb's stdlib signer against boto3/botocore.

1. Cold start: a fresh interpreter that imports iamdb and signs one token, against one
   that imports boto3, creates an ``rds`` client (region and explicit credentials, no
   network) and signs one. Median of N runs of the whole process (wall time), and the
   time measured inside the child from before the import to the token.
2. Warm signing: time per token in an already warm process, user name varying so that
   no whole-token cache could help (iamdb's derived-key cache may, as botocore's would).
   Aurora DSQL tokens likewise, against the ``dsql`` client, the lifetime varying.

Run: ``python bench/signing.py`` (prints a markdown table); ``rows()`` returns the
same rows for a runner.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import timeit
from itertools import cycle
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.table import Row

ROOT = Path(__file__).resolve().parent.parent
LAYER = ROOT / "layer"
COLD_RUNS = 15

HOST = "mydb.c9akciq32.us-east-1.rds.amazonaws.com"
DSQL_HOST = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws"
REGION = "us-east-1"
ACCESS_KEY = "ASIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjE//////////wEaCXVzLWVhc3QtMSJHMEUCIQD" + "x+/=" * 300

_CHILD_IAMDB = f"""
import time
t = time.perf_counter()
import iamdb
iamdb.generate_db_auth_token({HOST!r}, 5432, "app", {REGION!r})
print((time.perf_counter() - t) * 1000)
"""

_CHILD_BOTO3 = f"""
import os, time
t = time.perf_counter()
import boto3
rds = boto3.client("rds", region_name={REGION!r},
                   aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                   aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                   aws_session_token=os.environ["AWS_SESSION_TOKEN"])
rds.generate_db_auth_token({HOST!r}, 5432, "app", {REGION!r})
print((time.perf_counter() - t) * 1000)
"""


def _ensure_paths() -> None:
    """Make ``bench`` and ``iamdb`` importable when run as a script from anywhere."""
    for path in (str(LAYER), str(ROOT)):
        if path not in sys.path:
            sys.path.insert(0, path)


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHON"))}
    env.update(
        PYTHONPATH=str(LAYER),
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_SESSION_TOKEN=SESSION_TOKEN,
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def _run_child(code: str, env: dict[str, str]) -> tuple[float, float]:
    """(whole-process wall ms, in-process ms reported by the child)."""
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return (time.perf_counter() - start) * 1000, float(out.stdout.strip())


def cold_start(runs: int = COLD_RUNS) -> dict[str, tuple[float, float]]:
    """Median (wall ms, in-process ms) per side; runs interleaved, one warm-up each."""
    env = _child_env()
    samples: dict[str, list[tuple[float, float]]] = {"iamdb": [], "boto3": []}
    codes = {"iamdb": _CHILD_IAMDB, "boto3": _CHILD_BOTO3}
    for code in codes.values():
        _run_child(code, env)  # warm-up: writes .pyc files, fills the page cache
    for _ in range(runs):
        for name, code in codes.items():
            samples[name].append(_run_child(code, env))
    return {
        name: (statistics.median(s[0] for s in got), statistics.median(s[1] for s in got))
        for name, got in samples.items()
    }


def _per_call_us(fn: Any, number: int, repeat: int = 5) -> float:
    """Median over ``repeat`` rounds of the time per call, in microseconds."""
    rounds = timeit.Timer(fn).repeat(repeat=repeat, number=number)
    return statistics.median(rounds) / number * 1e6


def warm_signing() -> tuple[float, float]:
    """(botocore us/token, iamdb us/token), same credentials, varying user names."""
    _ensure_paths()
    import boto3

    from iamdb._aws.credentials import Credentials
    from iamdb._aws.signer import generate_db_auth_token

    rds = boto3.client(
        "rds",
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        aws_session_token=SESSION_TOKEN,
    )
    creds = Credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN)
    users_b = cycle([f"user{i:04d}" for i in range(1000)])
    users_i = cycle([f"user{i:04d}" for i in range(1000)])

    def botocore_once() -> None:
        rds.generate_db_auth_token(HOST, 5432, next(users_b), REGION)

    def iamdb_once() -> None:
        generate_db_auth_token(HOST, 5432, next(users_i), REGION, credentials=creds)

    botocore_once()  # warm both
    iamdb_once()
    return _per_call_us(botocore_once, 1000), _per_call_us(iamdb_once, 20000)


def warm_dsql_signing() -> tuple[float, float]:
    """(botocore us/token, iamdb us/token) for DSQL tokens, lifetimes varying."""
    _ensure_paths()
    import boto3

    from iamdb._aws.credentials import Credentials
    from iamdb._aws.signer import generate_dsql_auth_token

    dsql = boto3.client(
        "dsql",
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        aws_session_token=SESSION_TOKEN,
    )
    creds = Credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN)
    lifetimes_b = cycle(range(900, 1900))
    lifetimes_i = cycle(range(900, 1900))

    def botocore_once() -> None:
        dsql.generate_db_connect_admin_auth_token(DSQL_HOST, REGION, next(lifetimes_b))

    def iamdb_once() -> None:
        generate_dsql_auth_token(
            DSQL_HOST, REGION, admin=True, expires_in=next(lifetimes_i), credentials=creds
        )

    botocore_once()
    iamdb_once()
    return _per_call_us(botocore_once, 1000), _per_call_us(iamdb_once, 20000)


def rows() -> list[Row]:
    """The benchmark rows (cold start in ms, warm signing in microseconds per token)."""
    _ensure_paths()
    from bench.table import Row

    cold = cold_start()
    warm_botocore, warm_iamdb = warm_signing()
    dsql_botocore, dsql_iamdb = warm_dsql_signing()
    return [
        Row(
            f"cold start, whole process, median of {COLD_RUNS} (ms)",
            cold["boto3"][0],
            cold["iamdb"][0],
            "<= 0.1",
        ),
        Row(
            "cold start, import + first token inside the process (ms)",
            cold["boto3"][1],
            cold["iamdb"][1],
            "(info)",
        ),
        Row("warm signing, per token (us)", warm_botocore, warm_iamdb, "<= 0.1 (>= 10x faster)"),
        Row("warm DSQL signing, per token (us)", dsql_botocore, dsql_iamdb, "<= 0.1"),
    ]


def main() -> None:
    _ensure_paths()
    from bench.table import print_table

    print_table("Token signing: iamdb vs boto3/botocore", rows())


if __name__ == "__main__":
    main()
