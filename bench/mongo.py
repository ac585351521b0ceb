"""MongoDB benchmarks through devstack's MONGODB-AWS verifying peer.

- Cold ``get_mongo()`` in a fresh process, broken down: imports, STS AssumeRole (boto3
  client created on first use), then connect + TLS + MONGODB-AWS login + first command.
- Warm ``get_mongo()`` overhead on a live client (goal <= 5 us median).
- New socket + login: iamdb's explicit credentials against pymongo's no-username path,
  which builds a boto3 session for every new socket (the baseline a user gets from
  ``authMechanism=MONGODB-AWS`` with credentials in the environment).

Run: ``python -m bench.mongo`` (starts and stops its own devstack).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.table import Row, print_table

COLD_CHILD = """
import json, time
t0 = time.perf_counter()
import iamdb
t1 = time.perf_counter()
import pymongo, boto3
t2 = time.perf_counter()
from iamdb.registry import default
handle = default.mongo_handle()
t3 = time.perf_counter()
handle.fresh_lease()
t4 = time.perf_counter()
default.get_mongo().admin.command("ping")
t5 = time.perf_counter()
print(json.dumps({"import iamdb": t1 - t0, "import pymongo + boto3": t2 - t1,
                  "read config": t3 - t2,
                  "first AssumeRole (creates the boto3 STS client)": t4 - t3,
                  "get_mongo + ping (AssumeRole + connect + TLS + login)": t5 - t4}))
"""


def cold(env: dict[str, str], runs: int = 5) -> dict[str, float]:
    """Median seconds per phase over ``runs`` fresh processes."""
    samples: dict[str, list[float]] = {}
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", COLD_CHILD],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        for phase, seconds in json.loads(out.stdout).items():
            samples.setdefault(phase, []).append(seconds)
    return {phase: statistics.median(values) for phase, values in samples.items()}


def _median_us(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t)
    return statistics.median(times) / 1000


def rows(env: dict[str, str]) -> list[Row]:
    import pymongo

    import iamdb
    from iamdb.mongo import client_options, load_mongo_config
    from iamdb.sts import StsClient

    os.environ.update(env)
    iamdb.get_mongo().admin.command("ping")
    warm = _median_us(iamdb.get_mongo, 20000)
    cfg = load_mongo_config(None, env)
    role = StsClient(env).assume_role(env["IAMDB_MONGO_ROLE_ARN"], duration_seconds=3600)
    creds = role.credentials

    def iamdb_socket() -> None:
        client: Any = pymongo.MongoClient(cfg.uri, **client_options(cfg, creds, "bench"))
        client.admin.command("ping")
        client.close()

    def baseline_socket() -> None:
        client: Any = pymongo.MongoClient(
            cfg.uri, authMechanism="MONGODB-AWS", authSource="$external"
        )
        client.admin.command("ping")
        client.close()

    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(
        AWS_ACCESS_KEY_ID=creds.access_key,
        AWS_SECRET_ACCESS_KEY=creds.secret_key,
        AWS_SESSION_TOKEN=creds.token or "",
    )
    new_base, new_iamdb = [], []
    for _ in range(20):  # interleaved, so drift hits both alike
        new_base.append(_median_us(baseline_socket, 1))
        new_iamdb.append(_median_us(iamdb_socket, 1))
    os.environ.update({k: v for k, v in saved.items() if v is not None})
    os.environ["AWS_SESSION_TOKEN"] = env["AWS_SESSION_TOKEN"]
    iamdb.reset()
    return [
        Row(
            "new socket + MONGODB-AWS login (us)",
            statistics.median(new_base),
            statistics.median(new_iamdb),
            "faster than a boto3 session per socket",
        ),
        Row("warm get_mongo() (us)", float("nan"), warm, "<= 5 us median"),
    ]


def main() -> None:
    from devstack.stack import Stack

    stack = Stack(pg=False, mysql=False)
    stack.start()
    try:
        env = dict(stack.env)
        phases = cold(env)
        print("\n### Cold get_mongo() in a fresh process (median of 5, ms)\n")
        print("| phase | ms |\n|---|---:|")
        for phase, seconds in phases.items():
            print(f"| {phase} | {seconds * 1000:.1f} |")
        print(f"| total | {sum(phases.values()) * 1000:.1f} |")
        print_table("MongoDB through devstack's verifying peer", rows(env))
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
