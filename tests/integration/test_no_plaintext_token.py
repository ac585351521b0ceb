"""No token ever leaves iamdb towards a server that does not offer TLS.

Two tiny servers on real sockets play a database that does not offer TLS (or a
man-in-the-middle stripping it): they record every byte the client sends. iamdb must
give up before sending anything that looks like a token.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest

import iamdb
import iamdb._registry
from tests.integration.kept_alive import kept_alive

pytestmark = pytest.mark.integration

ENV = {
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    "IAMDB_PG_USER": "app",
    "IAMDB_MYSQL_USER": "app",
    "IAMDB_PG_HOST": "127.0.0.1",
    "IAMDB_MYSQL_HOST": "127.0.0.1",
    # Tokens are signed for the endpoint name, never an IP (the socket goes to 127.0.0.1).
    "IAMDB_PG_IAM_HOST": "app.c9akciq32.us-east-1.rds.amazonaws.com",
    "IAMDB_MYSQL_IAM_HOST": "app.c9akciq32.us-east-1.rds.amazonaws.com",
    "AWS_REGION": "us-east-1",
    "IAMDB_PG_CONNECT_TIMEOUT": "3",
    "IAMDB_MYSQL_CONNECT_TIMEOUT": "3",
}

# MySQL protocol 10 greeting: no CLIENT_SSL (0x800) in the capabilities.
_CAPS = 0x1 | 0x8 | 0x200 | 0x8000 | 0x80000
_GREETING = (
    b"\x0a5.7.99-plaintext\x00"
    + struct.pack("<I", 7)
    + b"abcdefgh\x00"
    + struct.pack("<H", _CAPS & 0xFFFF)
    + b"\x21"
    + struct.pack("<H", 2)
    + struct.pack("<H", _CAPS >> 16)
    + b"\x15"
    + b"\x00" * 10
    + b"ijklmnopqrst\x00"
    + b"mysql_clear_password\x00"
)


class Recorder:
    """Accepts one client, greets it (or answers the SSL request with 'N'), records its bytes."""

    def __init__(self, greeting: bytes | None, ssl_answer: bytes | None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = bytearray()
        self._greeting, self._ssl_answer = greeting, ssl_answer
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(10)
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(2)
            if self._greeting is not None:
                conn.sendall(struct.pack("<I", len(self._greeting))[:3] + b"\x00" + self._greeting)
            try:
                while chunk := conn.recv(65536):
                    self.received += chunk
                    if self._ssl_answer is not None and len(self.received) >= 8:
                        conn.sendall(self._ssl_answer)
                        self._ssl_answer = None
            except OSError:
                pass

    def close(self) -> None:
        self.thread.join(timeout=5)
        self.listener.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    iamdb.reset()
    yield
    iamdb.reset()


def test_mysql_server_without_tls_never_receives_the_token(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = Recorder(_GREETING, None)
    monkeypatch.setenv("IAMDB_MYSQL_PORT", str(server.port))
    with pytest.raises(iamdb.ConnectError, match="does not offer TLS") as info:
        iamdb.get_mysql()
    server.close()
    assert b"X-Amz" not in server.received and b"Action=connect" not in server.received
    # Refused deep inside PyMySQL, whose frames hold the token: the error must not keep them.
    cfg = iamdb._registry.default.config("mysql")
    token = iamdb._registry.default.tokens.get(cfg.target)
    assert iamdb.info("mysql").tokens_signed == 1  # the very token it was about to send
    held = [path for path, text in kept_alive(info.value) if token.value in text]
    assert not held, held


def test_pg_server_without_tls_never_receives_the_token(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = Recorder(None, b"N")
    monkeypatch.setenv("IAMDB_PG_PORT", str(server.port))
    with pytest.raises(iamdb.ConnectError):
        iamdb.get_pg()
    server.close()
    assert bytes(server.received) == struct.pack("!II", 8, 80877103)  # only the SSLRequest
