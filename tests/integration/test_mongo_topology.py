"""Plaintext reaches loopback only: a seed's member list never carries the login elsewhere.

Two tiny plaintext MongoDB wire-protocol peers on real sockets play a replica set: the seed
(the one loopback host of ``IAMDB_MONGO_URI``, ``tls=false``) says it is a secondary and
names another member as primary, as a hostile or misconfigured server may. Without a direct
connection pymongo would follow that list and run MONGODB-AWS (``saslStart``/``saslContinue``:
the signed STS request and the role's session token) against the member in plaintext. The
member records every byte it receives: it must receive none.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

import bson
import pytest

import iamdb
import iamdb._mongo.client
from devstack.stack import Stack
from iamdb._aws.sts import Lease
from iamdb.errors import AuthError, ConnectError

pytestmark = pytest.mark.integration

OP_MSG = 2013


class Member:
    """A plaintext replica-set member that answers hello and MONGODB-AWS, refusing the login.

    ``primary`` names the member the others should think is primary; every byte received is
    kept in ``received``.
    """

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.name = f"127.0.0.1:{self.port}"
        self.me = self.name
        self.hosts: list[str] = []
        self.primary: str = ""
        self.received = bytearray()
        self.commands: list[str] = []
        self._lock = threading.Lock()
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._closing = True
        self.listener.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                while header := self._read(conn, 16):
                    length, request_id, _, opcode = struct.unpack("<iiii", header)
                    payload = self._read(conn, length - 16)
                    if opcode != OP_MSG or len(payload) < 5 or payload[4] != 0:
                        return
                    body = bson.decode(payload[5 : 5 + int.from_bytes(payload[5:9], "little")])
                    reply = bson.encode(self._answer(body))
                    conn.sendall(
                        struct.pack("<iiii", 16 + 5 + len(reply), 1, request_id, OP_MSG)
                        + b"\0\0\0\0\0"
                        + reply
                    )
            except OSError:
                return

    def _read(self, conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                return b""
            data += chunk
        with self._lock:
            self.received += data
        return data

    def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        command = next(iter(body), "").lower()
        self.commands.append(command)
        if command in ("hello", "ismaster"):
            return {
                "ok": 1.0,
                "isWritablePrimary": self.primary == self.me,
                "ismaster": self.primary == self.me,
                "secondary": self.primary != self.me,
                "setName": "rs0",
                "setVersion": 1,
                "hosts": self.hosts,
                "primary": self.primary,
                "me": self.me,
                "minWireVersion": 0,
                "maxWireVersion": 21,
                "maxBsonObjectSize": 16 * 1024 * 1024,
                "maxMessageSizeBytes": 48_000_000,
                "maxWriteBatchSize": 100_000,
                "logicalSessionTimeoutMinutes": 30,
                "localTime": dt.datetime.now(dt.timezone.utc),
            }
        if command == "saslstart":  # MONGODB-AWS step 1: a server nonce extending the client's
            client_nonce = bson.decode(bytes(body["payload"]))["r"]
            server = {"s": client_nonce + os.urandom(32), "h": "sts.amazonaws.com"}
            return {"ok": 1.0, "conversationId": 1, "done": False, "payload": bson.encode(server)}
        if command == "saslcontinue":  # step 2 carried the signed request: refuse it
            return {"ok": 0.0, "code": 18, "codeName": "AuthenticationFailed", "errmsg": "no"}
        return {"ok": 0.0, "code": 59, "codeName": "CommandNotFound", "errmsg": command}


@pytest.fixture
def replica_set(stack_env: dict[str, str]) -> Iterator[tuple[Member, Member]]:
    """A loopback seed that names another member as its primary, and that member."""
    seed, member = Member(), Member()
    seed.me = f"localhost:{seed.port}"  # the URI's name for it
    for peer in (seed, member):
        peer.hosts, peer.primary = [seed.me, member.name], member.name
    yield seed, member
    seed.close()
    member.close()


@pytest.fixture
def leases(monkeypatch: pytest.MonkeyPatch) -> list[Lease]:
    """Every lease get_mongo() fetches (the role's session token is what must not travel)."""
    found: list[Lease] = []
    real = iamdb._mongo.client.fetch_lease

    def spy(*args: Any, **kwargs: Any) -> Lease:
        found.append(real(*args, **kwargs))
        return found[-1]

    monkeypatch.setattr(iamdb._mongo.client, "fetch_lease", spy)
    return found


def test_plaintext_login_stays_on_the_loopback_seed(
    replica_set: tuple[Member, Member], leases: list[Lease], monkeypatch: pytest.MonkeyPatch
) -> None:
    seed, member = replica_set
    monkeypatch.setenv(
        "IAMDB_MONGO_URI", f"mongodb://localhost:{seed.port}/app?tls=false&connectTimeoutMS=2000"
    )
    iamdb.reset()
    with pytest.raises(AuthError):
        iamdb.get_mongo()
    token = leases[0].credentials.token
    assert token
    sent = bson.encode({"t": token})[4:-1]  # saslContinue's session token, as BSON
    assert sent not in bytes(member.received), "the session token went to another host"
    assert bytes(member.received) == b"", "plaintext bytes reached a member the seed named"
    assert "saslcontinue" in seed.commands and sent in bytes(seed.received)  # the seed's login


def test_without_tls_false_a_plaintext_seed_gets_no_login(
    replica_set: tuple[Member, Member], leases: list[Lease], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loopback seed is TLS too unless the URI says tls=false: a plaintext peer gets a TLS
    ClientHello, nothing of the login, and the member nothing at all."""
    seed, member = replica_set
    monkeypatch.setenv(
        "IAMDB_MONGO_URI",
        f"mongodb://localhost:{seed.port}/app?serverSelectionTimeoutMS=500&connectTimeoutMS=500",
    )
    iamdb.reset()
    with pytest.raises(ConnectError, match="tls=on"):
        iamdb.get_mongo()
    assert leases and not seed.commands and bytes(member.received) == b""
    assert bytes(seed.received[:1]) == b"\x16"  # a TLS handshake record, not a MongoDB message


@pytest.mark.parametrize(
    "options",
    [
        "tlsCAFile=/dev/null",
        "tlsCAFile=/nonexistent/ca.pem",
        "tlsCAFile={ca}&serverSelectionTimeoutMS=abc",
        "tlsCAFile={ca}&directConnection=true&loadBalanced=true",
        "tlsCAFile={ca}&tlsAllowInvalidCertificates=true",
        "tlsCAFile={ca}&TLSALLOWINVALIDHOSTNAMES=true",
        "tls=false&replicaSet=rs0",
    ],
)
def test_a_bad_uri_is_refused_before_assume_role(
    stack: Stack, stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, options: str
) -> None:
    """devstack's peer, one bad option: ConfigError, and STS was never called."""
    import iamdb._mongo.client

    assert stack.mongo is not None and stack.tls is not None
    calls: list[object] = []
    monkeypatch.setattr(iamdb._mongo.client, "assume_role", lambda *a, **k: calls.append(a))
    query = options.format(ca=stack.tls.ca)
    monkeypatch.setenv("IAMDB_MONGO_URI", f"mongodb://localhost:{stack.mongo.port}/app?{query}")
    iamdb.reset()
    with pytest.raises(iamdb.ConfigError) as info:
        iamdb.get_mongo()
    assert info.value.variable == "IAMDB_MONGO_URI" and not calls
