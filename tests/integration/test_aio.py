"""iamdb.aio against devstack's real servers: psycopg's AsyncConnection, pymongo's AsyncMongoClient.

Lambda runs an async handler either with ``asyncio.run()`` per invocation (a new event loop
each time) or on a module-level loop the handler keeps. Both are run here as a handler would,
with asyncio's debug mode on and every warning recorded: replacing a connection bound to a
finished loop must leave no warning, no "Event loop is closed" or "Task was destroyed" log, and
no connection behind on the servers (PostgreSQL's pg_stat_activity, the Mongo peer's sockets).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pymongo.errors import InvalidOperation

import iamdb
from devstack.stack import Stack
from iamdb import aio
from iamdb._core.runtime import Runtime
from iamdb._info import describe
from iamdb._registry import Registry
from tests.fakes import FakeClock, RecordingTelemetry
from tests.integration import test_mongo

pytestmark = pytest.mark.integration
HOUR = 3600.0
USER = "iamdb_app"

# The Mongo fixtures of test_mongo.py (the peer, its events cleared, one fake clock for iamdb,
# the peer and moto's STS).
peer = test_mongo.peer
mongo_env = test_mongo.mongo_env
fake_clock = test_mongo.fake_clock


class Noise:
    """What a clean run must not produce: warnings, unraisable exceptions, asyncio's logs."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.found)


@pytest.fixture
def quiet(caplog: Any) -> Callable[[], Any]:
    """``with quiet():`` fails the test if the block (and a gc pass after it) made any noise."""
    caplog.set_level(logging.DEBUG, logger="asyncio")

    @contextmanager
    def block() -> Iterator[Noise]:
        noise = Noise()
        hook = sys.unraisablehook
        sys.unraisablehook = lambda u: noise.found.append(f"unraisable: {u.exc_value!r}")
        start = len(caplog.records)
        try:
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                yield noise
                gc.collect()  # what was dropped is finalised (and would complain) now
        finally:
            sys.unraisablehook = hook
        noise.found += [f"{w.category.__name__}: {w.message}" for w in seen]
        noise.found += [
            f"asyncio {r.levelname}: {r.getMessage()}"
            for r in caplog.records[start:]
            if r.name == "asyncio" and r.levelno >= logging.WARNING
        ]
        assert not noise, "\n".join(noise.found)

    return block


def run(coro: Any) -> Any:
    """asyncio.run() in debug mode (unclosed transports warn, never-awaited coroutines too),
    without its slow-callback reports: this is about cleanliness, not speed."""

    async def main() -> Any:
        asyncio.get_running_loop().slow_callback_duration = 3600.0
        return await coro

    return asyncio.run(main(), debug=True)


def backends(stack: Stack) -> int:
    """The app user's PostgreSQL connections, as the server counts them."""
    assert stack.pg is not None
    with stack.pg.admin() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (USER,)
        ).fetchone()
    return int(row[0]) if row else -1


def settles(read: Callable[[], int], want: int) -> int:
    """``read()`` once it equals ``want`` (closed connections leave a server a moment later),
    or what it says after 10 s."""
    deadline = time.monotonic() + 10
    value = read()
    while value != want and time.monotonic() < deadline:
        time.sleep(0.05)
        value = read()
    return value


def accepted(stack: Stack) -> int:
    return sum(1 for e in stack.verifier.events if e.server == stack.pg_server and e.ok)


async def invocation(n: int) -> tuple[Any, int, Any]:
    """A handler's work: a query on each engine; the connection, backend pid and client."""
    conn = await aio.get_pg()
    cur = await conn.execute("SELECT pg_backend_pid()")
    (pid,) = await cur.fetchone() or (0,)
    client = await aio.get_mongo()
    coll = client.get_default_database().aio_invocations
    await coll.insert_one({"n": n})
    assert await coll.count_documents({"n": n}) >= 1
    return conn, pid, client


