"""Connection slots through every way in: pools, SQLAlchemy engines and ``iamdb.aio`` wait for a
slot and say the same thing when none frees; their idle connections, closed by the server while
the environment was frozen, are replaced at checkout without a failed one; a role's or user's own
limit is a full server too; an older PostgreSQL that does not know ``idle_session_timeout`` costs
one retried login, said once. Against devstack's servers leaving ``SLOTS`` (20) connections to
the application (``slots_stack``), in this process (the environments as processes are
tests/integration/test_slots.py).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import iamdb
from bench.slots import SLOTS
from devstack.stack import PG_ENDPOINT, Stack
from tests.conftest import mariadb_available
from tests.integration.pg13 import Pg13

pytestmark = pytest.mark.integration


class Context:
    """A Lambda context: ``seconds`` of the invocation remain from its creation."""

    def __init__(self, seconds: float, request: str = "slots") -> None:
        self.ends = time.time() + seconds
        self.aws_request_id = request

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.ends - time.time()) * 1000))


@pytest.fixture
def slots_env(slots_stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """The slots stack's environment for this process's iamdb (no fleet limiter)."""
    import os

    for name in list(os.environ):
        if name.startswith("IAMDB_"):
            monkeypatch.delenv(name)
    for name, value in slots_stack.env.items():
        if name != "IAMDB_THROTTLE_TABLE":
            monkeypatch.setenv(name, value)
    iamdb.reset()
    try:
        yield slots_stack
    finally:
        iamdb.reset()
        for server in (slots_stack.pg, slots_stack.mysql):
            if server is not None:
                server.limit_user("iamdb_app", None)
                server.kill_connections("iamdb_app")


def hold(stack: Stack, engine: str, n: int) -> list[Any]:
    """``n`` connections of the application user, made with botocore's tokens (not iamdb)."""
    assert stack.tls is not None
    held: list[Any] = []
    for _ in range(n):
        if engine == "pg":
            import psycopg

            assert stack.pg is not None
            held.append(psycopg.connect(
                host="127.0.0.1", port=stack.pg.port, user="iamdb_app", dbname="app",
                password=stack.token("pg"), sslmode="verify-full",
                sslrootcert=str(stack.tls.ca), autocommit=True,
            ))  # fmt: skip
        else:
            import pymysql

            assert stack.mysql is not None
            held.append(pymysql.connect(
                host="127.0.0.1", port=stack.mysql.port, user="iamdb_app", database="app",
                password=stack.token("mysql"), connect_timeout=10,
                ssl=ssl.create_default_context(cafile=str(stack.tls.ca)),
            ))  # fmt: skip
    return held


def pool_checkout(engine: str) -> Callable[[], None]:
    pool = iamdb.pg_pool()

    def checkout() -> None:
        try:
            with pool.connection() as conn:
                conn.execute("SELECT 1")
        finally:
            pool.close()

    return checkout


def sqlalchemy_checkout(engine: str) -> Callable[[], None]:
    import sqlalchemy

    from iamdb.sqlalchemy import create_engine

    sa = create_engine(engine)  # type: ignore[arg-type]

    def checkout() -> None:
        try:
            with sa.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
        finally:
            sa.dispose()

    return checkout


def aio_checkout(engine: str) -> Callable[[], None]:
    from iamdb import aio

    async def use() -> None:
        conn = await aio.get_pg()
        await (await conn.execute("SELECT 1")).fetchone()

    return lambda: asyncio.run(use())


KINDS = {
    "pg_pool": ("pg", pool_checkout),
    "sqlalchemy pg": ("pg", sqlalchemy_checkout),
    "sqlalchemy mysql": ("mysql", sqlalchemy_checkout),
    "aio pg": ("pg", aio_checkout),
}


