"""PostgreSQL and Aurora DSQL through psycopg 3: open, check and close IAM-authenticated
connections, every wait ended by the caller's deadline.

psycopg is imported only when a PostgreSQL connection is first opened, so handlers
that never call :func:`iamdb.get_pg` or :func:`iamdb.get_dsql` do not pay for it.

iamdb's connections are psycopg's classes with two changes
(:mod:`iamdb._sql.pg_classes`): a connect ends at the login's deadline, and ``with conn:``
keeps the connection open.
The liveness check is one ``SELECT 1`` on libpq's own non-blocking API (:mod:`psycopg.pq`),
waited for here until the deadline.
"""

from __future__ import annotations

import contextlib
import math
import select
from collections.abc import Callable
from typing import Any

from iamdb._aws.tokens import Token
from iamdb._core.env import is_ip
from iamdb._sql import dsql as _dsql
from iamdb._sql.config import SqlConfig
from iamdb._sql.pg_classes import (
    LOGIN_DEADLINE,
    PgAsyncConnection,
    PgConnection,
    connection_classes,
)
from iamdb._sql.refusals import auth_refused, connect_failed, rate_refused, slots_full
from iamdb._sql.slots import FULL, IN_USE
from iamdb._sql.writer import PG_QUERY, pg_read_only
from iamdb.errors import IamDbError

# SQLSTATE class 28 (invalid authorization) and libpq's text for refused logins.
_AUTH_MARKERS = ("authentication failed", "password authentication", "28000", "28p01")
# libpq's text for failures that a later attempt may not meet: nothing listens yet, the server
# restarts or went away, the connect timed out. Certificates, DNS and missing databases are
# not among them: trying again would only repeat them.
_TRANSIENT = (
    "connection refused",
    "timeout expired",
    "timed out",
    "closed the connection unexpectedly",
    "connection reset",
    "could not receive data",
    "could not send data",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "terminating connection",
    "no route to host",
    "network is unreachable",
    "57p01",
    "57p03",
)
# What keepalives and TCP_USER_TIMEOUT leave of a path that dies while a connection is used
# (see docs/configuration.md): probes after 60 s idle, then every 10 s; unacknowledged data
# for 30 s ends the connection instead of a query hanging until Lambda's timeout.
_TCP = {"keepalives": 1, "keepalives_idle": 60, "keepalives_interval": 10,
        "keepalives_count": 3, "tcp_user_timeout": 30_000}  # fmt: skip


