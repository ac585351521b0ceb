"""MySQL and MariaDB through PyMySQL: open, check and close IAM-authenticated connections,
every wait ended by the caller's deadline.

RDS receives the IAM token through the ``mysql_clear_password`` client plugin, so the
token is a cleartext password on the wire: TLS must be up before it is sent. Some PyMySQL
releases send it first and let the server reject the plaintext session afterwards, so
iamdb refuses, before authenticating, any server that does not offer TLS (unless
``IAMDB_MYSQL_SSLMODE=disable`` says otherwise).

Every wait ends by the deadline: the socket and the connection class of
:mod:`iamdb._sql.mysql_classes` see to it.
"""

from __future__ import annotations

import contextlib
import ssl
from typing import Any

from iamdb._aws.tokens import Token
from iamdb._sql.config import SqlConfig
from iamdb._sql.mysql_classes import Until, connection_class, open_socket, reason
from iamdb._sql.refusals import auth_refused, connect_failed, slots_full
from iamdb._sql.slots import IN_USE, MYSQL_FULL
from iamdb._sql.writer import MYSQL_QUERY, mysql_read_only
from iamdb.errors import ConfigError, ConnectError, IamDbError

MySqlConnection = Any  # PyMySQL ships no type information

_ACCESS_DENIED = 1045
# PyMySQL/MySQL client and server errors a later attempt may not meet: can't connect, lost
# connection, server gone, server shutting down.
_TRANSIENT = frozenset({2003, 2006, 2013, 1053})


class MySqlDriver:
    """The :class:`iamdb._sql.login.Driver` for PyMySQL connections."""

    engine = "mysql"

    def __init__(self) -> None:
        import pymysql  # noqa: F401  # absent: the caller's MissingDependencyError, before a login

        self._contexts: dict[tuple[str, str], ssl.SSLContext] = {}

    def connect(
        self,
        cfg: SqlConfig,
        token: Token,
        until: Until,
        *,
        autocommit: bool = True,
        idle_limit: int | None = None,
        **options: Any,
    ) -> MySqlConnection:
        """Log in with ``token`` (cleartext plugin, TLS enforced) by ``until``'s deadline;
        autocommit on unless asked otherwise; the server closes the session once idle
        ``idle_limit`` seconds (``SET SESSION wait_timeout``, one round trip after the login).
        ``options``: more of PyMySQL's arguments (SQLAlchemy's ``client_flag``), never one iamdb
        sets (a duplicate is a TypeError).

        Failures are raised from this frame, outside ``except``: PyMySQL's frames hold the
        token (its ``password`` argument), so no traceback or ``__context__`` may keep them.
        """
        import pymysql

        tls = None if cfg.sslmode == "disable" else self._context(cfg)
        conn = connection_class()(
            host=cfg.host,
            port=cfg.port,
            user=cfg.user,
            password=token.value,
            database=cfg.dbname,
            ssl=tls,
            ssl_disabled=tls is None,
            connect_timeout=cfg.connect_timeout,
            autocommit=autocommit,
            charset="utf8mb4",
            program_name=cfg.client_name[:64],
            defer_connect=True,
            **options,
        )
        failure: IamDbError
        try:
            conn.iamdb_until = until
            conn.connect(open_socket(cfg, until))
            conn.iamdb_idle_limit = idle_limit
            if idle_limit is not None:
                _set_wait_timeout(conn, idle_limit)
        except OSError as exc:  # open_socket's: no address answered in time
            failure = connect_failed(cfg, reason(exc), token, transient=True)
        except pymysql.err.MySQLError as exc:
            failure = _classify(cfg, exc, token)
        except ConnectError as exc:  # TlsFirstConnection's, raised deep in PyMySQL's frames
            failure = exc.with_traceback(None)
        else:
            conn.iamdb_until = None  # queries may run as long as the invocation allows
            return conn
        finally:
            del conn  # its arguments hold the token
        raise failure

    def fileno(self, conn: MySqlConnection) -> int:
        return int(conn._sock.fileno())

    def idle_limit(self, conn: MySqlConnection) -> int | None:
        """The idle limit ``conn`` was opened with (None: none)."""
        limit: int | None = conn.iamdb_idle_limit
        return limit

    def is_closed(self, conn: MySqlConnection) -> bool:
        return not conn.open

    def transaction(self, conn: MySqlConnection) -> str | None:
        """``INTRANS`` when a transaction is open on ``conn`` (as of its last answer), else None."""
        from pymysql.constants.SERVER_STATUS import SERVER_STATUS_IN_TRANS

        return "INTRANS" if conn.server_status & SERVER_STATUS_IN_TRANS else None

    def ping(self, conn: MySqlConnection, until: Until) -> str | None:
        """None when the server answers a ping by the deadline, else why not; None at once for
        a connection another thread is using right now."""
        problem = _exchange(conn, until, None)
        return None if problem in (None, IN_USE) else f"ping {problem}"

    def set_idle_limit(self, conn: MySqlConnection, seconds: int, until: Until) -> str | None:
        """Have the server close ``conn``'s session once idle ``seconds`` from now on (``SET
        SESSION wait_timeout``, one round trip by the deadline); None when done, else why not
        (then the connection's state is unknown: replace it)."""
        problem = _exchange(conn, until, _wait_timeout(seconds))
        if problem is None:
            conn.iamdb_idle_limit = seconds
            return None
        return problem if problem == IN_USE else f"SET wait_timeout {problem}"

    def read_only(self, conn: MySqlConnection, until: Until) -> str | None:
        """None when a new connection's server takes writes (:data:`~iamdb._sql.writer.
        MYSQL_QUERY` by the deadline), else what it answered or why no answer came. Leaves no
        transaction open, whatever the connection's autocommit."""
        row, problem = None, None
        conn.iamdb_until = until
        try:
            with conn.cursor() as cur:
                cur.execute(MYSQL_QUERY)
                row = cur.fetchone()
            if self.transaction(conn):
                conn.rollback()
        except Exception as exc:  # PyMySQL's errors: the connection failed
            problem = f"no answer: {type(exc).__name__}"
        finally:
            conn.iamdb_until = None
        return problem or mysql_read_only(row)

    def refused_write(self, conn: MySqlConnection) -> bool:
        """Whether a statement on ``conn`` failed because the server is read-only."""
        return bool(conn.iamdb_refused_write)

    def close(self, conn: MySqlConnection, wait: float = 0.0) -> bool:
        """Close ``conn`` unless a command of another thread runs on it (closing a TLS socket
        under a read crashes the process); waits up to ``wait`` seconds. False: left open."""
        busy = conn.iamdb_busy
        if not (busy.acquire(timeout=wait) if wait > 0 else busy.acquire(False)):
            return False
        try:
            with contextlib.suppress(Exception):  # closing a dead connection must not fail
                conn.close()
        finally:
            busy.release()
        return True

    def _context(self, cfg: SqlConfig) -> ssl.SSLContext:
        """One SSLContext per (mode, CA file): loading ~120 RDS CAs costs milliseconds."""
        key = (cfg.sslmode, cfg.sslrootcert)
        ctx = self._contexts.get(key)
        if ctx is None:
            problem = None
            try:  # checked at configuration time; the file may have changed since
                ctx = ssl.create_default_context(cafile=cfg.sslrootcert)
            except (OSError, ssl.SSLError) as exc:
                problem = f"cannot load {cfg.sslrootcert!r:.200} ({type(exc).__name__})"
            if ctx is None:
                raise ConfigError(cfg.prefix + "SSLROOTCERT", str(problem))
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if cfg.sslmode != "verify-full":
                ctx.check_hostname = False
            if cfg.sslmode == "require":
                ctx.verify_mode = ssl.CERT_NONE
            self._contexts[key] = ctx
        return ctx


