"""No secret in SQLAlchemy's or psycopg_pool's logs, reprs or errors, with DEBUG logging on.

SQLAlchemy engines (``echo="debug"``, ``echo_pool="debug"``: every statement, checkout,
pre-ping, invalidation and reconnect logged) and psycopg_pool pools run their happy paths, a
reconnect after the server killed their connections, and a refused login, against devstack's
real servers. The secrets are collected as iamdb makes them and searched for everywhere, as in
test_secret_hygiene.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import sqlalchemy as sa

import iamdb
from devstack.stack import Stack
from iamdb.sqlalchemy import create_async_engine, create_engine
from tests.integration.leaks import Secrets, see_logs
from tests.integration.test_sqlalchemy import ENGINES, kill_all

pytestmark = pytest.mark.integration


def refused_instance(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``pg:refused``: devstack's PostgreSQL, as a user the server refuses; no retries."""
    for var in ("HOST", "PORT", "IAM_HOST", "SSLROOTCERT", "DBNAME"):
        monkeypatch.setenv(f"IAMDB_PG_REFUSED_{var}", env[f"IAMDB_PG_{var}"])
    monkeypatch.setenv("IAMDB_PG_REFUSED_USER", "nobody")
    monkeypatch.setenv("IAMDB_AUTH_RETRIES", "0")


def test_engines_and_pools_leak_nothing(
    secrets: Secrets,
    caplog: Any,
    stack: Stack,
    stack_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("sqlalchemy", "psycopg_pool"):
        caplog.set_level(logging.DEBUG, logger=name)
    refused_instance(stack_env, monkeypatch)

    for kind in ENGINES:
        engine = create_engine(kind, echo="debug", echo_pool="debug")  # type: ignore[arg-type]
        with engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT 1")) == 1
        kill_all(stack, kind)
        with engine.connect() as conn:  # pre-ping fails, the pool reconnects
            assert conn.scalar(sa.text("SELECT 1")) == 1
        secrets.see(f"{kind} engine", engine)
        secrets.see(f"{kind} url", engine.url.render_as_string(hide_password=False))
        secrets.see(f"{kind} pool", engine.pool)
        secrets.see(f"{kind} pool status", engine.pool.status())
        engine.dispose()
    refused = create_engine("pg", "refused", echo_pool="debug")
    with pytest.raises(iamdb.AuthError) as info:
        refused.connect()
    secrets.see_exception("sqlalchemy refused login", info.value)

    async def use_async_engine() -> None:
        engine = create_async_engine("pg", echo="debug", echo_pool="debug")
        async with engine.connect() as conn:
            assert await conn.scalar(sa.text("SELECT 1")) == 1
        secrets.see("async engine", engine)
        await engine.dispose()

    asyncio.run(use_async_engine())

    with iamdb.pg_pool() as pool:
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            secrets.see("pooled connection", conn)
        secrets.see("pool", pool)
        secrets.see("pool stats", pool.get_stats())
    with iamdb.pg_pool("refused", timeout=2) as pool, pytest.raises(iamdb.ConnectError) as timed:
        pool.getconn()
    secrets.see_exception("pool checkout that timed out", timed.value)
    # psycopg_pool keeps retrying and tells why in a warning: iamdb's message
    assert any(
        r.name == "psycopg.pool"
        and "error connecting in 'iamdb-pg:refused'" in r.getMessage()
        and "refused the IAM login of user 'nobody'" in r.getMessage()
        for r in caplog.records
    )

    see_logs(secrets, caplog)
    assert len(set(secrets.tokens)) >= 3  # pg, mysql, pg:refused
    assert secrets.leaks() == []
