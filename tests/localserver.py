"""Small HTTP servers of our own on real sockets, for the tests of iamdb's AWS path.

:class:`LocalServer` listens on loopback and runs ``handler(conn, server)`` on a thread per
accepted connection, optionally after a TLS handshake: a handler can answer like DynamoDB or
STS, answer nothing, dribble, or drop the connection halfway. :func:`read_request` captures a
request exactly as it arrived (header names in their case and order, the body's bytes).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from devstack.tls import TlsFiles

Handler = Callable[[socket.socket, "LocalServer"], None]


@dataclass(frozen=True)
class Captured:
    """One request as the server received it."""

    method: str
    path: str
    headers: list[tuple[str, str]]  # as sent: names in their case, in their order
    body: bytes

    def header(self, name: str) -> str | None:
        found = [v for k, v in self.headers if k.lower() == name.lower()]
        assert len(found) <= 1, f"header {name} sent {len(found)} times"
        return found[0] if found else None


def read_request(conn: socket.socket) -> Captured | None:
    """Read one request (``Content-Length`` bodies); None when the peer closed first."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return None
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, version = lines[0].split(" ")
    assert version == "HTTP/1.1", lines[0]
    headers = [(k, v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    length = int(next((v for k, v in headers if k.lower() == "content-length"), "0"))
    while len(rest) < length:
        data = conn.recv(65536)
        if not data:
            return None
        rest += data
    assert len(rest) == length, "the client sent more than its Content-Length"
    return Captured(method, path, headers, rest)


def response(
    status: int, body: bytes = b"", headers: Iterable[tuple[str, str]] = (), *, length: bool = True
) -> bytes:
    """An HTTP/1.1 answer; ``Content-Length`` unless ``length`` is False."""
    lines = [f"HTTP/1.1 {status} X", *(f"{k}: {v}" for k, v in headers)]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class LocalServer:
    """A TCP (or TLS) server on loopback. Use as a context manager."""

    handler: Handler
    tls: ssl.SSLContext | None = None
    host: str = "127.0.0.1"
    accepted: int = 0
    captured: list[Captured] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.host, 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def __enter__(self) -> LocalServer:
        self._acceptor.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (Linux)
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()
        self._acceptor.join(5)
        for thread in self._threads:
            thread.join(5)

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn.settimeout(10)
                conn = self.tls.wrap_socket(conn, server_side=True)
                conn.settimeout(None)
                with self._lock:
                    self._conns.append(conn)
            self.handler(conn, self)
        except (OSError, ssl.SSLError):
            pass  # the client went away or a test stopped the server: expected here
        except BaseException as exc:  # an assertion inside a handler: the test reports it
            self.errors.append(exc)
        finally:
            with contextlib.suppress(OSError):
                conn.close()


def answering(
    answer: Callable[[Captured], bytes], *, keep_alive: bool = True
) -> Callable[[socket.socket, LocalServer], None]:
    """A handler that captures each request and sends ``answer(request)``."""

    def handle(conn: socket.socket, server: LocalServer) -> None:
        while True:
            request = read_request(conn)
            if request is None:
                return
            server.captured.append(request)
            conn.sendall(answer(request))
            if not keep_alive:
                return

    return handle


def tls_context(files: TlsFiles) -> ssl.SSLContext:
    """A server context presenting ``files`` (made by :func:`devstack.tls.make_tls`)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(files.cert), str(files.key))
    return context
