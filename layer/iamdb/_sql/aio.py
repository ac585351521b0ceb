"""The asyncio side of the SQL singletons: a psycopg ``AsyncConnection`` per event loop
(:class:`~iamdb._core.loops.PerLoop`), closed on its loop when the loop ends (PostgreSQL's are
closed from anywhere when the loop was closed without shutting down: libpq needs no loop).

:class:`AsyncManaged` is :class:`~iamdb._sql.managed.ManagedConnection` for asyncio: the same
checks (the round trip awaited) and logins through the singleton's
:class:`~iamdb._sql.login.Login`, so both share its token cache, permits and accepted token.
"""

from __future__ import annotations

import asyncio
import select
from typing import TYPE_CHECKING, Any

from iamdb._core.log import logger
from iamdb._core.loops import PerLoop
from iamdb._sql.managed import ManagedConnection, look, ping_deadline, refused_write, watch
from iamdb._sql.pg import PgDriver

if TYPE_CHECKING:
    from iamdb._core.telemetry import Probe
    from iamdb._sql.config import SqlConfig
    from iamdb._sql.pg_classes import PgAsyncConnection


class _PgSlot:
    """One event loop's PostgreSQL connection of an instance."""

    def __init__(self, driver: PgDriver) -> None:
        self.lock = asyncio.Lock()  # binds to the loop at the first wait: one loop's only
        self.conn: PgAsyncConnection | None = None
        self.poll: select.poll | None = None
        self.last_used = 0.0
        self.served: str | None = None  # the invocation the last get() served
        self._driver = driver

    async def aclose(self) -> None:
        self.discard()

    def discard(self) -> None:
        conn, self.conn, self.poll = self.conn, None, None
        if conn is not None:
            self._driver.finish(conn)


class AsyncManaged:
    """An instance's ``psycopg.AsyncConnection`` on each event loop, checked at every
    :meth:`get` and replaced when dead: the asyncio side of the singleton ``managed``, logging in
    through its ``Login``, by its deadline and rules."""

    def __init__(self, managed: ManagedConnection[Any]) -> None:
        login = managed.login
        if not isinstance(login.driver, PgDriver):
            raise TypeError(f"no asyncio driver for {login.cfg.label}")
        self.login = login
        self._driver = login.driver
        self._rt = managed.runtime
        self._idle_seconds = managed.idle_seconds
        self._deadline = managed.deadline
        self._invocation = managed.invocation
        self._loops = PerLoop(lambda: _PgSlot(self._driver))

    @property
    def cfg(self) -> SqlConfig:
        return self.login.cfg

    @property
    def probe(self) -> Probe:
        return self.login.probe

    async def get(self) -> PgAsyncConnection:
        """The running loop's live connection, opening or replacing it when needed, by the
        deadline (as :meth:`iamdb._sql.managed.ManagedConnection.get`)."""
        slot = await self._loops.slot()
        deadline, left = self._deadline.window(self.login.cfg.connect_timeout)
        async with slot.lock:
            now = self._rt.clock()
            invocation = self._invocation.current()
            new_invocation = invocation is not None and invocation != slot.served
            slot.served = invocation
            conn = slot.conn
            replaced = None
            if conn is not None:
                replaced = await self._unusable(slot, conn, now, deadline, new_invocation, left)
                if replaced is None:
                    slot.last_used = now
                    return conn
                slot.discard()
            made: PgAsyncConnection = await self.login.connect_async(
                self._driver.connect_async, deadline
            )
            conn = made
            if replaced == "dead":
                self.probe.count("Reconnects")
            slot.conn, slot.poll = conn, watch(self._driver.fileno(conn))
            slot.last_used = now
            return conn

    def close(self) -> None:
        """Close every loop's connection (reset)."""
        self._loops.close()

    async def _unusable(
        self,
        slot: _PgSlot,
        conn: PgAsyncConnection,
        now: float,
        deadline: float,
        new_invocation: bool,
        left: float | None,
    ) -> str | None:
        """Why ``conn`` must be replaced (``left behind``, ``idle limit``, ``dead``), or None."""
        driver, label = self._driver, self.login.cfg.label
        closed = driver.is_closed(conn)
        transaction = None if closed else driver.transaction(conn)
        if transaction is not None and new_invocation:
            logger.warning(
                "%s: an earlier invocation left a transaction open on the connection (%s): "
                "replacing the connection, so the server rolls it back; its writes are not "
                "committed. Commit or roll back before the handler returns (or raises).",
                label,
                transaction,
            )
            self.probe.count("TransactionsRolledBack")
            return "left behind"
        if transaction is not None:
            return None  # another task's command or transaction: in use, so not idle
        idle, limit = self._idle_seconds, driver.idle_limit(conn)
        if limit is not None:  # the server's idle clock must not run out during the invocation
            misfit = self.login.idle.misfit(limit, left) if new_invocation else None
            if misfit is not None:
                logger.info("%s: replacing the connection (%s)", label, misfit)
                return "idle limit"
            idle = min(idle, self.login.idle.quiet(limit, left))
        assert slot.poll is not None
        seen = look(closed, slot.poll, now - slot.last_used, idle)
        reason = refused_write(driver, conn) or seen.dead
        if reason is None and seen.confirm:
            problem = await self._ping(conn, ping_deadline(now, deadline))
            reason = None if problem is None else seen.failed(problem)
        if reason is None:
            return None
        logger.info("%s: replacing the connection (%s)", label, reason)
        return "dead"

    async def _ping(self, conn: PgAsyncConnection, deadline: float) -> str | None:
        """None when ``SELECT 1`` answers by the deadline, else why not."""
        try:
            left = max(0.0, deadline - self._rt.clock())
            await asyncio.wait_for(self._driver.ping_async(conn), left)
        except (Exception, asyncio.TimeoutError) as exc:
            return f"ping failed: {type(exc).__name__}"
        return None
