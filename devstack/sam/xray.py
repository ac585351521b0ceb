"""A local X-Ray daemon: the UDP socket a traced function sends its segments to.

On Lambda, a function with ``Tracing: Active`` gets ``AWS_XRAY_DAEMON_ADDRESS`` and a sampled
trace header, and the X-Ray SDK sends each finished subsegment as one UDP datagram
(``{"format": "json", "version": 1}`` then a newline and the document). This collects them,
so tests can see what a handler traced.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

_HEADER = {"format": "json", "version": 1}


class XRayDaemon:
    """Receives X-Ray documents on 127.0.0.1 (a free UDP port) until :meth:`close`."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._lock = threading.Lock()
        self._documents: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._receive, name="xray-daemon", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        """``127.0.0.1:port``, the value of ``AWS_XRAY_DAEMON_ADDRESS``."""
        host, port = self._sock.getsockname()[:2]
        return f"{host}:{port}"

    @property
    def documents(self) -> list[dict[str, Any]]:
        """Every segment or subsegment document received so far, in arrival order."""
        with self._lock:
            return list(self._documents)

    def wait_for(
        self, wanted: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 5.0
    ) -> list[dict[str, Any]]:
        """The documents, once ``wanted(documents)`` holds or ``timeout_s`` passed (UDP lags)."""
        deadline = time.monotonic() + timeout_s
        while not wanted(docs := self.documents) and time.monotonic() < deadline:
            time.sleep(0.02)
        return docs

    def close(self) -> None:
        self._sock.close()
        self._thread.join(timeout=2)

    def _receive(self) -> None:
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:  # closed
                return
            header, _, body = data.decode("utf-8", "replace").partition("\n")
            try:
                if json.loads(header) != _HEADER:
                    continue
                document = json.loads(body)
            except ValueError:
                continue
            with self._lock:
                self._documents.append(document)
