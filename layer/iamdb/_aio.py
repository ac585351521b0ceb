"""The asyncio side of the singletons: a connection per event loop, closed when its loop ends.

Async Lambda handlers usually run ``asyncio.run(...)`` once per invocation, so each invocation
has a new event loop, and a connection made on the previous one is unusable there: psycopg's
``AsyncConnection`` holds an ``asyncio.Lock`` that binds to the first loop that waits on it
(the next loop's concurrent queries then fail), and pymongo's ``AsyncMongoClient`` refuses
every loop but its first (its sockets are that loop's transports, its monitors that loop's
tasks). So each instance keeps one connection per loop (:class:`PerLoop`):

- the same loop again (a module-level loop the handler keeps): the connection is reused and
  checked at each call, like the blocking singletons';
- a loop that shuts down as ``asyncio.run()`` ends it (``loop.shutdown_asyncgens()`` before
  ``close()``): its connections are closed on it, while it still runs. An async generator
  started on the loop holds each one, and asyncio closes open async generators at shutdown;
- a loop closed without that shutdown: its connections are let go at the next call from
  another loop (PostgreSQL's closed there and then: libpq needs no loop).

:class:`AsyncManaged` is :class:`~iamdb._managed.ManagedConnection` for asyncio: the same
checks (the round trip awaited) and logins through the singleton's
:class:`~iamdb._login.Login`, so both share its token cache, permits and accepted token.
"""

from __future__ import annotations

import asyncio
import select
import threading
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from iamdb._log import logger
from iamdb._managed import look, watch
from iamdb._pg import PgDriver

if TYPE_CHECKING:
    from iamdb._login import Login
    from iamdb._pg import PgAsyncConnection
    from iamdb._runtime import Runtime
    from iamdb._telemetry import Probe


class Slot(Protocol):
    """What one event loop holds of an instance."""

    async def aclose(self) -> None:
        """Close it, on its loop (which still runs)."""

    def discard(self) -> None:
        """Let it go from anywhere, its loop possibly closed: close what can be closed."""


S = TypeVar("S", bound=Slot)
_Loop = asyncio.AbstractEventLoop


class PerLoop(Generic[S]):
    """One ``S`` per event loop: made on its first use there, closed when that loop shuts down.

    Thread-safe (each thread has its own loop); the lock is never held across an await.
    """

    def __init__(self, make: Callable[[], S]) -> None:
        self._make = make
        self._lock = threading.Lock()
        # Replaced whole under the lock, so slot() reads it without one.
        self._slots: dict[_Loop, tuple[S, AsyncGenerator[None, None]]] = {}

    async def slot(self) -> S:
        """The running loop's ``S``."""
        loop = asyncio.get_running_loop()
        found = self._slots.get(loop)
        if found is not None:
            return found[0]
        slot = self._make()
        closer = self._closer(loop, slot)
        with self._lock:
            gone = [s for other, (s, _) in self._slots.items() if other.is_closed()]
            kept = {other: e for other, e in self._slots.items() if not other.is_closed()}
            self._slots = {**kept, loop: (slot, closer)}
        for old in gone:  # loops closed without shutting down their async generators
            old.discard()
        await closer.__anext__()  # the loop's now: its shutdown_asyncgens() will close it
        return slot

    def close(self) -> None:
        """Let every slot go (reset): each closes what it can from here."""
        with self._lock:
            slots, self._slots = self._slots, {}
        for slot, _ in slots.values():
            slot.discard()

    async def _closer(self, loop: _Loop, slot: S) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._lock:
                found = self._slots.get(loop)
                if found is not None and found[0] is slot:
                    self._slots = {k: v for k, v in self._slots.items() if k is not loop}
            await slot.aclose()


class _PgSlot:
    """One event loop's PostgreSQL connection of an instance."""

    def __init__(self, driver: PgDriver) -> None:
        self.lock = asyncio.Lock()  # binds to the loop at the first wait: one loop's only
        self.conn: PgAsyncConnection | None = None
        self.poll: select.poll | None = None
        self.last_used = 0.0
        self._driver = driver

    async def aclose(self) -> None:
        self.discard()

    def discard(self) -> None:
        conn, self.conn, self.poll = self.conn, None, None
        if conn is not None:
            self._driver.finish(conn)


class AsyncManaged:
    """An instance's ``psycopg.AsyncConnection`` on each event loop, checked at every
    :meth:`get` and replaced when dead, logged in through the singleton's ``Login``."""

    def __init__(self, login: Login[Any], *, runtime: Runtime, idle_seconds: float) -> None:
        if not isinstance(login.driver, PgDriver):
            raise TypeError(f"no asyncio driver for {login.cfg.label}")
        self.login = login
        self._driver = login.driver
        self._rt = runtime
        self._idle_seconds = idle_seconds
        self._loops = PerLoop(lambda: _PgSlot(self._driver))

    @property
    def probe(self) -> Probe:
        return self.login.probe

    async def get(self) -> PgAsyncConnection:
        """The running loop's live connection, opening or replacing it when needed."""
        slot = await self._loops.slot()
        async with slot.lock:
            now = self._rt.clock()
            conn = slot.conn
            if conn is None or not await self._healthy(slot, conn, now):
                conn = await self.login.connect_async(self._driver.connect_async)
                slot.conn, slot.poll = conn, watch(self._driver.fileno(conn))
            slot.last_used = now
            return conn

    def close(self) -> None:
        """Close every loop's connection (reset)."""
        self._loops.close()

    async def _healthy(self, slot: _PgSlot, conn: PgAsyncConnection, now: float) -> bool:
        reason = await self._problem(slot, conn, now)
        if reason is None:
            return True
        logger.info("%s: replacing the connection (%s)", self.login.cfg.label, reason)
        slot.discard()
        self.probe.count("Reconnects")
        return False

    async def _problem(self, slot: _PgSlot, conn: PgAsyncConnection, now: float) -> str | None:
        driver = self._driver
        closed = driver.is_closed(conn)
        if not closed and driver.busy(conn):
            return None  # another task's command or transaction: in use, so not idle
        assert slot.poll is not None
        seen = look(closed, slot.poll, now - slot.last_used, self._idle_seconds)
        if not seen.confirm:
            return seen.dead
        try:
            await driver.ping_async(conn)
        except Exception as exc:
            return seen.failed(exc)
        return None
