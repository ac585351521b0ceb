"""One long-lived, self-healing IAM connection: the object behind each singleton.

Lambda freezes an environment between invocations and may thaw it minutes later with
sockets that died in the meantime. So every :meth:`ManagedConnection.get` checks the
connection before handing it out, cheaply, and within the invocation's deadline:

1. what an earlier invocation left: at the first ``get()`` of a new invocation (see
   :mod:`iamdb._core.invocation`), a transaction still open (or failed) on the connection belongs to
   a handler that ended without committing: the connection is replaced (the server rolls the
   transaction back as it closes), never handed on, and a warning names the instance. So is,
   with a maximum age (Aurora DSQL ends every session after an hour), one that reached it;
2. the driver's own closed/broken state (no I/O), and whether a statement on it found the
   server read-only (the writer moved: :mod:`iamdb._sql.writer`);
3. a zero-timeout ``poll()`` of the socket: an idle connection has nothing to read, so
   readable or hung-up means the server said goodbye (or sent a notice): suspect;
4. a round trip (``SELECT 1`` / ping) only when the socket is suspect or the connection
   has been idle longer than ``IAMDB_HEALTHCHECK_IDLE_SECONDS`` (a path that silently
   died, e.g. a NAT that forgot the flow, shows nothing to ``poll()``), or so long that the
   server's idle limit could close it before the invocation ends (the round trip restarts the
   server's idle clock). At the first ``get()`` of an invocation, a connection whose idle limit
   is not the one this invocation needs (left for the time between invocations by
   :meth:`ManagedConnection.park`, or made before the function's timeout was known) has it set
   instead, in the same round trip (:mod:`iamdb._sql.slots`). The round trip ends by the
   deadline: a connection that does not answer in time is dead.

A dead connection is replaced by a fresh login with a cached (or re-signed) token, inside
what is left of the same deadline; the caller never sees the dead one.
"""

from __future__ import annotations

import select
import threading
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from iamdb._core.log import logger
from iamdb._sql.login import Driver, Login
from iamdb._sql.slots import IN_USE
from iamdb.errors import ConnectError

if TYPE_CHECKING:
    from iamdb._aws.tokens import Token
    from iamdb._core.invocation import Deadline, Invocation
    from iamdb._core.runtime import Runtime
    from iamdb._core.telemetry import Probe
    from iamdb._sql.config import SqlConfig

__all__ = ["Driver", "ManagedConnection"]

C = TypeVar("C")

_SUSPECT = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR | select.POLLNVAL


