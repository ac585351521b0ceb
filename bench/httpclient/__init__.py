"""iamdb's ``HttpConnection`` on the standard library's ``http.client``: the alternative
:mod:`bench.http` measures against ``iamdb._aws.http``.

``http.client`` over a socket whose timeout is re-armed to the time left before every
operation (its own timeout is per socket operation), written to pass the tests of
``iamdb._aws.http``: it checks headers before ``putheader`` (whose ValueError quotes the value,
the session token), re-checks what ``http.client`` reads loosely (``int()`` lengths, chunk
sizes, status up to 999, other transfer codings), bounds the body, keeps one buffered reader
per connection (answers sent ahead), and maps ``HTTPException``/``ValueError``/``OSError`` to
TransportError. It reuses ``iamdb._aws.http``'s TransportError, Response, header check and idle
check (:func:`bench.http.code_lines` counts them on its side).

As a pytest plugin it takes ``iamdb._aws.http.HttpConnection``'s place before any test module
imports it: ``python -m pytest -p bench.httpclient tests/unit/aws/http tests/unit/aws/client``.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any

from iamdb._aws.http import Response, TransportError, _encode, _readable
from iamdb._aws.net import connect, reason
from iamdb.errors import ConfigError

MAX_BODY = 4 * 1024 * 1024
_HEX = b"0123456789abcdefABCDEF"
_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_CTL = bytes(range(32)).replace(b"\t", b"") + b"\x7f"
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class _Broken(Exception):
    pass


class _KeptReader(io.BufferedReader):
    """One buffered reader per connection: an answer's close must not drop the next's bytes."""

    def close(self) -> None:
        pass


class _TimedSocket:
    """What http.client reads and writes through: each operation gets the time left."""

    def __init__(self, sock: socket.socket, clock: Callable[[], float]) -> None:
        self.sock, self.clock, self.deadline, self.sent = sock, clock, 0.0, 0
        self.reader = _KeptReader(socket.SocketIO(self, "rb"))  # type: ignore[arg-type]

    def _arm(self) -> None:
        left = self.deadline - self.clock()
        if left <= 0:
            raise TimeoutError("timed out")
        self.sock.settimeout(left)

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        self._arm()
        return self.sock.recv_into(buffer, nbytes)

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            self._arm()
            done = self.sock.send(view)
            self.sent += done
            view = view[done:]

    def makefile(self, mode: str) -> io.BufferedReader:
        return self.reader

    def _decref_socketios(self) -> None:
        pass

    def close(self) -> None:
        self.sock.close()


class _Answer(http.client.HTTPResponse):
    def _read_next_chunk_size(self) -> int:  # a private method: int(line, 16) reads "0x1_0"
        line = self.fp.readline(1025)
        size = line.split(b";", 1)[0].strip(b" \t\r\n")
        if len(line) > 1024 or not 0 < len(size) <= 16 or size.translate(None, _HEX):
            raise _Broken("bad chunk size")
        return int(size, 16)


class _Client(http.client.HTTPConnection):
    response_class = _Answer


class StdlibConnection:
    """:class:`iamdb._aws.http.HttpConnection` on http.client. Thread-safe."""

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
        self._cafile = (environ.get("AWS_CA_BUNDLE") or "").strip() or None
        self._lock = threading.Lock()
        self._client: _Client | None = None
        self._pending = 0

    def request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, deadline: float
    ) -> Response:
        checked = _encode(method, path, headers, b"")  # putheader's ValueError quotes values
        if isinstance(checked, ConfigError):
            del headers
            raise checked
        del checked
        outcome = self._run(self._exchange, method, path, headers, body, deadline)
        del headers
        if isinstance(outcome, TransportError):
            raise outcome
        return outcome

    def send(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, deadline: float
    ) -> None:
        checked = _encode(method, path, headers, b"")
        if isinstance(checked, ConfigError):
            del headers
            raise checked
        del checked
        outcome = self._run(self._post, method, path, headers, body, deadline)
        del headers
        if isinstance(outcome, TransportError):
            raise outcome

    def open(self, deadline: float) -> None:
        outcome = self._run(self._ready, deadline)
        if isinstance(outcome, TransportError):
            raise outcome

    def close(self) -> None:
        with self._lock:
            self.close_locked()

    def close_locked(self) -> None:
        client, self._client, self._pending = self._client, None, 0
        if client is not None and client.sock is not None:
            with contextlib.suppress(OSError):
                client.sock.close()

    def _run(self, step: Callable[..., Any], *args: Any) -> Any:
        start = self._clock()
        with self._lock:
            try:
                return step(*args)
            except (http.client.HTTPException, OSError, ValueError, _Broken) as exc:
                why, sent = _why(exc), getattr(exc, "sent", True)
            self.close_locked()
        spent = self._clock() - start
        return TransportError(f"{why} ({self.host}:{self.port}, {spent:.2f} s spent)", sent=sent)

    def _exchange(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, deadline: float
    ) -> Response:
        for attempt in (1, 2):
            reused = self._ready(deadline)
            try:
                self._put(method, path, headers, body, deadline)
                return self._answer(method, deadline)
            except (http.client.HTTPException, OSError, ValueError, _Broken) as exc:
                failure = exc
            self.close_locked()
            sent = getattr(failure, "sent", True)
            if attempt == 2 or not reused or (sent and method not in _IDEMPOTENT):
                break
        raise failure

    def _post(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, deadline: float
    ) -> None:
        self._ready(deadline)
        self._put(method, path, headers, body, deadline)
        self._pending += 1

    def _ready(self, deadline: float) -> bool:
        if self._client is not None:
            try:
                while self._pending and self._client is not None:
                    self._pending -= 1
                    self._answer("POST", deadline)
            except (http.client.HTTPException, OSError, ValueError, _Broken):
                self.close_locked()
            if self._client is not None and not _readable(self._timed().sock):
                return True
            self.close_locked()
        opened = connect(
            self.host,
            self.port,
            tls=self.scheme == "https",
            cafile=self._cafile,
            deadline=deadline,
            clock=self._clock,
        )
        if isinstance(opened, str):
            failure = OSError(opened)
            failure.sent = False  # type: ignore[attr-defined]
            raise failure
        self._client = _Client(self.host, self.port)
        self._client.sock = _TimedSocket(opened, self._clock)  # type: ignore[assignment]
        return False

    def _timed(self) -> _TimedSocket:
        assert self._client is not None
        return self._client.sock  # type: ignore[return-value]

    def _put(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, deadline: float
    ) -> None:
        assert self._client is not None
        timed = self._timed()
        timed.deadline, timed.sent = deadline, 0
        # A request may go out before the last answer is read (send()): http.client refuses
        # (CannotSendRequest) unless its private state is reset.
        self._client._HTTPConnection__state = http.client._CS_IDLE  # type: ignore[attr-defined]
        self._client._HTTPConnection__response = None  # type: ignore[attr-defined]
        try:
            self._client.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                self._client.putheader(name, value)
            self._client.putheader("content-length", str(len(body)))
            self._client.endheaders(body)
        except OSError as exc:
            failure = OSError(f"sending to {self.host}:{self.port} failed: {reason(exc)}")
        else:
            return
        failure.sent = timed.sent > 0  # type: ignore[attr-defined]
        raise failure

    def _answer(self, method: str, deadline: float) -> Response:
        try:
            return self._read(method, deadline)
        except TimeoutError:
            pass
        raise OSError(f"no complete answer from {self.host}:{self.port} in time (timed out)")

    def _read(self, method: str, deadline: float) -> Response:
        timed = self._timed()
        timed.deadline = deadline
        while True:
            answer = _Answer(timed, method=method)  # type: ignore[arg-type]
            answer.begin()
            if not 100 <= answer.status <= 599 or answer.status == 101:
                raise _Broken("bad status")
            if answer.status >= 200:
                break
        fields = answer.headers
        lengths, codings = fields.get_all("content-length"), fields.get_all("transfer-encoding")
        if codings and (lengths or ",".join(codings).strip().lower() != "chunked"):
            raise _Broken("Transfer-Encoding other than chunked, or with Content-Length")
        sizes = [n.strip(" \t") for v in lengths or [] for n in v.split(",")]
        if not all(n.isascii() and n.isdigit() and len(n) <= 10 for n in sizes):
            raise _Broken("bad Content-Length")
        if len({int(n) for n in sizes}) > 1 or any(int(n) > MAX_BODY for n in sizes):
            raise _Broken("bad Content-Length")
        headers: dict[str, str] = {}
        for name, value in fields.items():
            raw = value.encode("latin-1", "replace")
            if name.encode("latin-1", "replace").translate(None, _TCHAR) or len(
                raw.translate(None, _CTL)
            ) != len(raw):
                raise _Broken("a malformed header line")
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        body = answer.read() if sizes else answer.read(MAX_BODY + 1)  # a checked length, or
        if len(body) > MAX_BODY:  # chunked or to the close: the bound read in one buffer
            raise _Broken("answer too large")
        if answer.will_close:
            self.close_locked()
        return Response(answer.status, headers, body)


def _why(exc: BaseException) -> str:
    if isinstance(exc, _Broken):
        return f"broken answer: {exc}"
    if isinstance(exc, http.client.IncompleteRead | http.client.RemoteDisconnected):
        return "connection closed mid-answer"
    if isinstance(exc, http.client.HTTPException | ValueError):
        return f"broken answer: {type(exc).__name__}"
    if type(exc) is OSError and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]  # this module's own: connect(), sending, no complete answer
    return f"reading failed: {reason(exc)}"


def pytest_configure(config: Any) -> None:
    """As a pytest plugin (``-p bench.httpclient``): the tests get this variant."""
    import iamdb._aws.http

    iamdb._aws.http.HttpConnection = StdlibConnection  # type: ignore[misc]
