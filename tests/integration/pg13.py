"""A PostgreSQL 13 in front of devstack's PostgreSQL 15: what an older server does with a startup
option it does not know.

PostgreSQL < 14 has no ``idle_session_timeout``. Given it as a startup option (``options=-c
idle_session_timeout=...``), such a server authenticates the login first, then refuses the session:
``FATAL: unrecognized configuration parameter "idle_session_timeout"`` (SQLSTATE 42704). No
PostgreSQL 13 installs here, so :class:`Pg13` plays one: a loopback relay that terminates the
client's TLS with devstack's certificate, takes the option out of the startup packet, logs in to the
real server over TLS (so the token is verified for real, and counted), and when the client asked
for the option, answers the server's ``AuthenticationOk`` with that error and closes, as 13 would.
Other logins are relayed unchanged. :attr:`Pg13.asked` records, per connection, whether the client
asked for the option.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import threading
from pathlib import Path

_SSL_REQUEST = struct.pack("!ii", 8, 80877103)
_OPTION = "idle_session_timeout"
_REFUSAL = (
    b"SFATAL\0VFATAL\0C42704\0"
    + f'Munrecognized configuration parameter "{_OPTION}"\0'.encode()
    + b"Fguc.c\0\0"
)


class Pg13:
    """The relay, on 127.0.0.1:``port``, to the PostgreSQL on 127.0.0.1:``target``."""

    def __init__(self, target: int, cert: Path, key: Path, ca: Path) -> None:
        self.target = target
        self._server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._server_tls.load_cert_chain(cert, key)
        self._client_tls = ssl.create_default_context(cafile=str(ca))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.asked: list[bool] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def __enter__(self) -> Pg13:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        with contextlib.ExitStack() as stack:
            stack.callback(raw.close)
            if _read_exact(raw, 8) != _SSL_REQUEST:
                return
            raw.sendall(b"S")
            client = stack.enter_context(self._server_tls.wrap_socket(raw, server_side=True))
            startup, asked = _without_option(_read_startup(client))
            self.asked.append(asked)
            upstream = stack.enter_context(self._upstream())
            upstream.sendall(startup)
            _relay(client, upstream, refuse_after_auth=asked)

    def _upstream(self) -> ssl.SSLSocket:
        sock = socket.create_connection(("127.0.0.1", self.target), timeout=10)
        sock.sendall(_SSL_REQUEST)
        if _read_exact(sock, 1) != b"S":
            raise OSError("the server refused TLS")
        return self._client_tls.wrap_socket(sock, server_hostname="127.0.0.1")


def _read_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise OSError("closed")
        data += chunk
    return data


def _read_startup(sock: socket.socket) -> bytes:
    head = _read_exact(sock, 4)
    (length,) = struct.unpack("!i", head)
    return head + _read_exact(sock, length - 4)


def _without_option(packet: bytes) -> tuple[bytes, bool]:
    """The startup packet without ``-c idle_session_timeout=...`` in ``options``, and whether
    it was there."""
    fields = packet[8:].split(b"\0")
    pairs = dict(zip(fields[0:-2:2], fields[1:-2:2], strict=True))
    words = pairs.get(b"options", b"").decode().split()
    kept, asked, skip = [], False, False
    for i, word in enumerate(words):
        if skip:
            skip = False
            continue
        if word == "-c" and i + 1 < len(words) and words[i + 1].startswith(_OPTION + "="):
            asked, skip = True, True
            continue
        kept.append(word)
    pairs[b"options"] = " ".join(kept).encode()
    if not pairs[b"options"]:
        del pairs[b"options"]
    body = packet[4:8] + b"".join(k + b"\0" + v + b"\0" for k, v in pairs.items()) + b"\0"
    return struct.pack("!i", len(body) + 4) + body, asked


def _relay(client: ssl.SSLSocket, upstream: ssl.SSLSocket, *, refuse_after_auth: bool) -> None:
    """Relay both ways; with ``refuse_after_auth``, stop at the server's AuthenticationOk and
    refuse the session as PostgreSQL 13 does."""
    pending = b""  # server bytes not yet relayed (whole messages are, while watching)
    for sock in (client, upstream):
        sock.setblocking(False)
    while True:
        ready = [s for s in (client, upstream) if s.pending()]
        if not ready:
            ready, _, _ = select.select([client, upstream], [], [], 30)
            if not ready:
                return
        for sock in ready:
            try:
                data = sock.recv(65536)
            except ssl.SSLWantReadError:
                continue
            if not data:
                return
            if sock is client:
                upstream.sendall(data)
                continue
            if not refuse_after_auth:
                client.sendall(data)
                continue
            pending += data
            while len(pending) >= 5:
                kind, length = pending[:1], struct.unpack("!i", pending[1:5])[0]
                if len(pending) < 1 + length:
                    break
                message, pending = pending[: 1 + length], pending[1 + length :]
                client.sendall(message)
                if kind == b"R" and message[5:9] == b"\0\0\0\0":  # AuthenticationOk
                    client.sendall(b"E" + struct.pack("!i", len(_REFUSAL) + 4) + _REFUSAL)
                    return
