"""Cold start: the first PostgreSQL login of a fresh process, as a Lambda cold start pays it.

Each variant runs in a fresh interpreter, from its first line (imports included) to the
first row of ``SELECT 1`` (also shown: the part after importing psycopg, which every
variant needs and whose own cost varies most from run to run), against devstack's verifying
PostgreSQL; the variants take turns (interleaved) so drift hits all alike, median of
:data:`RUNS`:

- iamdb with the fleet limiter (``IAMDB_THROTTLE_TABLE``: one DynamoDB ``UpdateItem``);
- iamdb without it;
- what a user would otherwise write: boto3 ``generate_db_auth_token`` + ``psycopg.connect``,
  no limiter at all;
- the AWS Advanced Python Wrapper's IAM plugin (``plugins="iam"``), in a virtual environment
  of its own under ``build/`` (created on first use: pip, PyPI).

Beside them, the round trip of one bare ``UpdateItem`` to the same DynamoDB endpoint on a
kept-alive connection: the goal is that the fleet limiter costs at most that plus 5 ms.

Run: ``python -m bench.cold`` (starts and stops its own devstack).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUNS = 15
WRAPPER_VENV = ROOT / "build" / "bench-aws-wrapper"
WRAPPER_PINS = ["aws-advanced-python-wrapper==3.1.0", "psycopg[binary]>=3.2,<3.4"]

_PRELUDE = (
    "import time\n_t0 = time.perf_counter()\nimport json, os\n"
    "import psycopg\n_t1 = time.perf_counter()\n"  # every variant needs the driver
)
_REPORT = (
    "_t2 = time.perf_counter()\n"
    "print(json.dumps({'ms': (_t2 - _t0) * 1000, 'after_driver_ms': (_t2 - _t1) * 1000}))\n"
)
IAMDB = _PRELUDE + "import iamdb\niamdb.get_pg().execute('SELECT 1').fetchone()\n" + _REPORT
BOTO3 = (
    _PRELUDE
    + """import boto3, psycopg
e = os.environ
rds = boto3.client("rds", region_name=e["AWS_REGION"])
port = int(e["IAMDB_PG_PORT"])
token = rds.generate_db_auth_token(e["IAMDB_PG_IAM_HOST"], port, e["IAMDB_PG_USER"])
conn = psycopg.connect(host=e["IAMDB_PG_HOST"], port=port, user=e["IAMDB_PG_USER"],
    password=token, dbname=e["IAMDB_PG_DBNAME"], sslmode="verify-full",
    sslrootcert=e["IAMDB_PG_SSLROOTCERT"], connect_timeout=5, autocommit=True)
conn.execute("SELECT 1").fetchone()
"""
    + _REPORT
)
WRAPPER = (
    _PRELUDE
    + """from aws_advanced_python_wrapper import AwsWrapperConnection
from psycopg import Connection
e = os.environ
conn = AwsWrapperConnection.connect(Connection.connect,
    host=e["IAMDB_PG_HOST"], port=int(e["IAMDB_PG_PORT"]), user=e["IAMDB_PG_USER"],
    dbname=e["IAMDB_PG_DBNAME"], sslmode="verify-full", sslrootcert=e["IAMDB_PG_SSLROOTCERT"],
    connect_timeout=5, autocommit=True, plugins="iam", iam_host=e["IAMDB_PG_IAM_HOST"],
    iam_region=e["AWS_REGION"], iam_default_port=e["IAMDB_PG_PORT"], wrapper_dialect="pg")
conn.cursor().execute("SELECT 1")
"""
    + _REPORT
)


def wrapper_python() -> str | None:
    """The interpreter of the wrapper's own virtual environment (created once), or None."""
    python = WRAPPER_VENV / "bin" / "python"
    if not python.exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", str(WRAPPER_VENV)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", *WRAPPER_PINS],
                check=True,
                timeout=600,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            print(f"bench.cold: no AWS Advanced Python Wrapper ({exc})", file=sys.stderr)
            return None
    return str(python)


