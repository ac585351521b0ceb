"""A TCP forwarder standing in for a DNS name: an endpoint's address that leads to one server.

:class:`Forwarder` listens on ``host:port`` and relays each new connection to the server it
points at now (a port on 127.0.0.1). :meth:`Forwarder.point_to` moves the name, as DNS moves a
cluster endpoint to the new writer: connections already made stay with their server, as a
client's socket does after the record changed. The server's side closing ends the flow (a
killed session reaches the client as it would through a load balancer or NAT).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading


class Forwarder:
    """Relay ``host:port`` to ``127.0.0.1:<target>``; a thread per flow."""

    def __init__(self, host: str, port: int, target: int) -> None:
        self._target = target
        self._server = socket.create_server((host, port))
        self.host, self.port = host, self._server.getsockname()[1]  # port 0: the one bound
        self._lock = threading.Lock()
        self._flows: list[tuple[socket.socket, socket.socket]] = []
        self._closed = False
        self._thread = threading.Thread(
            target=self._accept, name=f"devstack-forward-{host}:{port}", daemon=True
        )

    @property
    def target(self) -> int:
        """The port new connections go to."""
        return self._target

    def start(self) -> None:
        self._thread.start()

    def point_to(self, target: int) -> None:
        """Send new connections to ``127.0.0.1:target`` from now on."""
        with self._lock:
            self._target = target

    def stop(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._server.close()
        with self._lock:
            flows, self._flows = self._flows, []
        for pair in flows:
            _close(*pair)
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                target = self._target
            try:
                upstream = socket.create_connection(("127.0.0.1", target), timeout=5)
            except OSError:
                client.close()  # nothing listens there: the client sees a reset
                continue
            upstream.settimeout(None)
            self._relay(client, upstream)

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        """Carry one new flow, in a thread of its own (tests' forwarders carry it their way)."""
        with self._lock:
            self._flows.append((client, upstream))
        threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        ends = [client, upstream]
        try:
            while not self._closed:
                readable, _, _ = select.select(ends, [], [], 0.2)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is client else client).sendall(data)
        except OSError:
            return
        finally:
            _close(client, upstream)
            with self._lock:
                if (client, upstream) in self._flows:
                    self._flows.remove((client, upstream))


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.close()
