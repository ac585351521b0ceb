"""valkey-py, as ``get_valkey()`` makes it: every new connection presents a current IAM token, over
TLS verified as configured, its waits bounded, and no token left in what a failure keeps alive.

valkey-py asks a connection's ``credential_provider`` for ``(user, password)`` each time the
connection logs in (``AUTH`` or ``HELLO 3 AUTH``), whoever opens it: ``get_valkey()``, the pool
on a later command, a cluster client reaching another node. :class:`IamCredentials` answers with
the instance's cached token (:class:`~iamdb._aws.tokens.TokenCache`: re-signed at 14 minutes and
when the credentials change). The connection class (:func:`connection_class`) adds what valkey-py
lacks: one TLS context per instance (valkey-py builds one per connection, ~25 ms with the
system's CA store), the TLS handshake and login bounded by the connect timeout (valkey-py waits
for them without end when no socket timeout is set), when the connection logged in, and a login
failure raised detached from the frames that held the token. The steps around it, and what a
failure means, are :mod:`iamdb._valkey.handle`'s.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from iamdb._core.deps import requires
from iamdb.errors import _detached

if TYPE_CHECKING:
    import ssl

    from iamdb._aws.tokens import TokenCache
    from iamdb._core.telemetry import Probe
    from iamdb._valkey.config import ValkeyConfig

Until = tuple[Callable[[], float], float]  # a clock and a deadline on it

LOGIN_UNTIL: contextvars.ContextVar[Until | None] = contextvars.ContextVar(
    "iamdb_valkey_login_until", default=None
)
"""Set by ``get_valkey()`` around its own logins: their connect, TLS and AUTH end by then."""


class IamCredentials:
    """valkey-py's credential provider for one instance: the user and a current token. Its repr
    names the cache and user only."""

    def __init__(
        self, cfg: ValkeyConfig, tokens: TokenCache, clock: Callable[[], float], probe: Probe
    ) -> None:
        self.cfg, self.clock, self.probe = cfg, clock, probe
        self._tokens = tokens
        self._tls: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"IamCredentials(cache={self.cfg.cache_name!r}, user={self.cfg.user!r})"

    def get_credentials(self) -> tuple[str, str]:
        """``(user, token)`` for the login of a new connection (or a re-authentication)."""
        token = self._tokens.get(self.cfg.target, deadline=self.until()[1], on_sign=self._signed)
        return self.cfg.user, token.value

    def until(self) -> Until:
        """When a login starting now must end: ``get_valkey()``'s deadline while it logs in,
        else the connect timeout from now."""
        bound = self.clock() + self.cfg.connect_timeout
        given = LOGIN_UNTIL.get()
        return (self.clock, bound if given is None else min(bound, given[1]))

    def seconds_left(self) -> float:
        clock, deadline = self.until()
        return max(0.001, deadline - clock())

    def tls(self) -> ssl.SSLContext:
        """The instance's TLS context, made once: verified against ``SSLROOTCERT`` alone when
        set, else the system's public CA store; TLS 1.2 or later, host name checked."""
        if self._tls is None:
            import ssl

            with self._lock:
                if self._tls is None:
                    context = ssl.create_default_context(cafile=self.cfg.sslrootcert)
                    context.minimum_version = ssl.TLSVersion.TLSv1_2
                    self._tls = context
        return self._tls

    def _signed(self) -> None:
        self.probe.count("TokensSigned")


_classes: dict[str, type[Any]] = {}


def connection_class(variable: str) -> type[Any]:
    """iamdb's valkey-py connection class (made on first use: valkey is imported here);
    MissingDependencyError naming ``variable`` when valkey-py is not installed."""
    found = _classes.get("sync")
    if found is not None:
        return found
    with requires("valkey", variable):
        from valkey import connection

    base: Any = connection.SSLConnection  # valkey-py's own types describe none of what follows

    class IamConnection(base):  # type: ignore[misc]
        """A TLS connection whose login takes the credential provider's token, bounded by the
        login's deadline; ``logged_in_at``: when it last logged in or re-authenticated."""

        logged_in_at: float | None = None

        def _connect(self) -> Any:
            self.socket_connect_timeout = self.credential_provider.seconds_left()
            return super()._connect()

        def _wrap_socket_with_ssl(self, sock: Any) -> Any:
            iam: IamCredentials = self.credential_provider
            sock.settimeout(iam.seconds_left())  # the handshake, then the login below
            try:
                return iam.tls().wrap_socket(sock, server_hostname=self.host)
            except OSError as exc:  # a timeout too: a plaintext server waits for more bytes
                problem = f"TLS handshake failed ({type(exc).__name__}: {exc})"
            raise OSError(problem)  # valkey-py's ConnectionError, saying TLS

        def on_connect(self) -> None:
            iam: IamCredentials = self.credential_provider
            failure = None
            try:
                self._sock.settimeout(iam.seconds_left())
                super().on_connect()  # its frames hold the token while the login runs
                self._sock.settimeout(self.socket_timeout)
            except BaseException as exc:
                failure = _detached(exc)  # valkey-py's own error, without those frames
            if failure is not None:
                self.disconnect()
                raise failure
            self.logged_in_at = iam.clock()

    _classes["sync"] = IamConnection
    return IamConnection