def test_three_asyncio_run_invocations_replace_cleanly(
    stack: Stack, mongo_env: dict[str, str], peer: Any, quiet: Callable[[], Any]
) -> None:
    pg_before, mongo_before = backends(stack), peer.open_connections()
    logins = accepted(stack)
    seen = []
    for n in range(3):
        with quiet():
            seen.append(run(invocation(n)))
        # the loop's shutdown closed both: nothing grows on the servers
        assert settles(lambda: backends(stack), pg_before) == pg_before
        assert settles(peer.open_connections, mongo_before) == mongo_before
    conns, pids, clients = zip(*seen, strict=True)
    assert len(set(pids)) == 3 and all(c.closed for c in conns)  # a new connection per loop
    assert len({id(c) for c in clients}) == 3
    assert accepted(stack) == logins + 3
    registry = iamdb._registry.default
    assert iamdb.info("pg").tokens_signed == 1  # one token, reused by every login
    lease = registry.mongo_handle().lease
    assert lease is not None
    assert [e.ok for e in peer.events] == [True] * 3  # one AssumeRole, three logins with it
    assert {e.access_key for e in peer.events} == {lease.credentials.access_key}


def test_a_module_level_loop_reuses_its_connections(
    stack: Stack, mongo_env: dict[str, str], peer: Any, quiet: Callable[[], Any]
) -> None:
    pg_before, mongo_before = backends(stack), peer.open_connections()
    logins = accepted(stack)
    with quiet():
        loop = asyncio.new_event_loop()
        loop.set_debug(True)
        loop.slow_callback_duration = 3600.0
        try:
            seen = [loop.run_until_complete(invocation(n)) for n in range(3)]
            assert backends(stack) == pg_before + 1
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
    conns, pids, clients = zip(*seen, strict=True)
    assert len({id(c) for c in conns}) == 1 and len(set(pids)) == 1
    assert len({id(c) for c in clients}) == 1
    assert accepted(stack) == logins + 1 and len(peer.events) == 1
    assert conns[0].closed  # the loop's shutdown closed it
    assert settles(lambda: backends(stack), pg_before) == pg_before
    assert settles(peer.open_connections, mongo_before) == mongo_before


def test_concurrent_tasks_share_one_connection_and_one_login(
    stack: Stack, mongo_env: dict[str, str], peer: Any, quiet: Callable[[], Any]
) -> None:
    logins = accepted(stack)

    async def handler() -> tuple[set[int], set[int], list[Any]]:
        conns = await asyncio.gather(*(aio.get_pg() for _ in range(20)))
        clients = await asyncio.gather(*(aio.get_mongo() for _ in range(20)))
        conn = conns[0]
        # psycopg serialises the tasks' commands on the one connection
        rows = await asyncio.gather(
            *(conn.execute("SELECT %s::int", (i,)) for i in range(10)), aio.get_pg()
        )
        values = [await cur.fetchone() for cur in rows[:-1]]
        assert rows[-1] is conn
        await clients[0].admin.command("ping")
        return {id(c) for c in conns}, {id(c) for c in clients}, values

    with quiet():
        conns, clients, values = run(handler())
    assert len(conns) == 1 and len(clients) == 1
    assert values == [(i,) for i in range(10)]
    assert accepted(stack) == logins + 1
    assert [e.ok for e in peer.events] == [True]


def test_permits_only_for_a_token_the_server_has_not_accepted(
    stack: Stack, stack_env: dict[str, str]
) -> None:
    """The first async login takes a permit (the fleet limiter's table is on); the next loop's
    login reuses the accepted token and takes none, nor does the blocking singleton's."""
    assert stack_env.get("IAMDB_THROTTLE_TABLE")
    telemetry = RecordingTelemetry()
    registry = Registry(runtime=Runtime(), telemetry=telemetry)
    handle = registry.aio_handle("pg")

    async def get() -> Any:
        try:
            return await handle.get()
        finally:
            handle.probe.flush()

    try:
        first, second = run(get()), run(get())
        assert first is not second
        registry.get_pg()
    finally:
        registry.reset()
    permits = [v for _, values in telemetry.emitted for v in values.get("ThrottleWaitMs", [])]
    assert len(permits) == 1
    totals = telemetry.totals("pg")
    assert totals["ConnectionsOpened"] == 3 and totals["TokensSigned"] == 1


