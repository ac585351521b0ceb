"""SQLAlchemy engines and psycopg_pool pools of iamdb logins against the recipes users write.

- First connect: a new ``iamdb.sqlalchemy.create_engine("pg")`` (fresh registry: a token to
  sign) up to the result of its first ``SELECT 1``, against SQLAlchemy's documented recipe (a
  ``do_connect`` handler setting ``cparams["password"]`` from boto3's
  ``generate_db_auth_token``, client already created, TLS verified alike).
- Warm checkout: ``engine.connect()`` + ``SELECT 1`` on a pooled connection, against a plain
  engine of the same pool; with iamdb's defaults the pre-ping round trip is part of it.
- The same two for ``iamdb.pg_pool()`` against a plain ``psycopg_pool.ConnectionPool`` whose
  callable ``kwargs`` (psycopg_pool >= 3.3) hands psycopg a boto3 token.

The fleet limiter is off (like for like: the recipes have none). Run: ``python -m
bench.sqlalchemy`` (starts and stops its own devstack).
"""

from __future__ import annotations

import functools
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.table import Row, median_us, print_table

FIRSTS = 30  # first connects of each kind, interleaved so drift hits all alike
WARM = 3000  # warm checkouts of each kind, in ROUNDS interleaved rounds
ROUNDS = 10


def rows(env: dict[str, str]) -> list[Row]:
    import boto3
    import psycopg_pool
    import sqlalchemy as sa

    import iamdb
    import iamdb._registry
    from iamdb._core.runtime import Runtime
    from iamdb._registry import Registry
    from iamdb.sqlalchemy import create_engine

    plain = {k: v for k, v in env.items() if k != "IAMDB_THROTTLE_TABLE"}
    rds = boto3.client(
        "rds",
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=env["AWS_SESSION_TOKEN"],
    )
    host, port, user = env["IAMDB_PG_HOST"], int(env["IAMDB_PG_PORT"]), env["IAMDB_PG_USER"]
    tls = {"sslmode": "verify-full", "sslrootcert": env["IAMDB_PG_SSLROOTCERT"]}

    def token() -> str:
        value: str = rds.generate_db_auth_token(env["IAMDB_PG_IAM_HOST"], port, user)
        return value

    def recipe_engine(**kwargs: Any) -> sa.Engine:
        url = f"postgresql+psycopg://{user}@{host}:{port}/{env['IAMDB_PG_DBNAME']}"
        engine = sa.create_engine(url, connect_args=tls, **kwargs)

        @sa.event.listens_for(engine, "do_connect")
        def provide_token(dialect: Any, record: Any, cargs: Any, cparams: Any) -> None:
            cparams["password"] = token()

        return engine

    def recipe_pool(**kwargs: Any) -> psycopg_pool.ConnectionPool[Any]:
        def connect_kwargs() -> dict[str, Any]:
            return {"host": host, "port": port, "user": user, "password": token(),
                    "dbname": env["IAMDB_PG_DBNAME"], **tls}  # fmt: skip

        return psycopg_pool.ConnectionPool(
            kwargs=connect_kwargs, min_size=0, max_size=1, open=True, **kwargs
        )

    process_registry = iamdb._registry.default  # given back at the end: later benches use it

    def fresh_registry() -> None:  # a cold environment: nothing signed, nothing accepted
        iamdb._registry.default.reset()
        iamdb._registry.default = Registry(runtime=Runtime(environ=plain))

    def first(make: Callable[[], Any], use: Callable[[Any], Any], close: str) -> float:
        """Milliseconds from nothing to the first result, in a cold registry."""
        fresh_registry()
        started = time.perf_counter()
        target = make()
        use(target)
        elapsed = time.perf_counter() - started
        getattr(target, close)()
        return elapsed * 1000

    def engine_select(engine: sa.Engine) -> None:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1")).one()

    def pool_select(pool: psycopg_pool.ConnectionPool[Any]) -> None:
        with pool.connection() as conn:
            conn.execute("SELECT 1").fetchone()

    firsts: dict[str, list[float]] = {k: [] for k in ("sa", "sa_recipe", "pool", "pool_recipe")}
    for _ in range(FIRSTS):
        firsts["sa"].append(first(lambda: create_engine("pg"), engine_select, "dispose"))
        firsts["sa_recipe"].append(first(recipe_engine, engine_select, "dispose"))
        firsts["pool"].append(first(iamdb.pg_pool, pool_select, "close"))
        firsts["pool_recipe"].append(first(recipe_pool, pool_select, "close"))
    first_ms = {k: statistics.median(v) for k, v in firsts.items()}

    fresh_registry()
    targets = {
        "sa": (create_engine("pg", pool_pre_ping=False), engine_select),
        "sa_ping": (create_engine("pg"), engine_select),
        "sa_plain": (recipe_engine(pool_size=1), engine_select),
        "pool": (iamdb.pg_pool(check=None), pool_select),
        "pool_check": (iamdb.pg_pool(), pool_select),
        "pool_plain": (recipe_pool(), pool_select),
    }
    samples: dict[str, list[float]] = {k: [] for k in targets}
    for target, use in targets.values():
        use(target)  # the connection is in the pool from here on
    for _ in range(ROUNDS):  # interleaved: the machine's drift hits every kind alike
        for key, (target, use) in targets.items():
            samples[key].append(median_us(functools.partial(use, target), WARM // ROUNDS))
    warm = {k: statistics.median(v) for k, v in samples.items()}
    for target, _ in targets.values():
        (target.dispose if isinstance(target, sa.Engine) else target.close)()
    iamdb._registry.default.reset()
    iamdb._registry.default = process_registry
    return [
        Row("first connect: create_engine vs do_connect + boto3 token (ms)",
            first_ms["sa_recipe"], first_ms["sa"], "info: iamdb signs, recipe has boto3"),
        Row("warm checkout + SELECT 1: iamdb engine vs plain engine, no pre-ping",
            warm["sa_plain"], warm["sa"], "~1: iamdb adds nothing at checkout"),
        Row("warm checkout + SELECT 1: iamdb's defaults (pre-ping) vs plain engine",
            warm["sa_plain"], warm["sa_ping"], "info: one round trip per checkout"),
        Row("first connect: pg_pool() vs psycopg_pool kwargs + boto3 token (ms)",
            first_ms["pool_recipe"], first_ms["pool"], "info"),
        Row("warm connection() + SELECT 1: pg_pool vs plain pool, no check",
            warm["pool_plain"], warm["pool"], "~1"),
        Row("warm connection() + SELECT 1: pg_pool's defaults (check) vs plain pool",
            warm["pool_plain"], warm["pool_check"], "info: one round trip per checkout"),
    ]  # fmt: skip


def main() -> None:
    from devstack.stack import Stack

    stack = Stack(mysql=False)
    stack.start()
    try:
        print_table(
            "SQLAlchemy and psycopg_pool through devstack (times in us unless ms, median)",
            rows(dict(stack.env)),
        )
    finally:
        stack.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
