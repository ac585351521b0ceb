"""iamdb.pg_pool() and pg_async_pool() against devstack's real PostgreSQL, which verifies tokens.

The pools are psycopg_pool's own, used as applications use them; each new connection is an
iamdb login. Where a test moves time or watches sleeps, iamdb's default registry is one of
the test's own (``own_registry``).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any

import pytest

import iamdb
from devstack.stack import Stack
from iamdb._core.telemetry import quiet_probe
from iamdb._info import describe
from tests.registries import Install, own_registry_fixture  # noqa: F401  (own_registry)

pytestmark = pytest.mark.integration


def accepted(stack: Stack) -> int:
    return sum(1 for e in stack.verifier.events if e.server == stack.pg_server and e.ok)


def backends(pool: Any, n: int) -> list[int]:
    """The backend pids of ``n`` connections held at once, returned to the pool after."""
    conns = [pool.getconn() for _ in range(n)]
    try:
        return [int(c.execute("SELECT pg_backend_pid()").fetchone()[0]) for c in conns]
    finally:
        for conn in conns:
            conn.rollback()
            pool.putconn(conn)


def test_opening_makes_no_connection_the_first_checkout_logs_in(
    stack: Stack, stack_env: Any
) -> None:
    before = accepted(stack)
    with iamdb.pg_pool() as pool:
        assert pool.get_stats()["pool_size"] == 0 and accepted(stack) == before
        with pool.connection() as conn:
            row = conn.execute(
                "SELECT current_user, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            ).fetchone()
            assert row is not None and row[0] == "iamdb_app" and row[1].startswith("TLSv1.")
        assert accepted(stack) == before + 1


def test_a_connection_block_is_one_transaction(stack_env: Any) -> None:
    """As with psycopg_pool's own connections: committed at the end of the block, rolled back
    when it raises (iamdb's singletons run in autocommit, pooled connections do not)."""
    name = f"pool_{uuid.uuid4().hex[:10]}"
    with iamdb.pg_pool() as pool:
        with pool.connection() as conn:
            conn.execute(f"CREATE TABLE {name} (id integer)")
        with pytest.raises(ZeroDivisionError), pool.connection() as conn:
            conn.execute(f"INSERT INTO {name} VALUES (1)")
            _ = 1 / 0
        with pool.connection() as conn:
            assert conn.execute(f"SELECT count(*) FROM {name}").fetchone() == (0,)
            conn.execute(f"DROP TABLE {name}")


def test_connections_opened_concurrently_share_one_token(stack: Stack, stack_env: Any) -> None:
    barrier = threading.Barrier(4, timeout=30)
    ids: list[int] = []
    errors: list[BaseException] = []
    before = accepted(stack)
    with iamdb.pg_pool(max_size=4) as pool:

        def worker() -> None:
            try:
                with pool.connection() as conn:
                    ids.append(int(conn.execute("SELECT pg_backend_pid()").fetchone()[0]))
                    barrier.wait()  # all four are checked out at once
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert errors == [] and len(set(ids)) == 4
    assert accepted(stack) == before + 4
    assert iamdb.info("pg").tokens_signed == 1


def test_new_connections_past_the_refresh_age_get_a_fresh_token(
    stack: Stack, stack_env: Any, own_registry: Install
) -> None:
    offset = [-845.0]  # the first token is signed 845 s "ago": still valid for the verifier
    registry = own_registry(
        stack_env, clock=lambda: time.time() + offset[0], IAMDB_THROTTLE_TABLE=None
    )
    login = registry.login("pg")
    with iamdb.pg_pool(max_size=2) as pool, pool.connection() as first:
        old = login.accepted
        offset[0] = 0.0  # 845 s later
        before = accepted(stack)
        with pool.connection() as second:  # a new physical connection, the first still out
            assert second is not first
        assert accepted(stack) == before + 1
    new = login.accepted
    assert old is not None and new is not None and new is not old
    assert old.age(time.time()) > 840 > 60 > new.age(time.time())
    assert describe(registry, "pg", None).tokens_signed == 2


def test_backends_killed_server_side_are_replaced_at_checkout(stack: Stack, stack_env: Any) -> None:
    with iamdb.pg_pool(max_size=3) as pool:
        before = backends(pool, 3)
        assert stack.pg is not None and stack.pg.kill_connections("iamdb_app") >= 3
        after = backends(pool, 3)
    assert len(set(after)) == 3 and not set(after) & set(before)


def test_arguments_iamdb_owns_are_refused_before_any_login(stack: Stack, stack_env: Any) -> None:
    before = len(stack.verifier.events)
    for key, value in (("conninfo", "host=x"), ("kwargs", {"sslmode": "disable"}),
                       ("connection_class", object)):  # fmt: skip
        with pytest.raises(iamdb.ConfigError) as info:
            iamdb.pg_pool(**{key: value})
        assert info.value.variable == key
    assert len(stack.verifier.events) == before


def test_async_pool_logs_in_on_a_real_loop_without_blocking_it(
    stack: Stack, stack_env: Any, own_registry: Install
) -> None:
    """Three connections checked out concurrently; every wait for a permit is off the loop's
    thread (the bucket's banked permit is taken first, so the first login must wait)."""
    sleeps: list[int] = []

    def sleep(seconds: float) -> None:
        sleeps.append(threading.get_ident())
        time.sleep(seconds)

    registry = own_registry(
        stack_env, sleep=sleep, IAMDB_THROTTLE_TABLE=None, IAMDB_CONNECT_RATE="5"
    )
    probe = quiet_probe("pg", None)
    registry.limits.permit(registry.config("pg").target.key, time.time() + 5, probe)
    before = accepted(stack)

    async def main() -> tuple[int, list[int]]:
        ids: list[int] = []
        all_in = asyncio.Event()
        async with iamdb.pg_async_pool(max_size=3) as pool:

            async def one() -> None:
                async with pool.connection() as conn:
                    cur = await conn.execute("SELECT pg_backend_pid()")
                    ids.append(int((await cur.fetchone())[0]))
                    if len(ids) == 3:
                        all_in.set()
                    await all_in.wait()

            await asyncio.wait_for(asyncio.gather(one(), one(), one()), 60)
        return threading.get_ident(), ids

    loop_thread, ids = asyncio.run(main())
    assert len(set(ids)) == 3 and accepted(stack) == before + 3
    assert sleeps and loop_thread not in sleeps