class PgDriver:
    """The :class:`iamdb._sql.login.Driver` for psycopg 3 connections (PostgreSQL and DSQL)."""

    engine = "pg"

    def __init__(self) -> None:
        import psycopg  # noqa: F401  # absent: the caller's MissingDependencyError, before a login

    def connect(
        self,
        cfg: SqlConfig,
        token: Token,
        until: tuple[Callable[[], float], float],
        *,
        autocommit: bool = True,
        idle_limit: int | None = None,
        **options: Any,
    ) -> PgConnection:
        """Log in with ``token`` over TLS as configured, giving up at ``until`` (clock,
        deadline); autocommit on unless asked otherwise (a singleton leaves no transaction open
        across invocations; pools and SQLAlchemy want DB-API transactions); the server closes
        the session once idle ``idle_limit`` seconds (``idle_session_timeout``, a startup
        option: no round trip). ``options``: more of psycopg's connect arguments, never one
        iamdb sets (a duplicate is a TypeError) but ``options``, to which iamdb's is added.

        The token's value exists only inside the call, and a failure is raised outside the
        ``except``: psycopg's error keeps its ``pgconn``, whose ``password`` is the token, so
        it must not become the ``__context__`` of ours (``from None`` only hides it).
        """
        import psycopg

        sync, _ = connection_classes()
        params, extra = _params(cfg, until), _with_idle_limit(options, idle_limit)
        reset = LOGIN_DEADLINE.set(until)
        try:
            conn = sync.connect(**params, autocommit=autocommit, password=token.value, **extra)
        except psycopg.Error as exc:
            failure = _classify(cfg, exc, token)
        else:
            conn.iamdb_idle_limit = idle_limit  # type: ignore[attr-defined]  # iamdb's class
            return conn
        finally:
            LOGIN_DEADLINE.reset(reset)
        raise failure

    async def connect_async(
        self,
        cfg: SqlConfig,
        token: Token,
        until: tuple[Callable[[], float], float],
        *,
        autocommit: bool = True,
        idle_limit: int | None = None,
        **options: Any,
    ) -> PgAsyncConnection:
        """:meth:`connect` for asyncio: a ``psycopg.AsyncConnection``, same settings and rules."""
        import psycopg

        _, asynchronous = connection_classes()
        params, extra = _params(cfg, until), _with_idle_limit(options, idle_limit)
        reset = LOGIN_DEADLINE.set(until)
        try:
            conn = await asynchronous.connect(
                **params, autocommit=autocommit, password=token.value, **extra
            )
        except psycopg.Error as exc:
            failure = _classify(cfg, exc, token)
        else:
            conn.iamdb_idle_limit = idle_limit  # type: ignore[attr-defined]  # iamdb's class
            return conn
        finally:
            LOGIN_DEADLINE.reset(reset)
        raise failure

    def fileno(self, conn: PgConnection | PgAsyncConnection) -> int:
        return int(conn.pgconn.socket)

    def idle_limit(self, conn: PgConnection | PgAsyncConnection) -> int | None:
        """The idle limit ``conn`` was opened with (None: none)."""
        return getattr(conn, "iamdb_idle_limit", None)

    def is_closed(self, conn: PgConnection | PgAsyncConnection) -> bool:
        return bool(conn.closed or conn.broken)

    def transaction(self, conn: PgConnection | PgAsyncConnection) -> str | None:
        """The state of a transaction open on ``conn`` (``INTRANS``, ``INERROR``, ``ACTIVE``:
        a command running), or None when there is none."""
        status = conn.pgconn.transaction_status
        if status == 0:  # IDLE
            return None
        from psycopg.pq import TransactionStatus

        return TransactionStatus(status).name

    def ping(self, conn: PgConnection, until: tuple[Callable[[], float], float]) -> str | None:
        """None when ``SELECT 1`` completes by the deadline, else why not. A connection another
        thread is using right now (psycopg's lock held) answers for itself: None."""
        problem = _exchange(conn, until, b"SELECT 1")
        return None if problem in (None, IN_USE) else f"ping {problem}"

    def set_idle_limit(
        self, conn: PgConnection, seconds: int, until: tuple[Callable[[], float], float]
    ) -> str | None:
        """Have the server close ``conn``'s session once idle ``seconds`` from now on (``SET
        idle_session_timeout``, one round trip by the deadline); None when done, else why not
        (then the connection's state is unknown: replace it)."""
        problem = _exchange(conn, until, f"SET idle_session_timeout = '{int(seconds)}s'".encode())
        if problem is None:
            conn.iamdb_idle_limit = seconds  # type: ignore[attr-defined]  # iamdb's class
            return None
        return problem if problem == IN_USE else f"SET idle_session_timeout {problem}"

    def close(self, conn: PgConnection, wait: float = 0.0) -> bool:
        """Close ``conn`` unless a command of another thread runs on it: closing then would
        crash the process inside libpq. Waits up to ``wait`` seconds for it; False when it
        was left open (its user drops it; psycopg then closes it)."""
        if not (conn.lock.acquire(timeout=wait) if wait > 0 else conn.lock.acquire(False)):
            return False
        try:
            with contextlib.suppress(Exception):  # closing a dead connection must not fail
                conn.close()
        finally:
            conn.lock.release()
        return True

    def read_only(self, conn: PgConnection, until: tuple[Callable[[], float], float]) -> str | None:
        """None when a new connection's server takes writes (:data:`~iamdb._sql.writer.PG_QUERY`
        answers ``off`` by the deadline), else what it answered or why no answer came."""
        answers: list[bytes | None] = []
        try:
            problem = _round_trip(conn.pgconn, *until, query=PG_QUERY, answers=answers)
        except Exception as exc:  # psycopg.OperationalError: the connection is gone
            problem = f"failed: {type(exc).__name__}"
        if problem is not None:
            return f"no answer: {problem}"
        return pg_read_only(answers[0] if answers else None)

    async def read_only_async(
        self, conn: PgAsyncConnection, until: tuple[Callable[[], float], float]
    ) -> str | None:
        """:meth:`read_only` for an ``AsyncConnection``, awaited until the deadline."""
        import asyncio

        clock, deadline = until
        try:
            cur = await asyncio.wait_for(conn.execute(PG_QUERY), max(0.0, deadline - clock()))
            row = await cur.fetchone()
        except (Exception, asyncio.TimeoutError) as exc:
            return f"no answer: {type(exc).__name__}"
        return pg_read_only(None if row is None else str(row[0]).encode())

    def refused_write(self, conn: PgConnection | PgAsyncConnection) -> bool:
        """Whether a statement on ``conn`` failed because the server does not take writes
        (SQLSTATE 25006, marked by :mod:`iamdb._sql.pg_classes`)."""
        return bool(getattr(conn, "iamdb_refused_write", False))

    async def ping_async(self, conn: PgAsyncConnection) -> None:
        await (await conn.execute("SELECT 1")).fetchone()

    def finish(self, conn: PgAsyncConnection) -> None:
        """Close an ``AsyncConnection`` without awaiting: libpq's ``finish`` (Terminate, then the
        socket closed), all that ``AsyncConnection.close()`` does, so it needs no event loop
        and works after the connection's loop is gone."""
        with contextlib.suppress(Exception):
            conn.pgconn.finish()


