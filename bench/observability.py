"""What iamdb's Powertools integration costs: cold first login and warm calls, on and off.

- Cold: the first ``get_pg()`` of a fresh process (sign, TLS, login), in a process that does
  not use Powertools against one whose handler already made a ``Logger``, ``Metrics`` and an
  enabled ``Tracer`` (a local X-Ray daemon receives the subsegment) with a metrics namespace
  set: the difference is iamdb joining the Logger, printing one EMF record and one
  subsegment. Not counted, as they are paid with or without iamdb: the application's import
  of Powertools, the import of psycopg and iamdb, and X-Ray's patching of libraries (the
  Tracer is made with ``auto_patch=False``).
- Warm: ``get_pg()`` on a live connection with metrics on against off (nothing to print).

Run: ``python -m bench.observability`` (starts and stops its own devstack).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench.table import Row, print_table

REPO = Path(__file__).resolve().parent.parent
RUNS = 15

_CHILD = """
import contextlib, sys, time
handler = contextlib.nullcontext()
if sys.argv[1] == "powertools":
    from aws_lambda_powertools import Logger, Metrics, Tracer
    # auto_patch=False: X-Ray's own wrapping of psycopg is the Tracer's cost, not iamdb's
    logger, metrics, tracer = Logger(), Metrics(), Tracer(auto_patch=False)
    handler = tracer.provider.in_subsegment("## handler")  # as capture_lambda_handler does
import iamdb, iamdb._sql.pg, iamdb._registry, psycopg  # imported alike in both modes: not measured
t = time.perf_counter()
with handler:
    iamdb.get_pg().execute("SELECT 1")
cold = time.perf_counter() - t
n, t = 20000, time.perf_counter()
for _ in range(n):
    iamdb.get_pg()
warm = (time.perf_counter() - t) / n
print("TIMES", cold * 1e3, warm * 1e6, file=sys.stderr)
"""


def _run(mode: str, env: dict[str, str], xray_address: str) -> tuple[float, float]:
    child = {**os.environ, **env, "PYTHONPATH": f"{REPO / 'layer'}:{REPO}"}
    if mode == "powertools":
        child.update(
            POWERTOOLS_SERVICE_NAME="bench",
            IAMDB_METRICS_NAMESPACE="IamDbBench",
            LAMBDA_TASK_ROOT=str(REPO),
            AWS_XRAY_DAEMON_ADDRESS=xray_address,
            _X_AMZN_TRACE_ID="Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        )
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, mode],
        env=child,
        stdout=subprocess.DEVNULL,  # what Lambda ships to CloudWatch Logs
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        check=True,
    )
    line = next(x for x in done.stderr.splitlines() if x.startswith("TIMES "))
    cold_ms, warm_us = (float(v) for v in line.split()[1:])
    return cold_ms, warm_us


def rows(env: dict[str, str], xray_address: str) -> list[Row]:
    env = {k: v for k, v in env.items() if k != "IAMDB_THROTTLE_TABLE"}  # like for like
    plain: list[tuple[float, float]] = []
    powertools: list[tuple[float, float]] = []
    for _ in range(RUNS):  # interleaved, so drift hits both alike
        plain.append(_run("plain", env, xray_address))
        powertools.append(_run("powertools", env, xray_address))
    return [
        Row(
            "first get_pg() of a process, ms (Logger + EMF + subsegment vs plain)",
            statistics.median(c for c, _ in plain),
            statistics.median(c for c, _ in powertools),
            "info: cold-start cost of the integration",
        ),
        Row(
            "warm get_pg(), us (metrics on vs off)",
            statistics.median(w for _, w in plain),
            statistics.median(w for _, w in powertools),
            "~1: nothing to print when reused",
        ),
    ]


def main() -> None:
    from devstack.sam.xray import XRayDaemon
    from devstack.stack import Stack

    stack = Stack(mysql=False, mongo=False)  # only PostgreSQL is measured
    xray = XRayDaemon()
    stack.start()
    try:
        table = rows(dict(stack.env), xray.address)
        print_table(f"Powertools integration (median of {RUNS} processes each)", table)
        received = sum(d.get("name") == "iamdb connect" for d in xray.documents)
        print(f"\n(the X-Ray daemon received {received} 'iamdb connect' subsegments)")
    finally:
        stack.stop()
        xray.close()


if __name__ == "__main__":
    main()