def test_token_refresh_on_a_fake_clock(
    stack: Stack, stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live connection outlives its token; the replacement of a dead one signs a new token
    once the cached one is IAMDB_TOKEN_REFRESH_SECONDS old, and the verifier accepts it."""
    monkeypatch.delenv("IAMDB_THROTTLE_TABLE")  # a clock 14 minutes behind: no fleet queue
    now = [time.time() - 841]  # the first token is signed "841 s ago": still valid for 59 s
    telemetry = RecordingTelemetry()
    registry = Registry(runtime=Runtime(clock=lambda: now[0]), telemetry=telemetry)
    handle = registry.aio_handle("pg")
    logins = accepted(stack)

    async def handler() -> None:
        first = await handle.get()
        token = registry.tokens.get(registry.config("pg").target)
        now[0] = time.time()  # 841 s later: past the 840 s refresh age
        assert await handle.get() is first  # idle: confirmed by a round trip, kept
        assert stack.pg is not None and stack.pg.kill_connections(USER) >= 1
        second = await handle.get()  # the round trip fails: replaced, with a new token
        assert second is not first
        assert await (await second.execute("SELECT 1")).fetchone() == (1,)
        assert registry.tokens.get(registry.config("pg").target) is not token
        handle.probe.flush()

    try:
        run(handler())
        assert describe(registry, "pg", None).tokens_signed == 2
    finally:
        registry.reset()
    assert accepted(stack) == logins + 2
    totals = telemetry.totals("pg")
    assert totals["TokensSigned"] == 2 and totals["Reconnects"] == 1


def test_a_killed_backend_is_replaced_on_the_next_call(
    stack: Stack, stack_env: dict[str, str], quiet: Callable[[], Any]
) -> None:
    async def handler() -> tuple[Any, Any]:
        first = await aio.get_pg()
        await first.execute("SELECT 1")
        assert stack.pg is not None and stack.pg.kill_connections(USER) >= 1
        await asyncio.sleep(0.2)  # the goodbye travels while the environment is "frozen"
        second = await aio.get_pg()
        assert await (await second.execute("SELECT 1")).fetchone() == (1,)
        return first, second

    with quiet():
        first, second = run(handler())
    assert first is not second and first.closed


def test_a_connection_another_task_is_using_is_not_checked(stack_env: dict[str, str]) -> None:
    """A task's failed transaction (awaiting its ROLLBACK) is in use, not dead: another task's
    get() after the idle time must not ping it (the ping would fail) and replace it."""
    import psycopg

    now = [time.time()]
    registry = Registry(runtime=Runtime(clock=lambda: now[0]))
    handle = registry.aio_handle("pg")

    async def handler() -> None:
        conn = await handle.get()
        await conn.execute("BEGIN")
        with pytest.raises(psycopg.errors.DivisionByZero):
            await conn.execute("SELECT 1 / 0")
        now[0] += 31  # past IAMDB_HEALTHCHECK_IDLE_SECONDS
        assert await handle.get() is conn and not conn.closed
        await conn.execute("ROLLBACK")
        now[0] += 31
        assert await handle.get() is conn  # idle again: pinged, alive, kept

    try:
        run(handler())
    finally:
        registry.reset()


def test_mongo_swaps_before_expiry_and_an_in_flight_cursor_completes(
    mongo_env: dict[str, str], peer: Any, fake_clock: FakeClock
) -> None:
    """On a module-level loop, as the blocking client does (test_mongo.py): a new client once
    the credentials are in the refresh window, the old one closed on the call after."""
    registry = Registry(runtime=Runtime(clock=fake_clock))
    handle = registry.aio_handle("mongo")
    loop = asyncio.new_event_loop()

    async def setup() -> tuple[Any, Any]:
        old = await handle.get()
        coll = old.app.aio_inflight
        await coll.drop()
        await coll.insert_many([{"i": i} for i in range(10)])
        cursor = coll.find({}, batch_size=3).sort("i", 1)
        assert (await cursor.next())["i"] == 0  # first batch read on the old client's socket
        return old, cursor

    async def rest(cursor: Any) -> list[int]:
        return [d["i"] async for d in cursor]

    try:
        old, cursor = loop.run_until_complete(setup())
        first = registry.mongo_handle().lease
        assert first is not None and first.expires_at is not None
        fake_clock.advance(HOUR - 300 + 1)  # inside the 300 s refresh window
        new = loop.run_until_complete(handle.get())
        assert new is not old
        assert loop.run_until_complete(rest(cursor)) == list(range(1, 10))  # getMore, old client
        assert loop.run_until_complete(handle.get()) is new  # this call closes the old client
        with pytest.raises(InvalidOperation):
            loop.run_until_complete(old.app.aio_inflight.find_one())
        lease = registry.mongo_handle().lease
        assert lease is not None and lease.credentials.access_key != first.credentials.access_key
        assert loop.run_until_complete(new.app.aio_inflight.count_documents({})) == 10
    finally:
        registry.reset()  # the clients need their loop to close: ...
        loop.run_until_complete(loop.shutdown_asyncgens())  # ... they close at its shutdown
        loop.close()
    assert [e.ok for e in peer.events] == [True, True]
    assert peer.events[1].access_key == lease.credentials.access_key


def test_mongo_three_hours_of_asyncio_run_invocations(
    mongo_env: dict[str, str], peer: Any, fake_clock: FakeClock
) -> None:
    """An asyncio.run() every 7 minutes for 3 hours, with one-hour credentials: every
    invocation logs a new client in, always with credentials outside the refresh window, and
    the role is assumed again about every 55 minutes (not at every invocation)."""
    registry = Registry(runtime=Runtime(clock=fake_clock))
    handle = registry.aio_handle("mongo")
    keys: list[str] = []

    async def handler(minute: int) -> None:
        client = await handle.get()
        await client.app.aio_timeline.insert_one({"minute": minute})
        assert await client.app.aio_timeline.count_documents({"minute": minute}) == 1

    try:
        for minute in range(0, 181, 7):
            seen = len(peer.events)
            run(handler(minute))
            lease = registry.mongo_handle().lease
            assert lease is not None and lease.left(fake_clock()) > 300
            keys.append(lease.credentials.access_key)
            logins = list(peer.events)[seen:]
            assert len(logins) == 1 and logins[0].ok
            assert logins[0].access_key == lease.credentials.access_key
            fake_clock.advance(7 * 60)
    finally:
        registry.reset()
    events = list(peer.events)
    assert all(e.expires_at is not None and e.at < e.expires_at - 300 for e in events)
    assert len(set(keys)) == 4


def test_an_old_pymongo_is_a_config_error_before_any_call(
    mongo_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pymongo

    calls: list[object] = []
    monkeypatch.setattr(iamdb._mongo.client, "assume_role", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(pymongo, "version_tuple", (4, 12, 1))
    monkeypatch.setattr(pymongo, "version", "4.12.1")
    with pytest.raises(iamdb.ConfigError) as info:
        run(aio.get_mongo())
    assert info.value.variable == "IAMDB_MONGO_URI"
    assert "4.13.2" in str(info.value) and "4.12.1" in str(info.value) and not calls


def test_named_instances_and_spellings(stack_env: dict[str, str]) -> None:
    async def handler() -> tuple[Any, Any, Any]:
        upper, lower = await aio.get_pg("Reporting"), await aio.get_pg("reporting")
        assert upper.info.user == "iamdb_reporting"
        return upper, lower, await aio.get_pg()

    upper, lower, default = run(handler())
    assert upper is lower and upper is not default


def test_the_public_module_is_reachable_lazily() -> None:
    assert iamdb.aio is aio  # iamdb.__getattr__ imports it on first use
    assert dt.timezone.utc  # (datetime is imported for the fake_clock fixture's module)