def run_child(python: str, code: str, env: dict[str, str]) -> tuple[float, float]:
    """(whole first login, the part after importing the driver) in ms, of one fresh process."""
    out = subprocess.run(
        [python, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"child failed: {out.stderr[-2000:]}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return float(got["ms"]), float(got["after_driver_ms"])


def bare_update_item_ms(env: dict[str, str], repeat: int = 50) -> tuple[float, float, float]:
    """Median round trip (ms) of one UpdateItem with iamdb's AWS client: a trivial one on a
    kept-alive connection, the same as the first request of a new connection, and the
    limiter's own ticket (its conditional expression, on an idle queue) on a new connection:
    what a cold start's first ticket costs at the server. moto evaluates expressions in
    Python, milliseconds apart; DynamoDB in microseconds."""
    from iamdb._aws.chain import CredentialResolver
    from iamdb._aws.client import AwsClient
    from iamdb._core.runtime import Runtime
    from iamdb._sql.queue import HORIZON_US, TOLERANCE_US, View, take

    rt = Runtime(environ=env)
    table = env["IAMDB_THROTTLE_TABLE"]

    def client() -> AwsClient:
        return AwsClient(rt, CredentialResolver(Runtime(environ=env)))

    def ms(aws: AwsClient, payload: dict[str, Any]) -> float:
        started = time.perf_counter()
        aws.dynamodb("UpdateItem", payload, time.time() + 10)
        return (time.perf_counter() - started) * 1000

    def on_new_connection(payload: dict[str, Any]) -> float:
        fresh = client()
        try:
            return ms(fresh, payload)
        finally:
            fresh.close()

    def idle_queue_ticket() -> dict[str, Any]:
        now = int(time.time() * 1e6)  # a correct clock: every bound as the limiter sets it
        view = View(now, now, now - TOLERANCE_US, now + 10_000_000, now + 1_000_000,
                    now + HORIZON_US)  # fmt: skip
        return {
            "TableName": table,
            "Key": {"pk": {"S": f"bench#idle-queue-{now}"}},
            **take(view, 111_111),  # R = 10: slots 1/(0.9 R) apart
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }

    trivial = {
        "TableName": table,
        "Key": {"pk": {"S": "bench#bare-update-item"}},
        "UpdateExpression": "SET x = :v",
        "ExpressionAttributeValues": {":v": {"N": "1"}},
    }
    kept_alive = client()
    ms(kept_alive, trivial)  # connect once
    kept, new, ticket = [], [], []
    for _ in range(repeat):
        kept.append(ms(kept_alive, trivial))
        new.append(on_new_connection(trivial))
        ticket.append(on_new_connection(idle_queue_ticket()))
    kept_alive.close()
    return statistics.median(kept), statistics.median(new), statistics.median(ticket)


def measure(env: dict[str, str]) -> dict[str, tuple[float, float]]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("IAMDB_", "AWS_", "PYTHON"))}
    fleet = {**base, **env, "PYTHONPATH": str(ROOT / "layer")}
    plain = {k: v for k, v in fleet.items() if k != "IAMDB_THROTTLE_TABLE"}
    variants: dict[str, tuple[str, str, dict[str, str]]] = {
        "iamdb + fleet limiter": (sys.executable, IAMDB, fleet),
        "iamdb, no fleet limiter": (sys.executable, IAMDB, plain),
        "boto3 token + psycopg.connect": (sys.executable, BOTO3, plain),
    }
    wrapper = wrapper_python()
    if wrapper is not None:
        variants["AWS Advanced Python Wrapper, iam plugin"] = (wrapper, WRAPPER, plain)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for python, code, child_env in variants.values():
        run_child(python, code, child_env)  # warm the page cache and .pyc files once
    for _ in range(RUNS):
        for name, (python, code, child_env) in variants.items():
            samples[name].append(run_child(python, code, child_env))
            time.sleep(0.2)
    return {
        name: (statistics.median(v[0] for v in values), statistics.median(v[1] for v in values))
        for name, values in samples.items()
    }


def print_cold(results: dict[str, tuple[float, float]], rtt: tuple[float, float, float]) -> None:
    from bench.table import print_grid

    with_fleet = results["iamdb + fleet limiter"][1]
    without = results["iamdb, no fleet limiter"]
    print_grid(
        f"Cold start: first get_pg() in a fresh process (ms, median of {RUNS}, interleaved)",
        ["variant", "whole (ms)", "vs iamdb", "after importing psycopg (ms)", "vs iamdb"],
        [
            [
                name,
                f"{ms:.1f}",
                f"{ms / without[0]:.2f}x",
                f"{after:.1f}",
                f"{after / without[1]:.2f}x",
            ]
            for name, (ms, after) in results.items()
        ],
    )
    print(
        f"\nFleet limiter's cost (after the driver import): {with_fleet - without[1]:+.1f} ms; one "
        f"bare UpdateItem to the same endpoint: {rtt[0]:.1f} ms on a kept-alive connection, "
        f"{rtt[1]:.1f} ms as the first request of a new one, {rtt[2]:.1f} ms for the limiter's own "
        "ticket UpdateItem on a new connection (goal: cost <= that round trip + 5 ms)."
    )


def main() -> None:
    from devstack.stack import Stack

    stack = Stack(mysql=False, mongo=False)
    stack.start()
    try:
        env = dict(stack.env)
        results = measure(env)
        print_cold(results, bare_update_item_ms(env))
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