def _set_wait_timeout(conn: MySqlConnection, seconds: int) -> None:
    """The server closes ``conn``'s session once idle ``seconds`` (closed on failure: the
    login is over, the caller classifies the error)."""
    try:
        conn.query(_wait_timeout(seconds))
    except BaseException:
        conn._force_close()
        raise


def _wait_timeout(seconds: int) -> str:
    """The statement of a session's idle limit, at the login and when it changes."""
    return f"SET SESSION wait_timeout = {int(seconds)}"


def _exchange(conn: MySqlConnection, until: Until, statement: str | None) -> str | None:
    """``statement`` (None: a ping) on ``conn`` by ``until``'s deadline: None when answered,
    else why not; :data:`~iamdb._sql.slots.IN_USE` without sending it while a command of
    another thread holds the connection."""
    if not conn.iamdb_busy.acquire(blocking=False):
        return IN_USE
    try:
        conn.iamdb_until = until
        if statement is None:
            conn.ping(reconnect=False)
        else:
            conn.query(statement)
    except Exception as exc:
        return f"failed: {type(exc).__name__}"
    finally:
        conn.iamdb_until = None
        conn.iamdb_busy.release()
    return None


def _classify(cfg: SqlConfig, exc: Exception, token: Token) -> IamDbError:
    code = exc.args[0] if exc.args else None
    detail = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    if code in MYSQL_FULL:
        return slots_full(cfg, detail, token, sqlstate=MYSQL_FULL[code], errno=code)
    if code == _ACCESS_DENIED:
        return auth_refused(cfg, detail, token)
    transient = code in _TRANSIENT and "ssl" not in detail.lower()
    return connect_failed(cfg, detail, token, transient=transient)
