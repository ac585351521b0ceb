"""HTTP/1.1 for iamdb's AWS calls: one kept-alive connection per endpoint, waits bounded.

``http.client`` applies its timeout to each socket operation, so an endpoint that dribbles
its answer a byte at a time never trips it. Here the connect, the TLS handshake, the send and
every receive get only the time left until the caller's deadline: a request returns, or
raises :class:`TransportError`, by then. (Name resolution is the one wait the socket API
cannot bound; AWS endpoints resolve from the local resolver's cache.)

A request that is sent but not waited for (:meth:`HttpConnection.send`) leaves its answer on
the connection; the next request reads and drops it first.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from typing import NamedTuple

from iamdb._net import tls_context
from iamdb.errors import ConnectError

_MAX_HEAD = 64 * 1024
_MAX_BODY = 4 * 1024 * 1024
_CHUNK = 64 * 1024


class TransportError(ConnectError):
    """The request could not be completed: no connection, timeout, or a broken answer.

    ``sent`` says whether the request may have reached the server (and taken effect).
    """

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class Response(NamedTuple):
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


class HttpConnection:
    """One kept-alive connection to ``scheme://host:port``, reopened when needed. Thread-safe."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        *,
        clock: Callable[[], float],
        environ: Mapping[str, str],
    ) -> None:
        self.scheme, self.host, self.port = scheme, host, port
        self._clock = clock
        self._environ = environ
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._pending = 0  # answers of sent requests still to be read and dropped

    def request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, deadline: float
    ) -> Response:
        """Send a request and read its answer, both before ``deadline`` (clock seconds).

        A connection the server closed while idle is reopened once, transparently.
        """
        data = _encode(method, path, headers, body)
        with self._lock:
            for attempt in (1, 2):
                reused = self._ready(deadline)
                try:
                    self._sendall(data, deadline)
                    return self._read(deadline, method)
                except TransportError as exc:
                    self.close_locked()
                    if attempt == 2 or not reused or exc.sent:
                        raise
            raise AssertionError("unreachable")  # pragma: no cover

    def send(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, deadline: float
    ) -> None:
        """Send a request without waiting for its answer (read and dropped later)."""
        data = _encode(method, path, headers, body)
        with self._lock:
            self._ready(deadline)
            try:
                self._sendall(data, deadline)
            except TransportError:
                self.close_locked()
                raise
            self._pending += 1

    def open(self, deadline: float) -> None:
        """Connect now unless a usable connection is open."""
        with self._lock:
            self._ready(deadline)

    def close(self) -> None:
        with self._lock:
            self.close_locked()

    def close_locked(self) -> None:
        sock, self._sock, self._pending = self._sock, None, 0
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    # -- internals (lock held) -------------------------------------------------------

    def _ready(self, deadline: float) -> bool:
        """Open the connection unless a usable one exists; True when reusing one."""
        if self._sock is not None:
            try:
                while self._pending and self._sock is not None:
                    self._pending -= 1
                    self._read(deadline, "POST")
            except TransportError:
                self.close_locked()
            if self._sock is not None and not _readable(self._sock):
                return True
            self.close_locked()  # the server closed it, or sent something unasked
        self._sock = self._open(deadline)
        return False

    def _open(self, deadline: float) -> socket.socket:
        where = f"{self.host}:{self.port}"
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self._left(deadline))
        except OSError as exc:
            raise TransportError(f"cannot connect to {where}: {_reason(exc)}", sent=False) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.scheme == "https":
                sock = tls_context(self._environ).wrap_socket(
                    sock, server_hostname=self.host, do_handshake_on_connect=False
                )
                sock.settimeout(self._left(deadline))
                sock.do_handshake()
        except (OSError, ValueError) as exc:
            sock.close()
            raise TransportError(f"TLS with {where} failed: {_reason(exc)}", sent=False) from None
        return sock

    def _left(self, deadline: float) -> float:
        left = deadline - self._clock()
        if left <= 0:
            raise TransportError(f"no time left for {self.host}:{self.port}", sent=False)
        return left

    def _sendall(self, data: bytes, deadline: float) -> None:
        assert self._sock is not None
        try:
            self._sock.settimeout(self._left(deadline))
            self._sock.sendall(data)
        except OSError as exc:
            raise TransportError(
                f"sending to {self.host}:{self.port} failed: {_reason(exc)}", sent=True
            ) from None

    def _read(self, deadline: float, method: str) -> Response:
        reader = _Reader(self, deadline)
        status = 100
        while 100 <= status < 200:  # interim answers (100 Continue...) precede the final one
            head = reader.until(b"\r\n\r\n", _MAX_HEAD)
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise reader.broken("not an HTTP/1.x status line")
            status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = reader.chunked()
        elif "content-length" in headers:
            length = headers["content-length"]
            if not length.isdigit() or int(length) > _MAX_BODY:
                raise reader.broken("bad Content-Length")
            body = reader.exactly(int(length))
        else:
            body = reader.to_close()
            self.close_locked()
        if headers.get("connection", "").lower() == "close":
            self.close_locked()
        return Response(status, headers, body)


