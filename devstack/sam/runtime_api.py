"""A small Lambda Runtime API server: what a runtime client such as ``awslambdaric`` talks to.

Lambda's runtime client long-polls ``GET /2018-06-01/runtime/invocation/next`` for the next
event, then posts the handler's result to ``.../invocation/<id>/response`` or its error to
``.../invocation/<id>/error``; a handler that cannot even be imported is reported to
``.../runtime/init/error``. A SnapStart function's runtime (``AWS_LAMBDA_INITIALIZATION_TYPE``
``snap-start``) asks ``GET .../runtime/restore/next`` after init, where Lambda takes the
snapshot; here the restore follows at once, so the runtime's after-restore hooks run before
the first event (their failure is reported to ``.../restore/error``). This server speaks
HTTP/1.1 (awslambdaric's C client fails on HTTP/1.0 replies), hands out one queued event per
``next`` and lets the caller wait for the outcome with a timeout, so nothing here can hang.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from devstack.httpserver import Server

PREFIX = "/2018-06-01/runtime"


@dataclass
class Invocation:
    """One event on its way through the runtime; ``outcome`` is set once the runtime answers."""

    event: bytes
    deadline_ms: int
    function_arn: str
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: float | None = None  # monotonic time the runtime picked it up
    finished: float | None = None
    outcome: str | None = None  # "response" or "error"
    body: bytes = b""
    error_type: str | None = None
    trace_header: str = ""  # Lambda-Runtime-Trace-Id, set at pickup
    done: threading.Event = field(default_factory=threading.Event)


class RuntimeApi:
    """Serve the Runtime API on 127.0.0.1 (a free port) until :meth:`stop`."""

    def __init__(self, *, sampled: bool = False) -> None:
        """``sampled``: the function has ``Tracing: Active`` (its trace headers say Sampled=1)."""
        self._sampled = sampled
        self._pending: queue.Queue[Invocation | None] = queue.Queue()
        self._by_id: dict[str, Invocation] = {}
        self._lock = threading.Lock()
        self.init_error: dict[str, Any] | None = None
        self.init_error_event = threading.Event()
        self.polled = threading.Event()  # the runtime asked for work at least once (init done)
        self._server = Server(("127.0.0.1", 0), _handler_class(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="runtime-api", daemon=True
        )

    @property
    def address(self) -> str:
        """``host:port``, the value of ``AWS_LAMBDA_RUNTIME_API``."""
        return f"127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._pending.put(None)  # wakes a waiting `next`, which then answers 500
        self._server.shutdown()
        self._server.server_close()

    def trace_header(self) -> str:
        """A new invocation's ``_X_AMZN_TRACE_ID``, as Lambda's X-Ray integration makes it."""
        root = f"1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}"
        return f"Root={root};Parent={uuid.uuid4().hex[:16]};Sampled={int(self._sampled)}"

    def submit(self, event: bytes, *, timeout_s: float, function_arn: str) -> Invocation:
        """Queue ``event``; the runtime gets it with a deadline ``timeout_s`` after pickup."""
        inv = Invocation(event, 0, function_arn)
        inv.deadline_ms = int((time.time() + timeout_s) * 1000)  # refreshed at pickup
        with self._lock:
            self._by_id[inv.request_id] = inv
        self._pending.put(inv)
        return inv

    # -- called from the HTTP handler threads --------------------------------------------------

    def next_invocation(self, timeout_s: float = 3600.0) -> Invocation | None:
        self.polled.set()
        try:
            return self._pending.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def finish(self, request_id: str, outcome: str, body: bytes, error_type: str | None) -> bool:
        with self._lock:
            inv = self._by_id.pop(request_id, None)
        if inv is None or inv.done.is_set():
            return False
        inv.outcome, inv.body, inv.error_type = outcome, body, error_type
        inv.finished = time.monotonic()
        inv.done.set()
        return True

    def record_init_error(self, body: bytes, error_type: str | None) -> None:
        try:
            parsed = json.loads(body or b"{}")
        except ValueError:
            parsed = {"errorMessage": body.decode(errors="replace")}
        if not isinstance(parsed, dict):
            parsed = {"errorMessage": str(parsed)}
        parsed.setdefault("errorType", error_type or "Runtime.Unknown")
        self.init_error = parsed
        self.init_error_event.set()


def _handler_class(api: RuntimeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # awslambdaric's client needs HTTP/1.1 replies

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def setup(self) -> None:
            super().setup()
            # Headers and body leave in separate writes: without this, Nagle + delayed ACKs
            # add about 40 ms to every exchange.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_GET(self) -> None:
            if self.path == f"{PREFIX}/restore/next":  # SnapStart: snapshot, then restore
                self._reply(200, {})
                return
            if self.path != f"{PREFIX}/invocation/next":
                self._reply(404, {"errorMessage": f"unknown path {self.path}"})
                return
            inv = api.next_invocation()
            if inv is None:
                self._reply(500, {"errorMessage": "runtime API stopping"})
                return
            inv.started = time.monotonic()
            inv.trace_header = api.trace_header()
            timeout_ms = inv.deadline_ms - int(time.time() * 1000)
            inv.deadline_ms = int(time.time() * 1000) + max(timeout_ms, 0)
            headers = {
                "Lambda-Runtime-Aws-Request-Id": inv.request_id,
                "Lambda-Runtime-Deadline-Ms": str(inv.deadline_ms),
                "Lambda-Runtime-Invoked-Function-Arn": inv.function_arn,
                "Lambda-Runtime-Trace-Id": inv.trace_header,
            }
            self._send(200, inv.event, headers)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            error_type = self.headers.get("Lambda-Runtime-Function-Error-Type")
            parts = self.path[len(PREFIX) :].strip("/").split("/")
            if parts in (["init", "error"], ["restore", "error"]):
                api.record_init_error(body, error_type)
                self._reply(202, {"status": "OK"})
            elif len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
                if api.finish(parts[1], parts[2], body, error_type):
                    self._reply(202, {"status": "OK"})
                else:
                    self._reply(400, {"errorMessage": "unknown or finished request id"})
            else:
                self._reply(404, {"errorMessage": f"unknown path {self.path}"})

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            self._send(status, json.dumps(payload).encode(), {})

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler
