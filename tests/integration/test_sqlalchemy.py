"""iamdb.sqlalchemy against devstack's real PostgreSQL and MariaDB, which verify every token.

Engines are made with ``create_engine``, ``create_async_engine`` and ``attach`` and used as
applications use them. Where a test moves time, reads metrics or watches sleeps, iamdb's
default registry is one of the test's own (``own_registry``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine as sa_create_async_engine

import iamdb
from devstack.stack import Stack
from iamdb._core.telemetry import quiet_probe
from iamdb._info import describe
from iamdb.sqlalchemy import attach, create_async_engine, create_engine
from tests.fakes import RecordingTelemetry
from tests.integration.test_fleet_limiter import table_item
from tests.integration.test_snapstart import FAKE_RUNTIME
from tests.registries import Install, own_registry_fixture  # noqa: F401  (own_registry)

pytestmark = pytest.mark.integration

ENGINES = ["pg", "mysql"]
BACKEND = {"pg": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}
USER = {"pg": "SELECT current_user", "mysql": "SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1)"}
TLS = {
    "pg": "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    "mysql": "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS "
    "WHERE VARIABLE_NAME = 'Ssl_version'",
}


def accepted(stack: Stack, engine: str) -> int:
    server = stack.pg_server if engine == "pg" else stack.mysql_server
    return sum(1 for e in stack.verifier.events if e.server == server and e.ok)


def backends(engine: sa.Engine, kind: str, n: int) -> list[int]:
    """The server's ids of ``n`` connections held at once (so ``n`` physical ones)."""
    with contextlib.ExitStack() as held:
        conns = [held.enter_context(engine.connect()) for _ in range(n)]
        return [int(conn.scalar(sa.text(BACKEND[kind]))) for conn in conns]


def kill_all(stack: Stack, kind: str) -> None:
    """Kill every iamdb_app connection server-side, and wait until the server has no more."""
    server: Any = stack.pg if kind == "pg" else stack.mysql
    assert server.kill_connections("iamdb_app") >= 1
    if kind == "mysql":  # KILL returns before the connection is gone
        for _ in range(100):
            with server.admin() as conn, conn.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s",
                            ("iamdb_app",))  # fmt: skip
                if cur.fetchone()[0] == 0:
                    return
            time.sleep(0.05)


