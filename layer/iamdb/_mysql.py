"""MySQL and MariaDB through PyMySQL: open, check and close IAM-authenticated connections.

RDS receives the IAM token through the ``mysql_clear_password`` client plugin, so the
token is a cleartext password on the wire: TLS must be up before it is sent. Some PyMySQL
releases send it first and let the server reject the plaintext session afterwards, so
iamdb refuses, before authenticating, any server that does not offer TLS (unless
``IAMDB_MYSQL_SSLMODE=disable`` says otherwise).
"""

from __future__ import annotations

import contextlib
import functools
import ssl
from typing import Any

from iamdb._config import SqlConfig
from iamdb._errors import auth_refused, connect_failed
from iamdb._tokens import Token
from iamdb.errors import ConfigError, ConnectError, IamDbError

MySqlConnection = Any  # PyMySQL ships no type information

_ACCESS_DENIED = 1045


class MySqlDriver:
    """The :class:`iamdb._managed.Driver` for PyMySQL connections."""

    engine = "mysql"

    def __init__(self) -> None:
        import pymysql  # noqa: F401  # absent: the caller's MissingDependencyError, before a login

        self._contexts: dict[tuple[str, str], ssl.SSLContext] = {}

    def connect(
        self, cfg: SqlConfig, token: Token, *, autocommit: bool = True, **options: Any
    ) -> MySqlConnection:
        """Log in with ``token`` (cleartext plugin, TLS enforced); autocommit on unless asked
        otherwise. ``options``: more of PyMySQL's arguments (SQLAlchemy's ``client_flag``),
        never one iamdb sets (a duplicate is a TypeError).

        Failures are raised from this frame, outside ``except``: PyMySQL's frames hold the
        token (its ``password`` argument), so no traceback or ``__context__`` may keep them.
        """
        import pymysql

        tls = None if cfg.sslmode == "disable" else self._context(cfg)
        failure: IamDbError
        try:
            conn = _connection_class()(
                host=cfg.host,
                port=cfg.port,
                user=cfg.user,
                password=token.value,
                database=cfg.dbname,
                ssl=tls,
                ssl_disabled=tls is None,
                connect_timeout=cfg.connect_timeout,
                read_timeout=cfg.connect_timeout,  # bounds the handshake; lifted below
                write_timeout=cfg.connect_timeout,
                autocommit=autocommit,
                charset="utf8mb4",
                program_name=cfg.client_name[:64],
                **options,
            )
        except pymysql.err.MySQLError as exc:
            failure = _classify(cfg, exc, token)
        except ConnectError as exc:  # TlsFirstConnection's, raised deep in PyMySQL's frames
            failure = exc.with_traceback(None)
        else:
            conn._read_timeout = None  # queries may run as long as the invocation allows
            conn._write_timeout = None
            return conn
        raise failure

    def fileno(self, conn: MySqlConnection) -> int:
        return int(conn._sock.fileno())

    def is_closed(self, conn: MySqlConnection) -> bool:
        return not conn.open

    def in_transaction(self, conn: MySqlConnection) -> bool:
        from pymysql.constants.SERVER_STATUS import SERVER_STATUS_IN_TRANS

        return bool(conn.server_status & SERVER_STATUS_IN_TRANS)

    def ping(self, conn: MySqlConnection) -> None:
        conn.ping(reconnect=False)

    def close(self, conn: MySqlConnection) -> None:
        with contextlib.suppress(Exception):  # closing a dead connection must not fail
            conn.close()

    def _context(self, cfg: SqlConfig) -> ssl.SSLContext:
        """One SSLContext per (mode, CA file): loading ~120 RDS CAs costs milliseconds."""
        key = (cfg.sslmode, cfg.sslrootcert)
        ctx = self._contexts.get(key)
        if ctx is None:
            try:  # checked at configuration time; the file may have changed since
                ctx = ssl.create_default_context(cafile=cfg.sslrootcert)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    cfg.prefix + "SSLROOTCERT",
                    f"cannot load {cfg.sslrootcert!r:.200} ({type(exc).__name__})",
                ) from None
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if cfg.sslmode != "verify-full":
                ctx.check_hostname = False
            if cfg.sslmode == "require":
                ctx.verify_mode = ssl.CERT_NONE
            self._contexts[key] = ctx
        return ctx


@functools.cache
def _connection_class() -> type:
    """PyMySQL's Connection, refusing to authenticate when TLS was asked for but not offered."""
    import pymysql
    from pymysql.constants import CLIENT

    class TlsFirstConnection(pymysql.connections.Connection):  # type: ignore[misc]
        def _request_authentication(self) -> None:
            if self.ssl and not self.server_capabilities & CLIENT.SSL:
                raise ConnectError(
                    f"{self.host}:{self.port} does not offer TLS; iamdb will not send an IAM "
                    "token in plaintext (set IAMDB_MYSQL_SSLMODE=disable only for a trusted "
                    "local server)"
                )
            super()._request_authentication()

    return TlsFirstConnection


def _classify(cfg: SqlConfig, exc: Exception, token: Token) -> IamDbError:
    code = exc.args[0] if exc.args else None
    detail = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    if code == _ACCESS_DENIED:
        return auth_refused(cfg, detail, token)
    return connect_failed(cfg, detail, token)