class _Reader:
    """Buffered reads from one connection's socket, each bounded by the deadline."""

    def __init__(self, conn: HttpConnection, deadline: float) -> None:
        assert conn._sock is not None
        self._conn, self._sock, self._deadline = conn, conn._sock, deadline
        self._buf = b""
        self._got_any = False

    def broken(self, why: str) -> TransportError:
        return TransportError(
            f"broken answer from {self._conn.host}:{self._conn.port}: {why}", sent=True
        )

    def _more(self) -> bool:
        try:
            self._sock.settimeout(self._conn._left(self._deadline))
            data = self._sock.recv(_CHUNK)
        except TransportError:
            raise TransportError(
                f"no complete answer from {self._conn.host}:{self._conn.port} in time", sent=True
            ) from None
        except OSError as exc:
            raise TransportError(
                f"reading from {self._conn.host}:{self._conn.port} failed: {_reason(exc)}",
                # Nothing back at all on a reused connection: the server closed it unseen.
                sent=self._got_any or not isinstance(exc, ConnectionResetError),
            ) from None
        if not data:
            return False
        self._got_any = True
        self._buf += data
        return True

    def until(self, marker: bytes, limit: int) -> bytes:
        while True:
            found = self._buf.find(marker)
            if found >= 0:
                head, self._buf = self._buf[:found], self._buf[found + len(marker) :]
                return head
            if len(self._buf) > limit:
                raise self.broken("header too long")
            if not self._more():
                if self._got_any:
                    raise self.broken("connection closed mid-answer")
                raise TransportError(
                    f"{self._conn.host}:{self._conn.port} closed the connection", sent=False
                )

    def exactly(self, n: int) -> bytes:
        while len(self._buf) < n:
            if not self._more():
                raise self.broken("connection closed mid-answer")
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def chunked(self) -> bytes:
        body = b""
        while True:
            size_line = self.until(b"\r\n", 1024).split(b";")[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise self.broken("bad chunk size") from None
            if size == 0:
                while self.until(b"\r\n", _MAX_HEAD):  # trailers, up to the empty line
                    pass
                return body
            if len(body) + size > _MAX_BODY:
                raise self.broken("answer too large")
            body += self.exactly(size)
            self.exactly(2)

    def to_close(self) -> bytes:
        while self._more():
            if len(self._buf) > _MAX_BODY:
                raise self.broken("answer too large")
        return self._buf


def _encode(method: str, path: str, headers: Mapping[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _readable(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read (a close, or an unasked answer)."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR)
    if not poller.poll(0):
        return False
    if not isinstance(sock, ssl.SSLSocket):
        return True
    # TLS 1.3 session tickets arrive after the handshake: bytes on the socket that are no
    # answer and no close. Read them; only application data or the end count.
    sock.setblocking(False)  # every later wait sets its own timeout again
    try:
        sock.recv(1)
    except ssl.SSLWantReadError:
        return False
    except OSError:
        pass
    return True


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text)[:200]