@pytest.fixture(params=list(KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    if "mysql" in request.param and not mariadb_available():
        pytest.skip("no MariaDB")
    return str(request.param)


def test_a_full_server_is_waited_out_then_told_the_same_way(slots_env: Stack, kind: str) -> None:
    engine, make = KINDS[kind]
    held = hold(slots_env, engine, SLOTS)
    try:
        iamdb.set_lambda_context(Context(5.0, "waits"))
        first = make(engine)  # imports and engines first: on a busy machine they take a second
        threading.Timer(1.0, held.pop().close).start()  # a slot frees after a second
        started = time.monotonic()
        first()
        assert time.monotonic() - started >= 1.0
        state = iamdb.info(engine)
        assert state.slot_waits == 1 and state.slot_wait_ms > 0, state
        held += hold(slots_env, engine, 1)  # full again
        iamdb.set_lambda_context(Context(2.0, "told"))
        checkout = make(engine)
        started = time.monotonic()
        with pytest.raises(iamdb.TooManyConnectionsError) as raised:
            checkout()
        assert time.monotonic() - started <= 2.0
        err = raised.value
        assert err.sqlstate == ("53300" if engine == "pg" else "08004")
        assert err.errno == (None if engine == "pg" else 1040)
        assert f"{engine}: no connection slot free" in str(err)
        assert err.__context__ is None and err.__cause__ is None
    finally:
        for conn in held:
            conn.close()


def test_idle_connections_the_server_closed_are_replaced_at_checkout(
    slots_env: Stack, kind: str
) -> None:
    """A function timeout of 2 s: the server closes sessions idle 4 s. The connection a pool,
    an engine or the event loop kept through a 5 s freeze is dead: the next checkout replaces
    it, and succeeds."""
    engine, _ = KINDS[kind]
    iamdb.set_lambda_context(Context(2.0, "first"))
    if kind == "aio pg":
        from iamdb import aio

        async def twice() -> tuple[Any, Any]:
            first = await aio.get_pg()
            await (await first.execute("SELECT 1")).fetchone()
            await asyncio.sleep(5.0)
            iamdb.set_lambda_context(Context(2.0, "second"))
            second = await aio.get_pg()
            await (await second.execute("SELECT 1")).fetchone()
            return first, second

        first, second = asyncio.run(twice())
        assert first is not second
    else:
        use = _reusable(kind, engine)
        try:
            use()
            time.sleep(5.0)
            iamdb.set_lambda_context(Context(2.0, "second"))
            use()
        finally:
            use.close()  # type: ignore[attr-defined]
    state = iamdb.info(engine)
    assert state.logins == 2 and state.slot_waits == 0
    assert _sessions(slots_env, engine) <= 1


def _reusable(kind: str, engine: str) -> Callable[[], None]:
    """One checkout and a query, again and again, on one pool or engine; ``.close()``."""
    if kind == "pg_pool":
        pool = iamdb.pg_pool()

        def use() -> None:
            with pool.connection() as conn:
                conn.execute("SELECT 1")

        use.close = pool.close  # type: ignore[attr-defined]
        return use
    import sqlalchemy

    from iamdb.sqlalchemy import create_engine

    sa = create_engine(engine)  # type: ignore[arg-type]

    def checkout() -> None:
        with sa.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))

    checkout.close = sa.dispose  # type: ignore[attr-defined]
    return checkout


def _sessions(stack: Stack, engine: str) -> int:
    server = stack.pg if engine == "pg" else stack.mysql
    assert server is not None
    return server.sessions("iamdb_app")


@pytest.mark.parametrize("engine", ["pg", "mysql"])
def test_a_users_own_connection_limit_is_a_full_server_too(slots_env: Stack, engine: str) -> None:
    if engine == "mysql" and slots_env.mysql is None:
        pytest.skip("no MariaDB")
    server = slots_env.pg if engine == "pg" else slots_env.mysql
    assert server is not None
    server.limit_user("iamdb_app", 1)
    held = hold(slots_env, engine, 1)
    try:
        iamdb.set_lambda_context(Context(1.5))
        getter = iamdb.get_pg if engine == "pg" else iamdb.get_mysql
        with pytest.raises(iamdb.TooManyConnectionsError) as raised:
            getter()
        err = raised.value
        if engine == "pg":
            assert err.sqlstate == "53300" and 'too many connections for role "iamdb_app"' in str(
                err
            )
        else:
            assert (err.sqlstate, err.errno) == ("42000", 1226)
            assert "max_user_connections" in str(err)
        assert err.attempts is not None and err.attempts > 1
    finally:
        for conn in held:
            conn.close()


def test_postgresql_13_costs_one_login_said_once(
    slots_env: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL < 14 refuses the unknown startup option after authenticating the login (libpq
    tries once more by itself: it takes SQLSTATE 42704 for a server that does not know
    application_name): iamdb logs in again at once without it, warns once, and never asks that
    instance again."""
    assert slots_env.pg is not None and slots_env.tls is not None
    tls = slots_env.tls
    with Pg13(slots_env.pg.port, tls.cert, tls.key, tls.ca) as pg13:
        monkeypatch.setenv("IAMDB_PG_PORT", str(pg13.port))
        monkeypatch.setenv("IAMDB_PG_IAM_HOST", f"{PG_ENDPOINT}:{slots_env.pg.port}")
        iamdb.set_lambda_context(Context(5.0, "first"))
        with caplog.at_level(logging.WARNING, logger="iamdb"):
            iamdb.get_pg().execute("SELECT 1")
            state = iamdb.info("pg")
            assert pg13.asked == [True, True, False]
            assert state.idle_limit_seconds is None and state.logins == 1
            slots_env.pg.kill_connections("iamdb_app")  # the next invocation logs in again
            iamdb.set_lambda_context(Context(5.0, "second"))
            iamdb.get_pg().execute("SELECT 1")
        assert pg13.asked == [True, True, False, False]
        said = [r.getMessage() for r in caplog.records if "idle_session_timeout" in r.getMessage()]
        assert len(said) == 1 and said[0].startswith("pg: the server does not take an idle limit")
