"""PostgreSQL and Aurora DSQL through psycopg 3: open, check and close IAM-authenticated
connections.

psycopg is imported only when a PostgreSQL connection is first opened, so handlers
that never call :func:`iamdb.get_pg` or :func:`iamdb.get_dsql` do not pay for it.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from iamdb import _dsql
from iamdb._config import SqlConfig
from iamdb._env import is_ip
from iamdb._errors import auth_refused, connect_failed, rate_refused
from iamdb._tokens import Token
from iamdb.errors import IamDbError

if TYPE_CHECKING:
    import psycopg

    PgConnection = psycopg.Connection[Any]
    PgAsyncConnection = psycopg.AsyncConnection[Any]
else:
    PgConnection = PgAsyncConnection = Any

# SQLSTATE class 28 (invalid authorization) and libpq's text for refused logins.
_AUTH_MARKERS = ("authentication failed", "password authentication", "28000", "28p01")


class PgDriver:
    """The :class:`iamdb._managed.Driver` for psycopg 3 connections (PostgreSQL and DSQL)."""

    engine = "pg"

    def __init__(self) -> None:
        import psycopg  # noqa: F401  # absent: the caller's MissingDependencyError, before a login

    def connect(
        self, cfg: SqlConfig, token: Token, *, autocommit: bool = True, **options: Any
    ) -> PgConnection:
        """Log in with ``token`` over TLS as configured; autocommit on unless asked otherwise
        (a singleton leaves no transaction open across invocations; pools and SQLAlchemy want
        DB-API transactions). ``options``: more of psycopg's connect arguments, never one
        iamdb sets (a duplicate is a TypeError).

        The token's value exists only inside the call, and a failure is raised outside the
        ``except``: psycopg's error keeps its ``pgconn``, whose ``password`` is the token, so
        it must not become the ``__context__`` of ours (``from None`` only hides it).
        """
        import psycopg

        try:
            return psycopg.connect(
                **_params(cfg), autocommit=autocommit, password=token.value, **options
            )
        except psycopg.Error as exc:
            failure = _classify(cfg, exc, token)
        raise failure

    async def connect_async(
        self, cfg: SqlConfig, token: Token, *, autocommit: bool = True, **options: Any
    ) -> PgAsyncConnection:
        """:meth:`connect` for asyncio: a ``psycopg.AsyncConnection``, same settings and rules."""
        import psycopg

        try:
            return await psycopg.AsyncConnection.connect(
                **_params(cfg), autocommit=autocommit, password=token.value, **options
            )
        except psycopg.Error as exc:
            failure = _classify(cfg, exc, token)
        raise failure

    def fileno(self, conn: PgConnection | PgAsyncConnection) -> int:
        return int(conn.pgconn.socket)

    def is_closed(self, conn: PgConnection | PgAsyncConnection) -> bool:
        return bool(conn.closed or conn.broken)

    def in_transaction(self, conn: PgConnection) -> bool:
        from psycopg.pq import TransactionStatus

        return conn.info.transaction_status != TransactionStatus.IDLE

    def ping(self, conn: PgConnection) -> None:
        conn.execute("SELECT 1").fetchone()

    def close(self, conn: PgConnection) -> None:
        with contextlib.suppress(Exception):  # closing a dead connection must not fail
            conn.close()

    async def ping_async(self, conn: PgAsyncConnection) -> None:
        await (await conn.execute("SELECT 1")).fetchone()

    def finish(self, conn: PgAsyncConnection) -> None:
        """Close an ``AsyncConnection`` without awaiting: libpq's ``finish`` (Terminate, then the
        socket closed), all that ``AsyncConnection.close()`` does, so it needs no event loop
        and works after the connection's loop is gone."""
        with contextlib.suppress(Exception):
            conn.pgconn.finish()

    def busy(self, conn: PgAsyncConnection) -> bool:
        """A command or transaction in progress: another task is using the connection."""
        return bool(conn.info.transaction_status.name != "IDLE")


def _params(cfg: SqlConfig) -> dict[str, Any]:
    """Everything psycopg's connect takes from ``cfg`` (the password and autocommit apart).

    DSQL routes connections by the TLS server name (SNI): through a tunnel (``HOST`` an IP),
    libpq is given the cluster endpoint as ``host``, for SNI and the certificate check, and the
    IP as ``hostaddr``, where the socket goes.
    """
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
        "connect_timeout": cfg.connect_timeout,
        "application_name": cfg.client_name[:63],
    }


def _classify(cfg: SqlConfig, exc: Exception, token: Token) -> IamDbError:
    """Refused login (AuthError), refused for the rate (DSQL: ThrottleError) or anything else
    (ConnectError). A failed connect carries no SQLSTATE: libpq's text says which it was."""
    detail = str(exc)
    lowered = detail.lower()
    sqlstate = (getattr(exc, "sqlstate", None) or "").lower()
    if cfg.engine == "dsql" and any(m in lowered for m in _dsql.RATE_EXCEEDED):
        return rate_refused(cfg, detail, token)
    if sqlstate.startswith("28") or any(m in lowered for m in _AUTH_MARKERS):
        return auth_refused(cfg, detail, token)
    return connect_failed(cfg, detail, token)
