"""Warm get_pg() and first-login benchmarks against devstack's PostgreSQL.

- Warm ``get_pg()`` on a healthy, recently used connection, against the
  connect-per-invocation pattern (sign with botocore, ``psycopg.connect``, query, close).
- First login: iamdb's first ``get_pg()`` in a fresh registry, against a hand-written
  ``psycopg.connect`` with a botocore token (client already created); iamdb's own
  overhead should stay within 5 %.

Run: ``python -m bench.sql`` (starts and stops its own devstack).
"""

from __future__ import annotations

import os
from typing import Any

from bench.table import Row, interleaved, median_us, print_table


def rows(env: dict[str, str]) -> list[Row]:
    import boto3
    import psycopg

    import iamdb
    from iamdb._core.runtime import Runtime
    from iamdb._registry import Registry

    rds = boto3.client(
        "rds",
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=env["AWS_SESSION_TOKEN"],
    )
    host, port = env["IAMDB_PG_HOST"], int(env["IAMDB_PG_PORT"])

    def hand_written() -> Any:
        token = rds.generate_db_auth_token(env["IAMDB_PG_IAM_HOST"], port, env["IAMDB_PG_USER"])
        return psycopg.connect(
            host=host,
            port=port,
            user=env["IAMDB_PG_USER"],
            password=token,
            dbname=env["IAMDB_PG_DBNAME"],
            sslmode="verify-full",
            sslrootcert=env["IAMDB_PG_SSLROOTCERT"],
            connect_timeout=5,
            autocommit=True,
        )

    def connect_per_invocation() -> None:
        with hand_written() as conn:
            conn.execute("SELECT 1").fetchone()

    os.environ.update(env)
    iamdb.get_pg().execute("SELECT 1")
    warm_iamdb = median_us(iamdb.get_pg, 20000)  # the public path a handler calls
    warm_base = median_us(connect_per_invocation, 40)
    iamdb.reset()

    # Issue 2's comparison is like for like: no fleet limiter (one DynamoDB call per new login).
    plain = {k: v for k, v in env.items() if k != "IAMDB_THROTTLE_TABLE"}
    fleet_registry = Registry(
        runtime=Runtime(environ=env)
    )  # one per process, as in Lambda: client reused

    def first_login_iamdb() -> None:
        r = Registry(runtime=Runtime(environ=plain))
        r.get_pg()
        r.reset()

    def first_login_fleet() -> None:
        fleet_registry.managed("pg").get()
        fleet_registry.managed("pg").close()
        fleet_registry.tokens.clear()  # a new token each time, so the limiter is asked

    def first_login_base() -> None:
        hand_written().close()

    # Each comparison has its own rounds: a fleet login slows the login measured after it in
    # this one process by 3-5 ms (moto and PostgreSQL share the 2 cores), which a three-way
    # interleave charged to iamdb's plain first login.
    first_i, first_b = interleaved(first_login_iamdb, first_login_base, 40)
    first_login_fleet()  # the DynamoDB client is created once per process, at the first login
    first_f, first_fb = interleaved(first_login_fleet, first_login_base, 40)
    fleet_registry.reset()
    return [
        Row("warm get_pg() vs connect per invocation", warm_base, warm_iamdb, "<= 5 us median"),
        Row("first login (sign + TLS + verify)", first_b, first_i, "overhead <= 5%"),
        Row(
            "new login with the fleet limiter (+1 DynamoDB UpdateItem)",
            first_fb,
            first_f,
            "info: cost of IAMDB_THROTTLE_TABLE",
        ),
    ]


def main() -> None:
    from devstack.stack import Stack

    stack = Stack(mysql=False)
    stack.start()
    try:
        print_table("PostgreSQL through devstack (times in us, median)", rows(dict(stack.env)))
    finally:
        stack.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
