"""The database of the slot simulation, and the driver iamdb's real login code talks to.

:class:`Db` is one RDS instance's connection slots in virtual time: a login takes a slot or is
refused (as the real driver would report it, classified by iamdb's own driver code:
:func:`iamdb._sql.pg._classify` / :func:`iamdb._sql.mysql._classify`); a session whose client set
an idle limit is closed once idle that long; a session of an environment Lambda destroyed (an
orphan: no client ever says goodbye) is closed by the server's TCP keepalive after
:attr:`Engine.orphan_seconds`. Sessions are swept lazily, at the instant anything asks.

:class:`SimDriver` is the :class:`iamdb._sql.login.Driver` over it. Each session has a real
socket pair, so :class:`iamdb._sql.managed.ManagedConnection`'s ``poll()`` sees a closed session
exactly as it sees a server's goodbye.
"""

from __future__ import annotations

import heapq
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.fleetsim.sim import RollingSecond, Sim

HANDSHAKE = (0.008, 0.024)  # TCP + TLS + the login packet: when the server counts the login
ANSWER = (0.002, 0.006)  # the server's answer
ROUND_TRIP = 0.0005  # a query, a ping, MySQL's SET after the login
_SLACK = 1e-6  # a due instant rounds differently from ``now - last >= limit``: look a bit early


@dataclass(frozen=True)
class Engine:
    """What differs between PostgreSQL and MySQL here."""

    name: str  # iamdb's engine: "pg" or "mysql"
    refusal: tuple[Any, ...]  # the driver exception's args for a full server
    after_auth: bool  # the refusal comes after authentication (an IAM login is counted)
    orphan_seconds: float  # when the server drops a destroyed environment's session


PG = Engine(
    "pg",
    ('connection failed: connection to server at "10.0.0.5", port 5432 failed: FATAL:  '
     "remaining connection slots are reserved for non-replication superuser and rds_superuser "
     "connections",),
    True,
    300.0 + 2 * 30.0,  # RDS PostgreSQL's tcp_keepalives_idle 300 s, 2 probes 30 s apart
)  # fmt: skip
MYSQL = Engine(
    "mysql",
    (1040, "Too many connections"),
    False,
    7200.0 + 9 * 75.0,  # Linux's keepalive (wait_timeout is 8 hours)
)


@dataclass(eq=False)
class Session:
    """One connection, the server's side and the client's (``pair[0]`` is the client's end)."""

    opened: float
    limit: int | None
    last: float
    pair: tuple[socket.socket, socket.socket] = field(default_factory=socket.socketpair)
    open: bool = True
    orphan_since: float | None = None
    due: float | None = None  # when the server looks at it next (its one entry in Db._due)

    def close(self) -> None:
        if self.open:
            self.open = False
            self.pair[1].close()  # the client's poll() sees the goodbye

    def release(self) -> None:
        self.pair[0].close()


