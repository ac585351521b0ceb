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
token; the caller never sees the dead one.
"""

from __future__ import annotations

import select
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from iamdb.config import SqlConfig
from iamdb.errors import AuthError
from iamdb.log import logger
from iamdb.telemetry import Probe, quiet_probe
from iamdb.tokens import Token, TokenCache

if TYPE_CHECKING:
    from iamdb.limiter import Admission

C = TypeVar("C")

_SUSPECT = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR | select.POLLNVAL


class Driver(Protocol[C]):
    """What :class:`ManagedConnection` needs from a database driver."""

    engine: str

    def connect(self, cfg: SqlConfig, token: Token) -> C: ...
    def fileno(self, conn: C) -> int: ...
    def is_closed(self, conn: C) -> bool: ...
    def ping(self, conn: C) -> None: ...
    def close(self, conn: C) -> None: ...


class ManagedConnection(Generic[C]):
    """Holds one connection, checks it on every :meth:`get`, replaces it when dead."""

    def __init__(
        self,
        cfg: SqlConfig,
        driver: Driver[C],
        tokens: TokenCache,
        *,
        clock: Callable[[], float],
        idle_seconds: float,
        admission: Admission | None = None,
        probe: Probe | None = None,
    ) -> None:
        self.cfg = cfg
        self.probe = probe or quiet_probe(cfg.engine, cfg.name)  # metrics and subsegments
        self._admission = admission  # permits + bounded retry for new logins (None: neither)
        self._driver = driver
        self._tokens = tokens
        self._clock = clock
        self._idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._conn: C | None = None
        self._poll: select.poll | None = None
        self._last_used = 0.0
        self.connects = 0  # logins performed (the first one and every reconnect)
        self.reused = False  # whether the last get() handed out an already open connection
        self.last_token: Token | None = None

    def get(self) -> C:
        """The live connection, opening or replacing it when needed."""
        with self._lock:
            now = self._clock()
            conn = self._conn
            reused = conn is not None and self._healthy(conn, now)
            if conn is None or not reused:
                conn = self._open()
            self.reused = reused
            self._last_used = now
            return conn

    def close(self) -> None:
        """Close the connection (if any); the next :meth:`get` logs in again."""
        with self._lock:
            self._discard()

    def _healthy(self, conn: C, now: float) -> bool:
        reason = self._problem(conn, now)
        if reason is None:
            return True
        logger.info("%s: replacing the connection (%s)", self.cfg.label, reason)
        self._discard()
        self.probe.count("Reconnects")
        return False

    def _problem(self, conn: C, now: float) -> str | None:
        if self._driver.is_closed(conn):
            return "closed by the driver"
        assert self._poll is not None
        suspect = bool(self._poll.poll(0))
        if not suspect and now - self._last_used < self._idle_seconds:
            return None
        try:
            self._driver.ping(conn)
        except Exception as exc:
            seen = "socket readable while idle, " if suspect else ""
            return f"{seen}ping failed: {type(exc).__name__}"
        return None

    def _open(self) -> C:
        """A new login: under permits of the IAM rate limiters, refusals retried (bounded)."""
        with self.probe.span("connect"):
            if self._admission is None:
                return self._login(None)
            return self._admission.login(self.cfg, self._login, self.probe)

    def _login(self, permit: Callable[[], None] | None) -> C:
        cfg = self.cfg
        token = self._tokens.get(
            cfg.signing_host,
            cfg.signing_port,
            cfg.user,
            cfg.region,
            on_sign=lambda: self.probe.count("TokensSigned"),
        )
        if permit is not None and token is not self.last_token:
            permit()  # only a token the server has not accepted yet counts against its rate
        try:
            conn = self._driver.connect(cfg, token)
        except AuthError:
            self.probe.count("AuthFailures")
            # The next attempt signs anew: the credentials may have changed since.
            self._tokens.invalidate(cfg.signing_host, cfg.signing_port, cfg.user, cfg.region)
            raise
        poller = select.poll()
        poller.register(self._driver.fileno(conn), _SUSPECT)
        self._conn, self._poll, self.last_token = conn, poller, token
        self.connects += 1
        self.probe.count("ConnectionsOpened")
        logger.info(
            "%s: logged in to %s:%s as %s (token age %.0f s)",
            cfg.label,
            cfg.host,
            cfg.port,
            cfg.user,
            token.age(self._clock()),
        )
        return conn

    def _discard(self) -> None:
        if self._conn is not None:
            self._driver.close(self._conn)
        self._conn, self._poll = None, None
