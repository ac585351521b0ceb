"""get_valkey() through devstack's ElastiCache front (redis-server behind TLS and IAM checks).

- Cold: the first ``get_valkey()`` + ``PING`` of a fresh process against what a user writes
  today, AWS's guide made into a redis-py credential provider: boto3 (``botocore``'s
  ``SigV4QueryAuth``) presigning in ``get_credentials()``, ``redis.Redis(ssl=True, ...)``. Each
  variant in its own interpreter, taking turns, median of :data:`RUNS`; shown whole and
  *after the client's own import* (``import valkey`` / ``import redis``, which every way pays):
  goal <= 0.2x.
- The clients' own cold import (valkey-py, redis-py), which decided iamdb's choice.
- Warm ``get_valkey()`` on a live client (goal <= 5 us), and the first ``get_valkey()`` of an
  invocation (it looks at the idle connections' sockets).
- Re-authentication: one ``AUTH`` with a fresh token on a live connection, against what the
  12-hour limit costs without it (a new connection: TCP + TLS + ``AUTH``).

Run: ``python -m bench.valkey`` (starts and stops its own devstack).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import uuid
from typing import Any

from bench.table import Row, median_us, print_table

RUNS = 11
_PRELUDE = "import time\n_t0 = time.perf_counter()\nimport json, os\n"
_REPORT = (
    "_t2 = time.perf_counter()\n"
    "print(json.dumps({'ms': (_t2 - _t0) * 1000, 'after_client_ms': (_t2 - _t1) * 1000}))\n"
)
IAMDB = (
    _PRELUDE
    + "import valkey\n_t1 = time.perf_counter()\n"
    + "import iamdb\niamdb.get_valkey().ping()\n"
    + _REPORT
)
BOTO3 = (
    _PRELUDE
    + "import redis\n_t1 = time.perf_counter()\n"
    + """import boto3
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from redis.credentials import CredentialProvider
e = os.environ


class ElastiCacheIam(CredentialProvider):  # AWS's guide, as a redis-py credential provider
    def __init__(self, user, cache, region):
        self.user, self.cache, self.region = user, cache, region
        self.session = boto3.session.Session()

    def get_credentials(self):
        request = AWSRequest(method="GET", url=f"http://{self.cache}/",
                             params={"Action": "connect", "User": self.user})
        creds = self.session.get_credentials().get_frozen_credentials()
        SigV4QueryAuth(creds, "elasticache", self.region, expires=900).add_auth(request)
        return self.user, request.url.removeprefix("http://")


client = redis.Redis(host=e["IAMDB_VALKEY_HOST"], port=int(e["IAMDB_VALKEY_PORT"]), ssl=True,
    ssl_ca_certs=e["IAMDB_VALKEY_SSLROOTCERT"], ssl_check_hostname=True, socket_timeout=5,
    credential_provider=ElastiCacheIam(e["IAMDB_VALKEY_USER"], e["IAMDB_VALKEY_CACHE_NAME"],
                                       e["AWS_REGION"]))
client.ping()
"""
    + _REPORT
)
IMPORT = (
    "import time\nt = time.perf_counter()\nimport {0}\nprint((time.perf_counter() - t) * 1000)\n"
)


def _child(code: str, env: dict[str, str]) -> Any:
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def cold_rows(env: dict[str, str]) -> list[Row]:
    samples: dict[str, list[dict[str, float]]] = {"iamdb": [], "boto3": []}
    for _ in range(RUNS):  # interleaved: drift hits both alike
        samples["iamdb"].append(_child(IAMDB, env))
        samples["boto3"].append(_child(BOTO3, env))

    def med(who: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[who])

    imported: dict[str, list[float]] = {"valkey": [], "redis": []}
    for _ in range(RUNS):  # interleaved too
        for module, times in imported.items():
            times.append(_child(IMPORT.format(module), env))
    imports = {module: statistics.median(times) for module, times in imported.items()}
    return [
        Row(
            "cold first get + PING, whole process (ms)",
            med("boto3", "ms"),
            med("iamdb", "ms"),
            "info",
        ),
        Row(
            "cold, after the client's own import (ms)",
            med("boto3", "after_client_ms"),
            med("iamdb", "after_client_ms"),
            "<= 0.2x",
        ),
        Row(
            "client import: redis-py (baseline) vs valkey-py (ms)",
            imports["redis"],
            imports["valkey"],
            "info: iamdb's choice",
        ),
    ]


def warm_rows(env: dict[str, str]) -> list[Row]:
    import iamdb
    from iamdb._registry import default
    from iamdb._valkey import client as _client

    os.environ.update(env)
    iamdb.reset()
    cache = iamdb.get_valkey()
    cache.ping()
    warm = median_us(iamdb.get_valkey, 20000)

    def next_invocation() -> None:
        os.environ["_X_AMZN_TRACE_ID"] = f"Root=1-{uuid.uuid4().hex}"
        iamdb.get_valkey()

    first_of_invocation = median_us(next_invocation, 2000)
    os.environ.pop("_X_AMZN_TRACE_ID", None)
    handle = default.valkey_handle()
    pool = cache.connection_pool

    def reauthenticate() -> None:
        conn = pool.get_connection("PING")
        try:
            assert _client.reauthenticate(conn, handle.provider) is None
        finally:
            pool.release(conn)

    def reconnect() -> None:
        conn = pool.get_connection("PING")
        try:
            conn.disconnect()
            conn.connect()
        finally:
            pool.release(conn)

    reauth = median_us(reauthenticate, 300)
    fresh = median_us(reconnect, 300)
    iamdb.reset()
    return [
        Row("warm get_valkey() (us)", float("nan"), warm, "<= 5 us median"),
        Row(
            "first get_valkey() of an invocation (us)",
            float("nan"),
            first_of_invocation,
            "info: looks at the idle sockets",
        ),
        Row(
            "re-authentication: AUTH with a fresh token vs a new connection (us)",
            fresh,
            reauth,
            "cheaper than reconnecting",
        ),
    ]


def main() -> None:
    from devstack.stack import Stack

    stack = Stack(pg=False, mysql=False, mongo=False, dsql=False)
    stack.start()
    try:
        env = {k: v for k, v in stack.env.items() if not k.startswith("IAMDB_THROTTLE")}
        print_table(
            "Valkey through devstack's ElastiCache front (baseline: boto3 presign + redis-py)",
            cold_rows(env) + warm_rows(env),
        )
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
