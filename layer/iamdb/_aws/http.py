"""HTTP/1.1 for iamdb's AWS calls: one kept-alive connection per endpoint, waits bounded.

Every wait gets only the time left until the caller's deadline: the connect (all of the
name's addresses together, :func:`iamdb._aws.net.connect`), the TLS handshake, each send and each
receive. A request returns, or raises :class:`TransportError`, by then: an endpoint that
dribbles its answer a byte at a time cannot stretch it.

Answers are read strictly (:mod:`iamdb._aws.http_answer`): breaking a rule of RFC 9112, or past
64 KiB of head or 4 MiB of body, an answer is a TransportError, never a ValueError.

No secret reaches an error: a request that HTTP/1.1 cannot carry is refused by name before
anything is encoded (``UnicodeEncodeError.object`` would be the whole head, signed headers
and all); the public methods drop the headers, and raise only TransportErrors made after the
work is done, with no traceback into the frames that held the request or the answer so far.

Why not ``http.client`` over a socket whose timeout is re-armed before each operation
(``python -m bench.http``; CPython 3.11, medians): importing it costs 16.8 ms of cold start
against 2.5 ms for this module (``email.parser`` and the rest), a signed POST on a kept-alive
connection 313 us against 168 us. Written to pass the same tests (``bench.httpclient``), it is 284
lines of code against 330 here (with ``_http_answer``), leans on private ``http.client``
state, and still fails 18 to 20 of them: its buffered reader hides an unasked answer or a 304's
stray body from the idle check (the next request reads it), it takes a head cut short for a
whole answer, accepts obs-fold, bare CR and malformed header lines, and refuses LF-only
chunked bodies.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from typing import NamedTuple, TypeVar

from iamdb._aws.http_answer import LOST, NETWORK, SLOW, TRUST, Failure, Reader
from iamdb._aws.net import connect, reason
from iamdb.errors import ConfigError, ConnectError

T = TypeVar("T")

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})  # RFC 9110 9.2.2
_NOT_TCHAR = str.maketrans(
    "", "", "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


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
        # Read once: no frame below keeps ``environ`` (os.environ holds the secret key).
        self._cafile = (environ.get("AWS_CA_BUNDLE") or "").strip() or None
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._pending = 0  # answers of sent requests still to be read and dropped

    def request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, deadline: float
    ) -> Response:
        """Send a request and read its answer, both before ``deadline`` (clock seconds).

        When a kept-alive connection fails under it, the request is sent again on a new one
        only where that is safe (:meth:`_exchange`).
        """
        data = _encode(method, path, headers, body)
        del headers  # this frame is in the traceback of what is raised below
        if isinstance(data, ConfigError):
            raise data
        outcome = self._run(self._exchange, data, method, deadline)
        del data
        if isinstance(outcome, TransportError):
            raise outcome
        return outcome

    def send(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, deadline: float
    ) -> None:
        """Send a request without waiting for its answer (read and dropped later)."""
        data = _encode(method, path, headers, body)
        del headers
        if isinstance(data, ConfigError):
            raise data
        failure = self._run(self._post, data, deadline)
        del data
        if failure is not None:
            raise failure

    def open(self, deadline: float) -> None:
        """Connect now unless a usable connection is open."""
        outcome = self._run(self._ready, deadline)
        if isinstance(outcome, TransportError):
            raise outcome

    def close(self) -> None:
        with self._lock:
            self.close_locked()

    def close_locked(self) -> None:
        sock, self._sock, self._pending = self._sock, None, 0
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    # -- internals (lock held) -------------------------------------------------------

    def _run(self, step: Callable[..., T], *args: object) -> T | TransportError:
        """``step(*args)`` under the lock, or the TransportError its failure becomes, made
        here after the fact: no traceback leads into the frames that held the request."""
        start = self._clock()
        with self._lock:
            try:
                return step(*args)
            except Failure as exc:
                why, hint, sent = exc.why, exc.hint, exc.sent
            self.close_locked()
        spent = self._clock() - start
        return TransportError(f"{why} ({spent:.2f} s spent; {hint})", sent=sent)

    def _exchange(self, data: bytes, method: str, deadline: float) -> Response:
        """Send and read; once more on a new connection when a kept-alive one failed under a
        request that may be sent again.

        That is one that certainly did not reach the server (nothing of it was sent), or one
        that HTTP makes harmless to repeat (GET: the container credentials). A POST whose
        answer was lost may have taken effect: a conditional UpdateItem that took a slot in
        the fleet queue must not take a second one, and AssumeRole twice is a waste. Its
        caller decides whether to call again (:func:`iamdb._aws.client.retryable`).
        """
        for attempt in (1, 2):
            reused = self._ready(deadline)
            try:
                self._send(data, deadline)
                return self._read(deadline, method)
            except Failure as exc:
                failure = exc
            self.close_locked()
            if attempt == 2 or not reused or (failure.sent and method not in _IDEMPOTENT):
                break
        raise failure

    def _post(self, data: bytes, deadline: float) -> None:
        self._ready(deadline)
        self._send(data, deadline)
        self._pending += 1

    def _ready(self, deadline: float) -> bool:
        """Open the connection unless a usable one exists; True when reusing one."""
        if self._sock is not None:
            try:
                while self._pending and self._sock is not None:
                    self._pending -= 1
                    self._read(deadline, "POST")
            except Failure:
                self.close_locked()
            if self._sock is not None and not _readable(self._sock):
                return True
            self.close_locked()  # the server closed it, or sent something unasked
        opened = connect(
            self.host,
            self.port,
            tls=self.scheme == "https",
            cafile=self._cafile,
            deadline=deadline,
            clock=self._clock,
        )
        if isinstance(opened, str):
            hint = NETWORK if opened.startswith("cannot") else TRUST
            raise Failure(opened, SLOW if "timed out" in opened else hint, sent=False)
        self._sock = opened
        return False

    def _send(self, data: bytes, deadline: float) -> None:
        """All of ``data``, each send given only the time left (a TLS socket's ``sendall``
        waits up to its timeout for every record)."""
        assert self._sock is not None
        view, done, why = memoryview(data), 0, ""
        while done < len(view) and not why:
            left = deadline - self._clock()
            if left <= 0:
                why = "timed out"
                break
            try:
                self._sock.settimeout(left)
                done += self._sock.send(view[done:])
            except OSError as exc:
                why = reason(exc)
        if why:
            where = f"{self.host}:{self.port}"
            hint = SLOW if why == "timed out" else LOST
            raise Failure(f"sending to {where} failed: {why}", hint, sent=done > 0)

    def _read(self, deadline: float, method: str) -> Response:
        assert self._sock is not None
        reader = Reader(self._sock, f"{self.host}:{self.port}", deadline, self._clock)
        status, keep, fields = reader.head()
        while status < 200:  # interim answers (100 Continue...) precede the final one
            if status == 101:
                raise reader.broken("101 Switching Protocols, unasked")
            status, keep, fields = reader.head()
        body, framed = reader.body(method, status, fields)
        if not (keep and framed) or reader.rest:
            self.close_locked()  # closed by the server, or out of step with it (bytes unasked)
        return Response(status, fields, body)


def _encode(method: str, path: str, headers: Mapping[str, str], body: bytes) -> bytes | ConfigError:
    """The request's bytes; or, when a part is not what HTTP/1.1 carries (a name that is no
    token, a value of other than printable ASCII: no header injection), the ConfigError to
    raise, naming the part, never showing the value. Never raises."""
    if not (_token(method) and path.isascii() and path.isprintable() and " " not in path):
        return ConfigError("request", "a method or path HTTP/1.1 cannot carry")
    lines = [f"{method} {path} HTTP/1.1"]
    for name, value in headers.items():
        if not _token(name):
            return ConfigError("header", f"{name!r:.40} is not an HTTP header name")
        if not (value.isascii() and value.isprintable()):
            return ConfigError(
                f"{name} header",
                "its value has characters HTTP/1.1 cannot carry (printable ASCII only; the "
                "value is not shown): check where it comes from (credentials, tokens)",
            )
        lines.append(f"{name}: {value}")
    lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _token(text: str) -> bool:
    return bool(text) and text.isascii() and not text.translate(_NOT_TCHAR)


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
