"""One long-lived, self-healing IAM connection: the object behind each singleton.

Lambda freezes an environment between invocations and may thaw it minutes later with
sockets that died in the meantime. So every :meth:`ManagedConnection.get` checks the
connection before handing it out, cheaply:

1. the driver's own closed/broken state (no I/O);
2. a zero-timeout ``poll()`` of the socket: an idle connection has nothing to read, so
   readable or hung-up means the server said goodbye (or sent a notice): suspect;
3. a round trip (``SELECT 1`` / ping) only when the socket is suspect or the connection
   has been idle longer than ``IAMDB_HEALTHCHECK_IDLE_SECONDS`` (a path that silently
   died, e.g. a NAT that forgot the flow, shows nothing to ``poll()``).

A dead connection is closed and replaced by a fresh login with a cached (or re-signed)
token; the caller never sees the dead one. So is, with a maximum age (Aurora DSQL, which ends
every session after an hour), a connection that reached it: at :meth:`get`, the start of an
invocation, and never while a transaction is open on it, so no work in flight is cut off.
"""

from __future__ import annotations

import select
import threading
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeVar

from iamdb._log import logger
from iamdb._login import Driver, Login

if TYPE_CHECKING:
    from iamdb._config import SqlConfig
    from iamdb._runtime import Runtime
    from iamdb._telemetry import Probe
    from iamdb._tokens import Token

__all__ = ["Driver", "ManagedConnection"]

C = TypeVar("C")

_SUSPECT = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR | select.POLLNVAL


class ManagedConnection(Generic[C]):
    """Holds one connection, checks it on every :meth:`get`, replaces it when dead."""

    def __init__(self, login: Login[C], *, runtime: Runtime, idle_seconds: float) -> None:
        self.login = login  # how a new connection is made (token, permits, retries)
        self._rt = runtime
        self._idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._conn: C | None = None
        self._poll: select.poll | None = None
        self._last_used = 0.0
        self._opened = 0.0  # when the connection's login began (the server's age is older)
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
    def last_token(self) -> Token | None:
        """The token the server last accepted for this instance."""
        return self.login.accepted

    def get(self) -> C:
        """The live connection, opening or replacing it when needed."""
        with self._lock:
            now = self._rt.clock()
            conn = self._conn
            reused = conn is not None and not self._aged(conn, now) and self._healthy(conn, now)
            if conn is None or not reused:
                conn = self.login.connect()
                self._poll = watch(self.login.driver.fileno(conn))
                self._conn, self._opened = conn, now
            self.reused = reused
            self._last_used = now
            return conn

    def close(self) -> None:
        """Close the connection (if any); the next :meth:`get` logs in again."""
        with self._lock:
            self._discard()

    def _aged(self, conn: C, now: float) -> bool:
        """Whether the connection reached the instance's maximum age (and was discarded)."""
        max_age = self.cfg.max_age
        age = now - self._opened
        if max_age is None or age < max_age or self.login.driver.in_transaction(conn):
            return False
        logger.info(
            "%s: replacing the connection after %.0f s (%sMAX_AGE_SECONDS=%g)",
            self.cfg.label,
            age,
            self.cfg.prefix,
            max_age,
        )
        self._discard()
        return True

    def _healthy(self, conn: C, now: float) -> bool:
        reason = self._problem(conn, now)
        if reason is None:
            return True
        logger.info("%s: replacing the connection (%s)", self.cfg.label, reason)
        self._discard()
        self.probe.count("Reconnects")
        return False

    def _problem(self, conn: C, now: float) -> str | None:
        assert self._poll is not None
        closed = self.login.driver.is_closed(conn)
        seen = look(closed, self._poll, now - self._last_used, self._idle_seconds)
        if not seen.confirm:
            return seen.dead
        try:
            self.login.driver.ping(conn)
        except Exception as exc:
            return seen.failed(exc)
        return None

    def _discard(self) -> None:
        if self._conn is not None:
            self.login.driver.close(self._conn)
        self._conn, self._poll = None, None


def watch(fileno: int) -> select.poll:
    """A poller of a new connection's socket for :func:`look`."""
    poller = select.poll()
    poller.register(fileno, _SUSPECT)
    return poller


class Look(NamedTuple):
    """What a connection shows without a round trip (steps 1 and 2 of the module docstring)."""

    dead: str | None  # why it is plainly dead
    confirm: bool  # a round trip must confirm it first: socket suspect, or idle too long
    suspect: bool

    def failed(self, exc: BaseException) -> str:
        """Why the confirming round trip says the connection is dead."""
        seen = "socket readable while idle, " if self.suspect else ""
        return f"{seen}ping failed: {type(exc).__name__}"


def look(closed: bool, poller: select.poll, idle_for: float, idle: float) -> Look:
    """The cheap checks of a connection the driver says is ``closed`` (or broken), idle for
    ``idle_for`` seconds (``idle``: the limit)."""
    if closed:
        return Look("closed by the driver", False, False)
    suspect = bool(poller.poll(0))
    return Look(None, suspect or idle_for >= idle, suspect)