def table(kind: str, conn: sa.Connection) -> str:
    name = f"sa_{uuid.uuid4().hex[:10]}"
    conn.execute(sa.text(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, v INTEGER)"))
    conn.commit()
    return name


@pytest.mark.parametrize("kind", ENGINES)
def test_the_url_holds_no_password_and_logins_are_verified_over_tls(
    stack: Stack, stack_env: Any, kind: str
) -> None:
    engine = create_engine(kind)  # type: ignore[arg-type]
    assert engine.url.password is None and "iamdb_app@127.0.0.1" in str(engine.url)
    before = accepted(stack, kind)
    with engine.connect() as conn:
        assert conn.scalar(sa.text(USER[kind])) == "iamdb_app"
        assert str(conn.scalar(sa.text(TLS[kind]))).startswith("TLSv1.")
    assert accepted(stack, kind) == before + 1
    engine.dispose()


@pytest.mark.parametrize("kind", ENGINES)
def test_transactions_roll_back_as_sqlalchemy_expects(stack_env: Any, kind: str) -> None:
    """iamdb's singletons run in autocommit; an engine's connections must not."""
    engine = create_engine(kind)  # type: ignore[arg-type]
    with engine.connect() as conn:
        name = table(kind, conn)
        conn.execute(sa.text(f"INSERT INTO {name} VALUES (1, 1)"))
        conn.rollback()
        assert conn.scalar(sa.text(f"SELECT COUNT(*) FROM {name}")) == 0
        conn.execute(sa.text(f"DROP TABLE {name}"))
        conn.commit()
    engine.dispose()


def test_mysql_rowcount_counts_matched_rows_as_the_orm_relies_on(stack_env: Any) -> None:
    """SQLAlchemy's MySQL dialects connect with CLIENT.FOUND_ROWS: an UPDATE that matches a
    row without changing it reports 1, else the ORM would see stale data."""
    engine = create_engine("mysql")
    with engine.connect() as conn:
        name = table("mysql", conn)
        conn.execute(sa.text(f"INSERT INTO {name} VALUES (1, 5)"))
        assert conn.execute(sa.text(f"UPDATE {name} SET v = 5 WHERE id = 1")).rowcount == 1
        conn.execute(sa.text(f"DROP TABLE {name}"))
        conn.commit()
    engine.dispose()


@pytest.mark.parametrize("kind", ENGINES)
def test_connections_opened_concurrently_share_one_token(
    stack: Stack, stack_env: Any, kind: str
) -> None:
    engine = create_engine(kind, pool_size=4)  # type: ignore[arg-type]
    barrier = threading.Barrier(4, timeout=30)
    ids: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with engine.connect() as conn:
                ids.append(int(conn.scalar(sa.text(BACKEND[kind]))))
                barrier.wait()  # all four are checked out at once
        except BaseException as exc:
            errors.append(exc)

    before = accepted(stack, kind)
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(set(ids)) == 4
    assert accepted(stack, kind) == before + 4
    assert iamdb.info(kind).tokens_signed == 1
    engine.dispose()


@pytest.mark.parametrize("kind", ENGINES)
def test_new_connections_past_the_refresh_age_get_a_fresh_token(
    stack: Stack, stack_env: Any, own_registry: Install, kind: str
) -> None:
    """The field's bug: a pool closing over its first token. The engine outlives the token's
    refresh age (840 s, on the registry's clock) and its next new connection is signed anew."""
    offset = [-845.0]  # the first token is signed 845 s "ago": still valid for the verifier
    # A clock this far behind would also be behind the fleet's queue: no fleet limiter here.
    registry = own_registry(
        stack_env, clock=lambda: time.time() + offset[0], IAMDB_THROTTLE_TABLE=None
    )
    engine = create_engine(kind, pool_size=2)  # type: ignore[arg-type]
    login = registry.login(kind)  # type: ignore[arg-type]
    with engine.connect() as first:
        old = login.accepted
        offset[0] = 0.0  # 845 s later
        before = accepted(stack, kind)
        with engine.connect() as second:  # a new physical connection, the first still out
            assert first.scalar(sa.text(BACKEND[kind])) != second.scalar(sa.text(BACKEND[kind]))
        assert accepted(stack, kind) == before + 1
    new = login.accepted
    assert old is not None and new is not None and new is not old
    assert old.age(time.time()) > 840 > 60 > new.age(time.time())
    assert describe(registry, kind, None).tokens_signed == 2
    engine.dispose()


@pytest.mark.parametrize("kind", ENGINES)
def test_backends_killed_server_side_are_replaced_at_checkout(
    stack: Stack, stack_env: Any, kind: str
) -> None:
    """iamdb's check at checkout (a readable socket while idle, confirmed by a ping ended by
    the deadline) replaces them; SQLAlchemy's pre-ping (unbounded, every checkout) is off."""
    engine = create_engine(kind, pool_size=3)  # type: ignore[arg-type]
    assert not engine.pool._pre_ping  # type: ignore[attr-defined]
    before = backends(engine, kind, 3)
    kill_all(stack, kind)
    after = backends(engine, kind, 3)  # every pooled connection is dead: all replaced
    assert len(set(after)) == 3 and not set(after) & set(before)
    engine.dispose()


def test_the_fleet_limiter_is_asked_for_a_new_token_only(
    stack_env: Any, own_registry: Install
) -> None:
    telemetry = RecordingTelemetry()
    registry = own_registry(stack_env, telemetry=telemetry)
    queue = registry.config("pg").target.key
    engine = create_engine("pg", pool_size=2)
    initial = table_item(queue)
    with engine.connect():  # a token the server has not seen: a permit, a fleet ticket
        after_first = table_item(queue)
        with engine.connect():  # a second connection with the accepted token: no permit
            pass
    assert after_first is not None and after_first != initial  # the first login's ticket
    totals = telemetry.totals("pg")
    assert totals["ConnectionsOpened"] == 2 and totals["TokensSigned"] == 1
    waits = [p for _, values in telemetry.emitted for p in values.get("ThrottleWaitMs", [])]
    # One permit, so one fleet ticket: the second connection asked the limiters nothing. (The
    # queue item itself may still change after the first login: its idle mark is sent without
    # waiting for the answer.)
    assert len(waits) == 1 and "LimiterFailOpen" not in totals
    engine.dispose()


@pytest.mark.parametrize(
    ("kind", "url"),
    [
        ("pg", "postgresql+psycopg://"),
        ("pg", "postgresql+psycopg://iamdb_app@127.0.0.1:{port}/app"),
        ("mysql", "mysql+pymysql://"),
        ("mysql", "mariadb+pymysql://iamdb_app@127.0.0.1:{port}/app?charset=utf8mb4"),
    ],
)
def test_attach_to_an_engine_the_application_built(
    stack: Stack, stack_env: Any, kind: str, url: str
) -> None:
    port = stack_env[f"IAMDB_{kind.upper()}_PORT"]
    built = sa.create_engine(url.format(port=port), pool_pre_ping=True)
    assert attach(built, kind) is built  # type: ignore[arg-type]
    before = accepted(stack, kind)
    with built.connect() as conn:
        assert conn.scalar(sa.text(USER[kind])) == "iamdb_app"
    assert accepted(stack, kind) == before + 1
    built.dispose()


def test_attach_refuses_what_iamdb_would_not_honour_before_any_login(
    stack: Stack, stack_env: Any
) -> None:
    before = len(stack.verifier.events)
    cases = [
        ("postgresql+psycopg://iamdb_app:hunter2hunter2@127.0.0.1/app", "engine"),
        ("postgresql+psycopg://someone@127.0.0.1/app", "IAMDB_PG_USER"),
        ("postgresql+psycopg://iamdb_app@db.example.com/app", "IAMDB_PG_HOST"),
        ("postgresql+psycopg:///?sslmode=disable", "engine"),
        ("mysql+pymysql://", "engine"),  # not the psycopg dialect
    ]
    for url, variable in cases:
        with pytest.raises(iamdb.ConfigError) as info:
            attach(sa.create_engine(url), "pg")
        assert info.value.variable == variable and "hunter2" not in str(info.value), url
    # connect_args are the engine's own: refused at its first connection, before the login
    built = attach(sa.create_engine("postgresql+psycopg://", connect_args={"sslmode": "allow"}),
                   "pg")  # fmt: skip
    with pytest.raises(iamdb.ConfigError, match="sslmode"):
        built.connect()
    assert len(stack.verifier.events) == before


def test_async_engines_log_in_without_blocking_the_event_loop(
    stack: Stack, stack_env: Any, own_registry: Install
) -> None:
    """Permits are waited for in a worker thread: every sleep of the limiter happens off the
    loop's thread. The bucket's banked permit is taken first, so the first login must wait."""
    sleeps: list[int] = []

    def sleep(seconds: float) -> None:
        sleeps.append(threading.get_ident())
        time.sleep(seconds)

    registry = own_registry(
        stack_env, sleep=sleep, IAMDB_THROTTLE_TABLE=None, IAMDB_CONNECT_RATE="5"
    )
    probe = quiet_probe("pg", None)
    registry.limits.permit(registry.config("pg").target.key, time.time() + 5, probe)
    before = accepted(stack, "pg")

    async def main() -> tuple[int, list[int], list[int]]:
        ours = create_async_engine("pg", pool_size=3)
        built = attach(sa_create_async_engine("postgresql+psycopg://"), "pg")
        try:
            return threading.get_ident(), await held(ours, 3), await held(built, 2)
        finally:
            await ours.dispose()
            await built.dispose()

    loop_thread, ids, built_ids = asyncio.run(main())
    assert len(set(ids)) == 3 and len(set(built_ids)) == 2
    assert accepted(stack, "pg") == before + 5
    assert sleeps and loop_thread not in sleeps


async def held(engine: Any, n: int) -> list[int]:
    """The server's ids of ``n`` connections checked out concurrently and held together."""
    ids: list[int] = []
    all_in = asyncio.Event()

    async def one() -> None:
        async with engine.connect() as conn:
            ids.append(int(await conn.scalar(sa.text(BACKEND["pg"]))))
            if len(ids) == n:
                all_in.set()
            await all_in.wait()

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(n))), 60)
    return ids


SNAPSTART_CHILD = """
import json
import snapshot_restore_py
import sqlalchemy as sa
from iamdb.sqlalchemy import create_engine

engine = create_engine("pg")
with engine.connect() as conn:  # init used the engine: its connection is in the snapshot
    before = conn.scalar(sa.text("SELECT pg_backend_pid()"))
for func, args, kwargs in snapshot_restore_py.after_restore:   # Lambda restores the snapshot
    func(*args, **kwargs)
with engine.connect() as conn:
    after = conn.scalar(sa.text("SELECT pg_backend_pid()"))
print(json.dumps({"hooks": len(snapshot_restore_py.after_restore), "new": after != before}))
"""


def test_after_a_snapstart_restore_the_pool_starts_empty(
    stack: Stack, stack_env: Any, tmp_path: Path
) -> None:
    (tmp_path / "snapshot_restore_py.py").write_text(FAKE_RUNTIME)
    env = {**os.environ, **stack.env}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", SNAPSTART_CHILD], env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"hooks": 2, "new": True}  # iamdb's reset, the engine's
