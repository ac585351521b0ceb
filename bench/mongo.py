"""MongoDB benchmarks through devstack's MONGODB-AWS verifying peer.

- Cold ``get_mongo()`` in a fresh process, broken down: imports, iamdb's configuration
  checks, AssumeRole (iamdb's own AWS client), then connect + TLS + MONGODB-AWS login (signed
  by iamdb), against what a user would write: boto3 AssumeRole + pymongo with
  pymongo-auth-aws; and which AWS SDK modules the cold path loaded (none).
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
from dataclasses import replace
from typing import Any

from bench.table import Row, interleaved, median_us, print_table

COLD_CHILD = """
import json, sys, time
t0 = time.perf_counter()
import iamdb
t1 = time.perf_counter()
import pymongo
t2 = time.perf_counter()
from iamdb._mongo.client import open_client
from iamdb._registry import default
handle = default.mongo_handle()  # reads and validates the configuration (pymongo's URI parser)
t3 = time.perf_counter()
lease = handle.fresh_lease()  # AssumeRole
t4 = time.perf_counter()
client = open_client(handle.cfg, lease, (time.time, time.time() + 10))  # TLS + login (ping)
t5 = time.perf_counter()
import iamdb._mongo.aws
sdk = sorted({m.split(".")[0] for m in sys.modules} & {"boto3", "botocore"})
if sys.modules.get("pymongo_auth_aws", iamdb._mongo.aws) is not iamdb._mongo.aws:
    sdk.append("pymongo_auth_aws")
print(json.dumps({"phases": {"import iamdb": t1 - t0, "import pymongo": t2 - t1,
                  "iamdb: read and check the configuration": t3 - t2,
                  "AssumeRole (iamdb's AWS client)": t4 - t3,
                  "connect + TLS + MONGODB-AWS login": t5 - t4}, "modules": sdk}))
"""
BASELINE_CHILD = """
import json, os, sys, time
t0 = time.perf_counter()
import boto3, pymongo
t1 = time.perf_counter()
e = os.environ
sts = boto3.client("sts", region_name=e["AWS_REGION"])
c = sts.assume_role(RoleArn=e["IAMDB_MONGO_ROLE_ARN"], RoleSessionName="bench")["Credentials"]
t2 = time.perf_counter()
client = pymongo.MongoClient(e["IAMDB_MONGO_URI"], username=c["AccessKeyId"],
    password=c["SecretAccessKey"], authMechanism="MONGODB-AWS", authSource="$external",
    authMechanismProperties={"AWS_SESSION_TOKEN": c["SessionToken"]})
client.admin.command("ping")
t3 = time.perf_counter()
print(json.dumps({"phases": {"import boto3 + pymongo": t1 - t0,
                  "boto3 STS client + AssumeRole": t2 - t1,
                  "connect + TLS + MONGODB-AWS login (pymongo-auth-aws, botocore)": t3 - t2},
                  "modules": []}))
"""


def cold(env: dict[str, str], code: str = COLD_CHILD, runs: int = 7) -> dict[str, float]:
    """Median seconds per phase over ``runs`` fresh processes."""
    samples: dict[str, list[float]] = {}
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        for phase, seconds in json.loads(out.stdout)["phases"].items():
            samples.setdefault(phase, []).append(seconds)
    return {phase: statistics.median(values) for phase, values in samples.items()}


def sdk_modules(env: dict[str, str]) -> list[str]:
    """Which AWS SDK modules a cold get_mongo() loaded (boto3, botocore, the real
    pymongo_auth_aws rather than iamdb's stand-in)."""
    out = subprocess.run(
        [sys.executable, "-c", COLD_CHILD],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    modules: list[str] = json.loads(out.stdout)["modules"]
    return modules


def rows(env: dict[str, str]) -> list[Row]:
    import pymongo

    import iamdb
    from iamdb._mongo import aws as _mongo_aws
    from iamdb._mongo.client import client_options
    from iamdb._mongo.config import load_mongo_config
    from iamdb._registry import default

    os.environ.update(env)
    iamdb.get_mongo().admin.command("ping")
    warm = median_us(iamdb.get_mongo, 20000)
    cfg = load_mongo_config(None, env)
    creds = default.mongo_handle().fresh_lease(time.time() + 10).credentials
    # pymongo imports pymongo_auth_aws at every login: swap which one it finds.
    stand_in = {m: sys.modules.pop(m) for m in list(sys.modules) if m.startswith("pymongo_auth")}
    import pymongo_auth_aws  # the real one (boto3, botocore), for the baseline

    real = {m: sys.modules[m] for m in list(sys.modules) if m.startswith("pymongo_auth")}
    assert pymongo_auth_aws is not _mongo_aws

    def iamdb_socket() -> None:
        sys.modules.update(stand_in)
        client: Any = pymongo.MongoClient(
            cfg.uri, **client_options(replace(cfg, client_name="bench"), creds)
        )
        client.admin.command("ping")
        client.close()

    def baseline_socket() -> None:
        sys.modules.update(real)
        client: Any = pymongo.MongoClient(
            cfg.uri, authMechanism="MONGODB-AWS", authSource="$external", tls=True
        )
        client.admin.command("ping")
        client.close()

    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(
        AWS_ACCESS_KEY_ID=creds.access_key,
        AWS_SECRET_ACCESS_KEY=creds.secret_key,
        AWS_SESSION_TOKEN=creds.token or "",
    )
    new_base, new_iamdb = interleaved(baseline_socket, iamdb_socket, 20)
    sys.modules.update(stand_in)
    os.environ.update({k: v for k, v in saved.items() if v is not None})
    os.environ["AWS_SESSION_TOKEN"] = env["AWS_SESSION_TOKEN"]
    iamdb.reset()
    return [
        Row(
            "new socket + MONGODB-AWS login (us)",
            new_base,
            new_iamdb,
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
        for title, code in (
            ("iamdb's first get_mongo()", COLD_CHILD),
            ("baseline: boto3 AssumeRole + pymongo with pymongo-auth-aws", BASELINE_CHILD),
        ):
            phases = cold(env, code)
            print(f"\n### Cold, fresh process: {title} (median of 7, ms)\n")
            print("| phase | ms |\n|---|---:|")
            for phase, seconds in phases.items():
                print(f"| {phase} | {seconds * 1000:.1f} |")
            print(f"| total | {sum(phases.values()) * 1000:.1f} |")
        print(f"\nAWS SDK modules a cold get_mongo() loaded: {sdk_modules(env) or 'none'}")
        print_table("MongoDB through devstack's verifying peer", rows(env))
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