def _cluster_pool_class(klass: type[Any]) -> type[Any]:
    """A ``ConnectionPool`` whose connections are always ``klass``: how a cluster client's node
    pools get iamdb's connections (valkey-py's cluster passes no connection class to nodes)."""
    import valkey

    class IamPool(valkey.ConnectionPool):
        def __init__(self, connection_class: Any = None, **options: Any) -> None:
            super().__init__(connection_class=klass, **options)

    return IamPool


def new_client(cfg: ValkeyConfig, provider: IamCredentials) -> Any:
    """A ``valkey.Valkey`` (``valkey.ValkeyCluster`` in cluster mode) whose connections are
    :func:`connection_class`'s, logging in with ``provider``. A cluster client connects to read
    the slots at once; a plain one at its first command."""
    klass = connection_class(cfg.prefix + "HOST")
    import valkey

    options: dict[str, Any] = {
        "host": cfg.host,
        "port": cfg.port,
        "credential_provider": provider,
        "client_name": cfg.client_name,
        "socket_keepalive": True,
        "ssl_check_hostname": True,
    }
    if cfg.cluster:  # a URL: valkey-py then builds every node's pool from the pool class
        host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
        del options["host"], options["port"]
        return valkey.ValkeyCluster(
            url=f"valkey://{host}:{cfg.port}",
            connection_pool_class=_cluster_pool_class(klass),
            **options,
        )
    pool = valkey.ConnectionPool(connection_class=klass, **options)
    return valkey.Valkey(connection_pool=pool)


def pools(client: Any) -> list[Any]:
    """Every connection pool of ``client`` (a cluster client's: one per node it reached)."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        return [pool]
    return [n.valkey_connection.connection_pool for n in client.get_nodes() if n.valkey_connection]


def first_pool(client: Any) -> Any:
    """The pool a login goes through: the client's, or its cluster's default node's."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        return pool
    return client.get_valkey_connection(client.get_default_node()).connection_pool


def take_idle(pool: Any) -> list[Any]:
    """The pool's idle connections, marked in use so no command takes them meanwhile (give each
    back with ``pool.release``). Connections in use (a pipeline, MULTI/EXEC, pub/sub, another
    thread) are left alone."""
    with pool._lock:
        idle, pool._available_connections = pool._available_connections, []
        pool._in_use_connections.update(idle)
    return list(idle)


def login(pool: Any) -> None:
    """One connection of ``pool`` logged in (an idle one reconnected, or a new one), given back."""
    conn = pool.get_connection("PING")
    pool.release(conn)


def suspect(conn: Any) -> bool:
    """An idle connection with something to read (the server closed it, or said something)."""
    try:
        return bool(conn.can_read(timeout=0))
    except Exception:  # valkey's ConnectionError: the socket failed
        return True


def ping(conn: Any, seconds: float) -> str | None:
    """None when ``conn`` answers PING within ``seconds``, else why not."""
    problem = None
    try:
        conn._sock.settimeout(seconds)
        conn.send_command("PING", check_health=False)
        reply = conn.read_response()
        conn._sock.settimeout(conn.socket_timeout)
        if reply not in (b"PONG", "PONG"):
            problem = f"PING answered {reply!r:.60}"
    except Exception as exc:  # valkey's errors name the host, never a token
        problem = f"{type(exc).__name__}: {str(exc)[:200]}"
    return problem


def reauthenticate(conn: Any, provider: IamCredentials) -> str | None:
    """Send ``AUTH <user> <fresh token>`` on an idle connection; None when the server took it,
    else why not (never the token). ``conn.logged_in_at`` is now on success."""
    problem = None
    try:
        conn._sock.settimeout(provider.seconds_left())
        conn.send_command("AUTH", *provider.get_credentials(), check_health=False)
        reply = conn.read_response()
        conn._sock.settimeout(conn.socket_timeout)
        if reply not in (b"OK", "OK"):
            problem = f"AUTH answered {reply!r:.60}"
    except Exception as exc:  # the frames below held the token: only the text is kept
        problem = f"{type(exc).__name__}: {str(exc)[:200]}"
    if problem is None:
        conn.logged_in_at = provider.clock()
    return problem