class Db:
    """``slots`` connection slots for the application (see the module docstring)."""

    def __init__(self, sim: Sim, engine: Engine, slots: int, reclaim: Callable[[], None]) -> None:
        self.sim, self.engine, self.slots = sim, engine, slots
        self._reclaim = reclaim  # Lambda destroys the environments due before anyone looks
        self.sessions: dict[Session, None] = {}  # open sessions, in the order they opened
        self._due: list[tuple[float, int, Session]] = []  # (due at the earliest, seq, session)
        self._seq = 0
        self.peak = 0
        self.refused = 0
        self.iam_logins = RollingSecond()  # logins with a token the server had not accepted
        self._tokens: set[str] = set()

    def sweep(self) -> None:
        """Close the sessions due (idle past their limit, or orphaned past keepalive): only those
        whose due instant has come are looked at (a heap), not every session on every call."""
        now = self.sim.now()
        self._reclaim()
        later = []
        while self._due and self._due[0][0] <= now + _SLACK:
            due, _, s = heapq.heappop(self._due)
            if not s.open or due != s.due:  # closed, or rescheduled since (a new limit)
                continue
            idle_out = s.limit is not None and now - s.last >= s.limit
            orphaned = s.orphan_since is not None and now - s.last >= self.engine.orphan_seconds
            if idle_out or orphaned:
                s.close()
                del self.sessions[s]
            else:  # used since it was scheduled: due later
                later.append(s)
        for s in later:
            self._schedule(s)

    def _schedule(self, s: Session) -> None:
        """Push ``s``'s next due instant (a lower bound: ``use`` only moves it later)."""
        dues = [s.last + s.limit] if s.limit is not None else []
        if s.orphan_since is not None:
            dues.append(s.last + self.engine.orphan_seconds)
        s.due = min(dues) if dues else None
        if s.due is not None:
            self._seq += 1
            heapq.heappush(self._due, (s.due, self._seq, s))

    def login(self, token: str, limit: int | None) -> Session | None:
        """A new session, or None when every slot is taken (the login was refused)."""
        self.sweep()
        now = self.sim.now()
        authenticated = self.engine.after_auth or len(self.sessions) < self.slots
        if authenticated and token not in self._tokens:  # what RDS counts
            self._tokens.add(token)
            self.iam_logins.add(now)
        if len(self.sessions) >= self.slots:
            self.refused += 1
            return None
        session = Session(now, limit, now)
        self.sessions[session] = None
        self._schedule(session)
        self.peak = max(self.peak, len(self.sessions))
        return session

    def use(self, session: Session) -> bool:
        """A statement on ``session``: False when the server closed it."""
        self.sweep()
        if session.open:
            session.last = self.sim.now()
        return session.open

    def relimit(self, session: Session, limit: int) -> bool:
        """A ``SET`` of the session's idle limit: False when the server closed it."""
        if not self.use(session):
            return False
        session.limit = limit
        self._schedule(session)
        return True

    def orphan(self, session: Session) -> None:
        """Lambda destroyed the environment holding ``session``: no goodbye reaches the server."""
        if session.open:
            session.orphan_since = session.last
            self._schedule(session)
        session.release()

    def disconnect(self, session: Session) -> None:
        session.close()
        session.release()
        self.sessions.pop(session, None)


class SimDriver:
    """The :class:`iamdb._sql.login.Driver` of one environment, over :class:`Db`."""

    def __init__(self, db: Db, rng: random.Random) -> None:
        self.db, self.rng = db, rng
        self.engine = db.engine.name
        self.connects = 0

    def connect(self, cfg: Any, token: Any, until: Any, **options: Any) -> Session:
        """Log in (``idle_limit`` among ``options`` with this version of iamdb); a full server
        is refused as the real driver reports it, classified by iamdb's own code."""
        self.connects += 1
        sim = self.db.sim
        sim.sleep(self.rng.uniform(*HANDSHAKE))
        limit = options.get("idle_limit")
        session = self.db.login(token.value, limit)
        sim.sleep(self.rng.uniform(*ANSWER))
        if session is None:
            raise _classified(self.db.engine, cfg, token)
        if limit is not None and self.engine == "mysql":
            sim.sleep(ROUND_TRIP)  # SET SESSION wait_timeout
        return session

    def fileno(self, conn: Session) -> int:
        return conn.pair[0].fileno()

    def idle_limit(self, conn: Session) -> int | None:
        return conn.limit

    def is_closed(self, conn: Session) -> bool:
        return conn.pair[0].fileno() == -1

    def transaction(self, conn: Session) -> str | None:
        return None

    def ping(self, conn: Session, until: Any) -> str | None:
        self.db.sim.sleep(ROUND_TRIP)
        return None if self.db.use(conn) else "ping failed: OperationalError"

    def set_idle_limit(self, conn: Session, seconds: int, until: Any) -> str | None:
        self.db.sim.sleep(ROUND_TRIP)
        return None if self.db.relimit(conn, seconds) else "SET failed: OperationalError"

    def close(self, conn: Session, wait: float = 0.0) -> bool:
        self.db.disconnect(conn)
        return True

    def read_only(self, conn: Session, until: Any) -> str | None:
        return None  # the modelled server always takes writes

    def refused_write(self, conn: Session) -> bool:
        return False


def _classified(engine: Engine, cfg: Any, token: Any) -> Exception:
    """What iamdb's real driver makes of the server's refusal (a ConnectError in main's
    version, TooManyConnectionsError in this one)."""
    if engine.name == "pg":
        from iamdb._sql import pg

        failure: Exception = pg._classify(cfg, Exception(*engine.refusal), token)
    else:
        from iamdb._sql import mysql

        failure = mysql._classify(cfg, Exception(*engine.refusal), token)
    return failure