class ManagedConnection(Generic[C]):
    """Holds one connection, checks it on every :meth:`get`, replaces it when dead."""

    def __init__(
        self,
        login: Login[C],
        *,
        runtime: Runtime,
        idle_seconds: float,
        deadline: Deadline,
        invocation: Invocation,
    ) -> None:
        self.login = login  # how a new connection is made (token, permits, retries)
        self.runtime, self.idle_seconds = runtime, idle_seconds
        self.deadline, self.invocation = deadline, invocation
        self._lock = threading.Lock()
        self._conn: C | None = None
        self._poll: select.poll | None = None
        self._last_used = 0.0
        self._opened = 0.0  # when the connection's login began (the server's age is older)
        self._served: str | None = None  # the invocation the last get() served
        self.reused = False  # whether the last get() handed out an already open connection

    @property
    def cfg(self) -> SqlConfig:
        return self.login.cfg

    @property
    def probe(self) -> Probe:
        return self.login.probe

    @property
    def connected(self) -> bool:
        """Whether a connection is held (it may have died since the last check)."""
        return self._conn is not None

    @property
    def idle_limit(self) -> int | None:
        """After how long idle the server closes the connection held now (None: never, or
        none held)."""
        conn = self._conn
        return None if conn is None else self.login.driver.idle_limit(conn)

    @property
    def last_token(self) -> Token | None:
        """The token the server last accepted for this instance."""
        return self.login.accepted

    def get(self) -> C:
        """The live connection, opening or replacing it when needed, by the deadline."""
        clock = self.runtime.clock
        deadline, left = self.deadline.window(self.cfg.connect_timeout)
        if not self._lock.acquire(timeout=max(0.0, deadline - clock())):
            raise ConnectError(
                f"{self.cfg.label}: another thread's login did not end before the deadline "
                f"({deadline - clock():.2f} s left): the server is slow to take connections",
                engine=self.cfg.engine,
                instance=self.cfg.label,
                host=self.cfg.host,
                port=self.cfg.port,
            )
        try:
            return self._get(clock(), deadline, left)
        finally:
            self._lock.release()

    def close(self, wait: float = 0.0) -> None:
        """Close the connection (if any); the next :meth:`get` logs in again. One another
        thread is using is left to it, after waiting up to ``wait`` seconds for it."""
        with self._lock:
            self._discard(wait)

    def park(self) -> None:
        """The invocation is over (the handler returned or raised): a transaction it left open
        is rolled back now (the connection closed, locks released), and the server is asked to
        close the session after the shorter idle limit of the time between invocations, so a
        frozen environment gives its slot back sooner. Never raises; one round trip, at most
        :data:`PING_SECONDS`; skipped when a get of another thread holds the connection."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            conn, between = self._conn, self.login.idle.between()
            if conn is None or self.login.driver.is_closed(conn):
                return
            if self._left_behind(conn):
                self._discard()
                return
            left = self.deadline.left()
            if between is None or self.login.driver.idle_limit(conn) in (None, between) or not left:
                return
            now = self.runtime.clock()
            problem = self.login.driver.set_idle_limit(
                conn, between, (self.runtime.clock, ping_deadline(now, now + left))
            )
            if problem not in (None, IN_USE):  # a thread of the handler's still uses it: kept
                logger.info("%s: closing the connection (%s)", self.cfg.label, problem)
                self._discard()
        finally:
            self._lock.release()

    def _get(self, now: float, deadline: float, left: float | None) -> C:
        conn, invocation = self._conn, self.invocation.current()
        replaced = None if conn is None else self._unusable(conn, now, deadline, invocation, left)
        self._served = invocation
        if conn is not None and replaced is None:
            self.reused, self._last_used = True, now
            return conn
        self._discard()
        conn = self.login.connect(deadline)
        if replaced == "dead":
            self.probe.count("Reconnects")  # counted once the replacement is there
        self._poll = watch(self.login.driver.fileno(conn))
        self._conn, self._opened = conn, now
        self.reused, self._last_used = False, now
        return conn

    def _unusable(
        self, conn: C, now: float, deadline: float, invocation: str | None, left: float | None
    ) -> str | None:
        """Why ``conn`` must be replaced (``left behind``, ``aged``, ``dead``), or None
        (``invocation``: the running one's id, None when unknown; ``left``: its time left)."""
        driver, cfg = self.login.driver, self.cfg
        new_invocation = invocation is not None and invocation != self._served
        if new_invocation and self._left_behind(conn):
            return "left behind"
        age = now - self._opened
        # Between invocations, or outside Lambda while no transaction is open: nothing in flight.
        if (
            cfg.max_age is not None
            and age >= cfg.max_age
            and (new_invocation or (invocation is None and driver.transaction(conn) is None))
        ):
            logger.info(
                "%s: replacing the connection after %.0f s (%sMAX_AGE_SECONDS=%g)",
                cfg.label,
                age,
                cfg.prefix,
                cfg.max_age,
            )
            return "aged"
        idle, limit = self.idle_seconds, driver.idle_limit(conn)
        wanted = limit  # what this invocation needs of it: a new one's limit, at its start
        if new_invocation and limit is not None:
            wanted = self.login.idle.for_new() or limit
        if limit is not None and wanted == limit:  # its idle clock must outlast the invocation
            idle = min(idle, self.login.idle.quiet(limit, left))
        assert self._poll is not None
        seen = look(driver.is_closed(conn), self._poll, now - self._last_used, idle)
        reason = refused_write(driver, conn) or seen.dead
        if reason is None and wanted is not None and wanted != limit:
            until = (self.runtime.clock, ping_deadline(now, deadline))
            problem = driver.set_idle_limit(conn, wanted, until)  # confirms it too
            reason = None if problem is None else seen.failed(problem)
        elif reason is None and seen.confirm:
            problem = driver.ping(conn, (self.runtime.clock, ping_deadline(now, deadline)))
            reason = None if problem is None else seen.failed(problem)
        if reason is None:
            return None
        logger.info("%s: replacing the connection (%s)", cfg.label, reason)
        return "dead"

    def _left_behind(self, conn: C) -> bool:
        """Whether an invocation that ended left a transaction open (or failed) on ``conn``:
        then it must be closed, so the server rolls it back (said in a warning, counted)."""
        driver = self.login.driver
        transaction = driver.transaction(conn)
        if transaction is None or driver.is_closed(conn):
            return False
        logger.warning(
            "%s: an invocation left a transaction open on the connection (%s): closing the "
            "connection, so the server rolls it back; its writes are not committed. Commit or "
            "roll back before the handler returns (or raises).",
            self.cfg.label,
            transaction,
        )
        self.probe.count("TransactionsRolledBack")
        return True

    def _discard(self, wait: float = 0.0) -> None:
        conn, self._conn, self._poll = self._conn, None, None
        if conn is not None and not self.login.driver.close(conn, wait):
            logger.info(
                "%s: the connection is in use by another thread: it closes when dropped",
                self.cfg.label,
            )


PING_SECONDS = 1.0
"""The longest a liveness round trip may take: a healthy server answers in milliseconds, and
what is left of the deadline must still allow a new login when it does not answer."""


def ping_deadline(now: float, deadline: float) -> float:
    """When a liveness round trip starting ``now`` gives up: after :data:`PING_SECONDS`, or
    half the time left before ``deadline`` when that is less."""
    return now + min(PING_SECONDS, max(0.0, deadline - now) / 2)


def watch(fileno: int) -> select.poll:
    """A poller of a new connection's socket for :func:`look`."""
    poller = select.poll()
    poller.register(fileno, _SUSPECT)
    return poller


class Look(NamedTuple):
    """What a connection shows without a round trip (steps 2 and 3 of the module docstring)."""

    dead: str | None  # why it is plainly dead
    confirm: bool  # a round trip must confirm it first: socket suspect, or idle too long
    suspect: bool

    def failed(self, problem: str) -> str:
        """Why the confirming round trip says the connection is dead."""
        seen = "socket readable while idle, " if self.suspect else ""
        return f"{seen}{problem}"


def refused_write(driver: Driver[Any], conn: Any) -> str | None:
    """Why ``conn`` must be replaced when a statement on it found the server read-only."""
    if driver.refused_write(conn):
        return "a statement found the server read-only: the writer moved"
    return None


def look(closed: bool, poller: select.poll, idle_for: float, idle: float) -> Look:
    """The cheap checks of a connection the driver says is ``closed`` (or broken), idle for
    ``idle_for`` seconds (``idle``: the limit)."""
    if closed:
        return Look("closed by the driver", False, False)
    suspect = bool(poller.poll(0))
    return Look(None, suspect or idle_for >= idle, suspect)