def _exchange(
    conn: PgConnection, until: tuple[Callable[[], float], float], query: bytes
) -> str | None:
    """``query`` on ``conn`` by ``until``'s deadline: None when answered, else why not;
    :data:`~iamdb._sql.slots.IN_USE` without sending it while a command of another thread
    holds the connection."""
    if not conn.lock.acquire(blocking=False):
        return IN_USE
    try:
        return _round_trip(conn.pgconn, *until, query=query)
    except Exception as exc:  # psycopg.OperationalError: the connection is gone
        return f"failed: {type(exc).__name__}"
    finally:
        conn.lock.release()


def _round_trip(
    pgconn: Any,
    clock: Callable[[], float],
    deadline: float,
    query: bytes = b"SELECT 1",
    answers: list[bytes | None] | None = None,
) -> str | None:
    """``query`` (``SELECT 1``) on libpq's non-blocking API; None when answered by ``deadline``,
    else why not. ``answers`` receives the first value of each result."""
    from psycopg import pq

    fd = pgconn.socket
    pgconn.send_query(query)
    while pgconn.flush():  # 1: more to send
        if not _ready(fd, select.POLLOUT, clock, deadline):
            return "timed out"
    answered = False
    while True:
        pgconn.consume_input()
        while not pgconn.is_busy():
            result = pgconn.get_result()
            if result is None:
                return None if answered else "got no answer"
            if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
                return f"answered {result.status.name}"
            if answers is not None and result.ntuples:
                answers.append(result.get_value(0, 0))
            answered = True
        if not _ready(fd, select.POLLIN, clock, deadline):
            return "timed out"


def _ready(fd: int, events: int, clock: Callable[[], float], deadline: float) -> bool:
    """Wait until ``fd`` is ready for ``events`` or the deadline passed (one wait only)."""
    left = deadline - clock()
    if left <= 0:
        return False
    poller = select.poll()
    poller.register(fd, events)
    return bool(poller.poll(math.ceil(left * 1000)))


def _params(cfg: SqlConfig, until: tuple[Callable[[], float], float]) -> dict[str, Any]:
    """Everything psycopg's connect takes from ``cfg`` (the password and autocommit apart).

    ``connect_timeout`` bounds each address's attempt (libpq: whole seconds, at least 2): the
    setting, or less when the deadline is nearer (:mod:`iamdb._sql.pg_classes` holds the
    total). DSQL routes connections by the TLS server name (SNI): through a tunnel (``HOST``
    an IP), libpq is given the cluster endpoint as ``host``, for SNI and the certificate
    check, and the IP as ``hostaddr``, where the socket goes.
    """
    clock, deadline = until
    timeout = max(2, min(cfg.connect_timeout, math.ceil(deadline - clock())))
    host: dict[str, str] = {"host": cfg.host}
    if cfg.engine == "dsql" and is_ip(cfg.host):
        host = {"host": cfg.signing_host, "hostaddr": cfg.host}
    return {
        **host,
        "port": cfg.port,
        "user": cfg.user,
        "dbname": cfg.dbname or cfg.user,
        "sslmode": cfg.sslmode,
        "sslrootcert": cfg.sslrootcert,
        "connect_timeout": timeout,
        "application_name": cfg.client_name[:63],
        **_TCP,
    }


def _with_idle_limit(options: dict[str, Any], idle_limit: int | None) -> dict[str, Any]:
    """``options`` with the server's idle limit added to libpq's startup ``options`` (PostgreSQL
    >= 14; an older server refuses the login, see :mod:`iamdb._sql.slots`)."""
    if idle_limit is None:
        return options
    startup = f"-c idle_session_timeout={idle_limit}s"
    given = options.get("options")
    return {**options, "options": f"{given} {startup}" if given else startup}


def _classify(cfg: SqlConfig, exc: Exception, token: Token) -> IamDbError:
    """Refused login (AuthError), refused for the rate (DSQL: ThrottleError), no slot free
    (TooManyConnectionsError, waited out by the login) or anything else
    (ConnectError, to try again when libpq's text says it may pass later). A failed connect
    carries no SQLSTATE: libpq's text says which it was."""
    detail = str(exc)
    lowered = detail.lower()
    sqlstate = (getattr(exc, "sqlstate", None) or "").lower()
    if cfg.engine == "dsql" and any(m in lowered for m in _dsql.RATE_EXCEEDED):
        return rate_refused(cfg, detail, token)
    if any(m in lowered for m in FULL):
        return slots_full(cfg, detail, token, sqlstate="53300")
    if sqlstate.startswith("28") or any(m in lowered for m in _AUTH_MARKERS):
        return auth_refused(cfg, detail, token)
    transient = any(m in lowered for m in _TRANSIENT) and "certificate" not in lowered
    return connect_failed(cfg, detail, token, transient=transient)
