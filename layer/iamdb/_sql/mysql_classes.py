"""PyMySQL's ``Connection`` as iamdb makes it, and the socket it runs on.

PyMySQL's timeouts are per socket operation (a server dribbling its handshake one byte at a
time never trips them) and ``socket.create_connection`` gives every address the whole
timeout. iamdb opens the socket itself (:func:`open_socket`: each address gets what is left)
and its connection class re-arms the socket's timeout to the time left before every read and
write while a deadline is set (the login, the liveness ping). The class also serialises
commands, so that closing a connection (``iamdb.reset()``) never happens under a running
statement, makes ``with conn:`` end the transaction but keep the connection, which is iamdb's to
close, and marks a connection whose statement the server refused for being read-only (1290 /
1836: the writer moved) so that the next ``get_mysql()`` replaces it (:mod:`iamdb._sql.writer`).
"""

from __future__ import annotations

import contextlib
import functools
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from iamdb._sql.writer import mysql_refused_write
from iamdb.errors import ConnectError

if TYPE_CHECKING:
    from iamdb._sql.config import SqlConfig

Until = tuple[Callable[[], float], float]  # a clock and a deadline on it

# Keepalives and TCP_USER_TIMEOUT, as for PostgreSQL (see iamdb._sql.pg).
_TCP_OPTIONS = (
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", 0), 60),
    (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", 0), 10),
    (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", 0), 3),
    (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", 0), 30_000),
    (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
)


def open_socket(cfg: SqlConfig, until: Until) -> socket.socket:
    """A TCP connection to ``cfg.host:port``: each address in turn, each given what is left of
    the deadline (at most the connect timeout). OSError when none answered."""
    clock, deadline = until
    problem: OSError = TimeoutError("timed out")
    for family, kind, proto, _, address in socket.getaddrinfo(
        cfg.host, cfg.port, type=socket.SOCK_STREAM
    ):
        left = min(deadline - clock(), cfg.connect_timeout)
        if left <= 0:
            break
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(left)
            sock.connect(address)
            for level, option, value in _TCP_OPTIONS:
                if option:
                    sock.setsockopt(level, option, value)
        except OSError as exc:
            sock.close()
            problem = exc
            continue
        return sock
    raise problem.with_traceback(None)


@functools.cache
def connection_class() -> type:
    """PyMySQL's Connection as iamdb makes it (see the module docstring)."""
    import pymysql
    from pymysql.constants import CLIENT, CR

    class Connection(pymysql.connections.Connection):  # type: ignore[misc]
        """A PyMySQL connection made by iamdb; ``with conn:`` keeps it open."""

        iamdb_until: Until | None = None  # while set, every read and write ends by it
        iamdb_refused_write = False  # a statement failed: the server is read-only
        iamdb_idle_limit: int | None = None  # the server closes it after this long idle

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.iamdb_busy = threading.RLock()  # held while a command is on the wire
            super().__init__(*args, **kwargs)

        def _request_authentication(self) -> None:
            if self.ssl and not self.server_capabilities & CLIENT.SSL:
                raise ConnectError(
                    f"{self.host}:{self.port} does not offer TLS; iamdb will not send an IAM "
                    "token in plaintext (set IAMDB_MYSQL_SSLMODE=disable only for a trusted "
                    "local server)"
                )
            super()._request_authentication()

        def _read_packet(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super()._read_packet(*args, **kwargs)
            except pymysql.err.MySQLError as exc:
                if mysql_refused_write(exc.args):
                    self.iamdb_refused_write = True
                raise

        def _read_bytes(self, num_bytes: int) -> bytes:
            if self.iamdb_until is None:
                return super()._read_bytes(num_bytes)  # type: ignore[no-any-return]
            data = b""
            while len(data) < num_bytes:  # every recv gets only what is left of the deadline
                self._arm()
                failure = None
                try:
                    chunk = self._rfile.read1(num_bytes - len(data))
                except OSError as exc:
                    failure, chunk = f"({reason(exc)})", b""
                if not chunk:
                    self._force_close()
                    raise pymysql.err.OperationalError(
                        CR.CR_SERVER_LOST, f"Lost connection to MySQL server {failure or ''}"
                    )
                data += chunk
            return data

        def _write_bytes(self, data: bytes) -> None:
            if self.iamdb_until is not None:
                self._arm()
                self._write_timeout = self._current_timeout
            super()._write_bytes(data)

        def _arm(self) -> None:
            """The socket's timeout: what is left of the deadline (a read that finds it
            passed times out at once)."""
            assert self.iamdb_until is not None
            clock, deadline = self.iamdb_until
            left = max(0.001, deadline - clock())
            self._sock.settimeout(left)
            self._current_timeout = self._read_timeout = left

        def __exit__(self, exc_type: Any, *rest: Any) -> None:
            if not self.open:
                return
            if exc_type is None:
                self.commit()
                return
            with contextlib.suppress(Exception):  # never hides the exception on its way out
                self.rollback()

    for name in ("query", "next_result", "ping", "begin", "commit", "rollback", "select_db",
                 "autocommit", "show_warnings", "set_character_set"):  # fmt: skip
        setattr(Connection, name, _serialised(getattr(pymysql.connections.Connection, name)))
    return Connection


def _serialised(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` run with the connection's ``iamdb_busy`` lock held."""

    @functools.wraps(method)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self.iamdb_busy:
            return method(self, *args, **kwargs)

    return run


def reason(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc.strerror or type(exc).__name__)[:200]
