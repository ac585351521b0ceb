"""Fault injection for the integration tests: an HTTP proxy in front of moto, and a black hole.

:class:`FaultProxy` forwards every request to an upstream HTTP endpoint (devstack's moto:
STS, DynamoDB) unchanged (same method, path, headers including ``Host``, so SigV4 signatures
still verify), after applying the fault scripted for it: an STS-style ``Throttling`` error
(HTTP 400), a bare HTTP 500/503, or a delay before passing the request through. Faults are
queued (:meth:`FaultProxy.script`, one per request, in order); when the queue is empty the
``default`` applies (pass through unless a test set a persistent fault).

:class:`BlackHole` accepts TCP connections and never sends a byte: the case a connect
timeout exists for (a dead target behind a load balancer, a firewall that lets SYN through).
"""

from __future__ import annotations

import http.client
import socket
import threading
import urllib.parse
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

THROTTLING_BODY = (
    '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
    "<Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error>"
    "<RequestId>faultproxy-throttle</RequestId></ErrorResponse>"
)


@dataclass(frozen=True)
class Fault:
    """What to do with one request: answer ``status`` with ``body``, or wait ``delay`` then forward.

    ``status=None`` means pass through (after ``delay`` seconds, if any).
    """

    status: int | None = None
    body: str = ""
    delay: float = 0.0
    dribble: float = 0.0  # seconds between bytes: the answer trickles in, one byte at a time


PASS = Fault()
THROTTLE = Fault(400, THROTTLING_BODY)


def server_error(status: int = 500) -> Fault:
    return Fault(
        status, "<ErrorResponse><Error><Code>InternalFailure</Code></Error></ErrorResponse>"
    )


def slow(seconds: float) -> Fault:
    return Fault(delay=seconds)


def dribble(every: float) -> Fault:
    """Forward the request, then send the answer one byte every ``every`` seconds."""
    return Fault(dribble=every)


def dynamodb_error(code: str, status: int = 400) -> Fault:
    """A DynamoDB JSON 1.0 error answer (e.g. ``ThrottlingException``)."""
    body = f'{{"__type":"com.amazonaws.dynamodb.v20120810#{code}","message":"injected"}}'
    return Fault(status, body)


class FaultProxy:
    """Threaded HTTP proxy to ``upstream`` (``http://host:port``); start, use :attr:`url`, stop."""

    def __init__(self, upstream: str) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        assert parsed.scheme == "http" and parsed.hostname and parsed.port
        self.upstream = (parsed.hostname, parsed.port)
        self.default = PASS
        self.requests: list[tuple[str, Fault]] = []  # (X-Amz-Target or Action hint, fault applied)
        self._queue: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def script(self, *faults: Fault) -> None:
        """Queue faults for the next requests, one each, in order."""
        with self._lock:
            self._queue.extend(faults)

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="faultproxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases handlers sleeping in a delay
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next(self, hint: str) -> Fault:
        with self._lock:
            fault = self._queue.popleft() if self._queue else self.default
            self.requests.append((hint, fault))
            return fault

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self._handle()

            def do_GET(self) -> None:
                self._handle()

            def log_message(self, format: str, *args: Any) -> None:
                return  # quiet: request lines carry no secrets, but the test output is noise

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                hint = self.headers.get("X-Amz-Target") or body[:40].decode("ascii", "replace")
                fault = proxy._next(hint)
                if fault.delay and proxy._stopping.wait(fault.delay):
                    return
                if fault.status is not None:
                    self._answer(fault.status, fault.body.encode(), "text/xml")
                    return
                try:
                    status, headers, payload = proxy._forward(self.command, self.path, self, body)
                except OSError:
                    self._answer(502, b"upstream unreachable", "text/plain")
                    return
                content_type = headers.get("Content-Type", "text/xml")
                self._answer(status, payload, content_type, fault.dribble)

            def _answer(
                self, status: int, payload: bytes, content_type: str, every: float = 0.0
            ) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if not every:
                        self.wfile.write(payload)
                        return
                    self.wfile.flush()
                    for i in range(len(payload)):
                        if proxy._stopping.wait(every):
                            return
                        self.wfile.write(payload[i : i + 1])
                        self.wfile.flush()
                except OSError:
                    pass  # the client gave up (its deadline): nothing to tell it

        return Handler

    def _forward(
        self, method: str, path: str, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for key, value in handler.headers.items():
                if key.lower() not in ("connection", "keep-alive", "proxy-connection"):
                    conn.putheader(key, value)
            conn.endheaders(body)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()


class BlackHole:
    """A TCP port that accepts connections and never answers (holds them until :meth:`stop`)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="blackhole", daemon=True)

    def start(self) -> BlackHole:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        for conn in self._held:
            conn.close()
        self._sock.close()

    def __enter__(self) -> BlackHole:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._held.append(conn)
            self.accepted += 1
