"""Production topologies: a role to assume and a writer that moves, on devstack's data account.

- Cold ``get_pg()`` with a role to assume against without: each a fresh interpreter (imports
  included) to the first row of ``SELECT 1``, interleaved, median of :data:`RUNS`; and the
  same first login in a fresh registry of this process (modules loaded: the cold runs' import
  time varies by more than the role costs on a shared machine). Both go through a TCP
  forwarder to a server of their own account (the default instance through one the bench
  starts, ``reader`` through the data cluster's reader endpoint, whose logins need the data
  account's role), so the role's cost is the difference. Beside it, one bare ``AssumeRole``
  round trip to the same STS on a kept-alive connection: the goal is that the role costs at
  most that plus 5 ms.
- The writer check: a new login to the writer endpoint (``aurora``) with the check
  (``WRITER=true``, its default for a cluster endpoint) against the same login without it,
  beside one bare ``SHOW transaction_read_only`` round trip; and warm ``get_pg()`` with and
  without it (the check runs at login only).
- Failover recovery: the cluster fails over and its endpoint follows :data:`DNS_DELAY` seconds
  later; from the switch to the first committed ``INSERT``, iamdb (invocations back to back,
  each with a 10 s deadline) against a plain psycopg reconnect loop (botocore token signed with
  the same assumed role, a 0.1 s pause after each failure, iamdb's first backoff step), and
  how many invocations failed on the way.

Run: ``python -m bench.topology`` (starts and stops its own devstack).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.table import Row, interleaved, median_us, print_grid, print_table

RUNS = 25
TRIALS = 5
DNS_DELAY = 2.0  # seconds the writer endpoint still leads to the old writer
DEADLINE_MS = 10_000
PAUSE = 0.1  # the baseline's pause after a failure

_COLD = """import time
_t0 = time.perf_counter()
import json, sys
import iamdb
iamdb.get_pg(sys.argv[1] or None).execute("SELECT 1").fetchone()
print(json.dumps({"ms": (time.perf_counter() - _t0) * 1000}))
"""


def _child_ms(env: dict[str, str], name: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _COLD, name],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["ms"])


def _assume_role_ms(env: dict[str, str], repeat: int = 30) -> float:
    """One AssumeRole round trip on a kept-alive connection (botocore, after a first call)."""
    import boto3

    sts = boto3.client(
        "sts",
        region_name=env["AWS_REGION"],
        endpoint_url=env.get("AWS_ENDPOINT_URL_STS") or env.get("AWS_ENDPOINT_URL"),
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=env["AWS_SESSION_TOKEN"],
    )

    def call() -> None:
        sts.assume_role(RoleArn=env["IAMDB_PG_READER_ROLE_ARN"], RoleSessionName="bench")

    call()
    return median_us(call, repeat) / 1000


def cold_rows(env: dict[str, str], pg_port: int) -> list[Row]:
    from devstack.cluster import READER_ADDRESS
    from devstack.forwarder import Forwarder

    forwarder = Forwarder(READER_ADDRESS, pg_port, pg_port)  # the same hop the reader takes
    forwarder.start()
    try:
        plain = {**env, "IAMDB_PG_HOST": READER_ADDRESS}
        plain.pop("IAMDB_THROTTLE_TABLE", None)  # like for like: no fleet limiter on either
        without, with_role = [], []
        for _ in range(RUNS):
            without.append(_child_ms(plain, ""))
            with_role.append(_child_ms(plain, "reader"))
        first = _first_logins(plain)
    finally:
        forwarder.stop()
    base, role = statistics.median(without), statistics.median(with_role)
    sts = _assume_role_ms(env)
    return [
        Row("cold get_pg(): without a role vs with one (ms)", base, role, "info"),
        Row("first get_pg() of a process, modules loaded (ms)", first[0], first[1], "info"),
        Row(
            "  the role's cost vs one bare AssumeRole (ms)",
            sts,
            first[1] - first[0],
            f"<= {sts:.1f} + 5 ms",
        ),
    ]


def _first_logins(env: dict[str, str]) -> tuple[float, float]:
    """The first ``get_pg()`` of a fresh registry (a process's first login, its modules already
    imported: what the role adds without the import noise), without a role and with one (a new
    connection to STS, AssumeRole, then the login)."""
    from iamdb._core.runtime import Runtime
    from iamdb._registry import Registry

    def first(name: str | None) -> Callable[[], None]:
        def login() -> None:
            registry = Registry(runtime=Runtime(environ=env))
            registry.get_pg(name)
            registry.reset()

        return login

    first(None)()
    first("reader")()
    without, with_role = interleaved(first(None), first("reader"), 30)
    return without / 1000, with_role / 1000


def writer_rows(env: dict[str, str]) -> list[Row]:
    from iamdb._core.runtime import Runtime
    from iamdb._registry import Registry

    checked = Registry(runtime=Runtime(environ=env))
    unchecked = Registry(runtime=Runtime(environ={**env, "IAMDB_PG_AURORA_WRITER": "false"}))
    conn = checked.get_pg("aurora")
    unchecked.get_pg("aurora")
    managed = checked.managed("pg", "aurora")
    clock = managed.runtime.clock

    def check() -> None:  # the login's writer step, as the login runs it
        assert managed.login.driver.read_only(conn, (clock, clock() + 5)) is None

    def new_login() -> None:
        unchecked.managed("pg", "aurora").close()
        unchecked.get_pg("aurora")  # the token is reused: no throttled login, no AssumeRole

    show, ours = interleaved(
        lambda: conn.execute("SHOW transaction_read_only").fetchone(), check, 400
    )
    login = median_us(new_login, 30)
    unchecked.get_pg("aurora")
    warm_checked, warm_unchecked = interleaved(
        lambda: checked.get_pg("aurora"), lambda: unchecked.get_pg("aurora"), 20000
    )
    checked.reset()
    unchecked.reset()
    return [
        Row("the check at login vs a bare SHOW round trip (us)", show, ours, "one round trip"),
        Row("the check vs a whole new login without it (us)", login, ours, "info: its share"),
        Row("warm get_pg(): without the check vs with it (us)", warm_unchecked, warm_checked, "+0"),
    ]


class _Context:
    """A Lambda context whose remaining time counts down on the wall clock."""

    def __init__(self, ms: int) -> None:
        self._end = time.monotonic() + ms / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._end - time.monotonic()) * 1000))


def _recover(cluster: Any, write: Callable[[], None]) -> tuple[float, int]:
    """Fail the cluster over; seconds from the switch to ``write`` first succeeding, and how
    many calls of it failed before."""
    write()  # warm: connected to the writer before it moves
    cluster.fail_over(DNS_DELAY)
    failed = 0
    while True:
        try:
            write()
        except Exception:  # any failure is a failed invocation
            failed += 1
            if failed > 1000:
                raise
            continue
        done = time.time()
        break
    cluster.wait_followed()
    seconds = done - cluster.at("failover")
    cluster.reset()
    return seconds, failed


def failover_rows(env: dict[str, str], cluster: Any) -> tuple[list[Row], list[list[str]]]:
    import boto3
    import psycopg

    import iamdb

    for instance in cluster.instances:
        _admin(instance, "CREATE TABLE IF NOT EXISTS bench_hits (at float8)")
        _admin(instance, "GRANT ALL ON bench_hits TO iamdb_app")
    os.environ.update(env)

    def iamdb_invocation() -> None:
        iamdb.set_lambda_context(_Context(DEADLINE_MS))
        iamdb.get_pg("aurora").execute("INSERT INTO bench_hits VALUES (%s)", (time.time(),))

    sts = boto3.client("sts", region_name=env["AWS_REGION"])
    creds = sts.assume_role(RoleArn=env["IAMDB_PG_AURORA_ROLE_ARN"], RoleSessionName="bench")
    rds = boto3.client(
        "rds",
        region_name=env["AWS_REGION"],
        aws_access_key_id=creds["Credentials"]["AccessKeyId"],
        aws_secret_access_key=creds["Credentials"]["SecretAccessKey"],
        aws_session_token=creds["Credentials"]["SessionToken"],
    )
    p = "IAMDB_PG_AURORA_"
    port = int(env[p + "PORT"])
    held: list[Any] = []

    def baseline_invocation() -> None:
        try:
            if not held:
                token = rds.generate_db_auth_token(env[p + "IAM_HOST"], port, env[p + "USER"])
                held.append(
                    psycopg.connect(
                        host=env[p + "HOST"],
                        port=port,
                        user=env[p + "USER"],
                        password=token,
                        dbname=env[p + "DBNAME"],
                        sslmode="verify-full",
                        sslrootcert=env[p + "SSLROOTCERT"],
                        connect_timeout=5,
                        autocommit=True,
                    )
                )
            held[0].execute("INSERT INTO bench_hits VALUES (%s)", (time.time(),))
        except psycopg.Error:
            if held:
                held.pop().close()
            time.sleep(PAUSE)
            raise

    ours, theirs, failed_ours, failed_theirs = [], [], [], []
    for _ in range(TRIALS):
        seconds, failed = _recover(cluster, baseline_invocation)
        theirs.append(seconds * 1000)
        failed_theirs.append(failed)
        for conn in held:
            conn.close()
        held.clear()
        seconds, failed = _recover(cluster, iamdb_invocation)
        ours.append(seconds * 1000)
        failed_ours.append(failed)
        iamdb.reset()
    login_ms = _one_login_ms(env)
    rows = [
        Row(
            f"failover, DNS {DNS_DELAY:.0f} s: switch to first write (ms, median of {TRIALS})",
            statistics.median(theirs),
            statistics.median(ours),
            f"<= {DNS_DELAY * 1000 + login_ms:,.0f} (DNS delay + one login)",
        )
    ]
    grid = [
        [
            "psycopg reconnect loop",
            _spread(theirs),
            str(sum(failed_theirs)),
        ],
        ["iamdb", _spread(ours), str(sum(failed_ours))],
    ]
    return rows, grid


def _one_login_ms(env: dict[str, str]) -> float:
    from iamdb._core.runtime import Runtime
    from iamdb._registry import Registry

    registry = Registry(runtime=Runtime(environ=env))
    registry.get_pg("aurora")

    def login() -> None:
        registry.managed("pg", "aurora").close()
        registry.get_pg("aurora")

    ms = median_us(login, 20) / 1000
    registry.reset()
    return ms


def _spread(values: list[float]) -> str:
    return f"{min(values):,.0f} / {statistics.median(values):,.0f} / {max(values):,.0f}"


def _admin(instance: Any, statement: str) -> None:
    import psycopg

    with psycopg.connect(
        host=str(instance.db.workdir),
        port=instance.db.port,
        user="postgres",
        dbname="app",
        autocommit=True,
        options="-c default_transaction_read_only=off",
    ) as conn:
        conn.execute(statement)


def main() -> None:
    from devstack.stack import Stack

    stack = Stack(mysql=False, mongo=False)
    stack.start()
    try:
        env = dict(stack.env)
        assert stack.pg is not None and stack.aurora_pg is not None
        print_table(
            "A role to assume: cold get_pg() (fresh process, median)",
            cold_rows(env, stack.pg.port),
        )
        print_table("The writer check at login (PostgreSQL, median)", writer_rows(env))
        rows, grid = failover_rows(env, stack.aurora_pg)
        print_table("Failover recovery (PostgreSQL)", rows)
        print_grid(
            f"Failover recovery, {TRIALS} failovers each",
            ["client", "switch to first write, ms (min / median / max)", "failed invocations"],
            grid,
        )
    finally:
        stack.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
