"""devstack's Mongo peer at the byte level: each legacy opcode is answered as MongoDB 6/7 answer it.

Hand-built messages over a real TLS socket to the session's peer. What is expected comes from
MongoDB's server (``check_allowed_op_query_cmd.cpp``, ``makeErrorResponseToUnsupportedOpQuery``):
the ``OP_QUERY`` handshake gets an ``OP_REPLY`` (flags ``AwaitCapable``), other ``OP_QUERY``
commands ``UnsupportedOpQueryCommand``, queries on collections and ``OP_GET_MORE`` a
``QueryFailure`` reply, fire-and-forget opcodes no reply at all.
"""

from __future__ import annotations

import itertools
import socket
import ssl
import struct
from collections.abc import Iterator
from typing import Any

import bson
import pytest

from devstack.aws import MONGO_ROLE_ARN
from devstack.stack import Stack

pytestmark = pytest.mark.integration
OP_REPLY, OP_INSERT, OP_QUERY, OP_GET_MORE, OP_KILL_CURSORS, OP_MSG = (
    1,
    2002,
    2004,
    2005,
    2007,
    2013,
)
AWAIT_CAPABLE, QUERY_FAILURE = 8, 2
_ids = itertools.count(100)


class Wire:
    """One raw connection to the peer."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock

    def send(self, opcode: int, payload: bytes) -> int:
        request_id = next(_ids)
        header = struct.pack("<iiii", 16 + len(payload), request_id, 0, opcode)
        self.sock.sendall(header + payload)
        return request_id

    def receive(self) -> tuple[int, int, bytes]:
        """(responseTo, opCode, payload) of the next message."""
        length, _, response_to, opcode = struct.unpack("<iiii", self._exactly(16))
        return response_to, opcode, self._exactly(length - 16)

    def query(self, namespace: str, doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Send an OP_QUERY; return the OP_REPLY's (responseFlags, document)."""
        payload = struct.pack("<i", 0) + namespace.encode() + b"\0" + struct.pack("<ii", 0, -1)
        sent = self.send(OP_QUERY, payload + bson.encode(doc))
        response_to, opcode, reply = self.receive()
        assert (response_to, opcode) == (sent, OP_REPLY)
        flags, cursor_id, starting_from, returned = struct.unpack_from("<iqii", reply)
        assert (cursor_id, starting_from, returned) == (0, 0, 1)
        return flags, bson.decode(reply[20:])

    def command(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Send an OP_MSG; return its reply's body."""
        sent = self.send(OP_MSG, struct.pack("<IB", 0, 0) + bson.encode(doc))
        response_to, opcode, reply = self.receive()
        assert (response_to, opcode) == (sent, OP_MSG)
        assert reply[:5] == b"\0\0\0\0\0"  # no flags, one kind-0 section
        return bson.decode(reply[5:])

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError(f"connection closed after {len(data)} of {n} bytes")
            data += chunk
        return data


@pytest.fixture
def wire(stack: Stack) -> Iterator[Wire]:
    assert stack.mongo is not None and stack.tls is not None
    context = ssl.create_default_context(cafile=str(stack.tls.ca))
    raw = socket.create_connection(("localhost", stack.mongo.port), timeout=10)
    with context.wrap_socket(raw, server_hostname="localhost") as sock:
        yield Wire(sock)


HANDSHAKE = {
    "isMaster": 1,
    "helloOk": True,
    "client": {"driver": {"name": "test", "version": "0"}, "os": {"type": "Linux"}},
    "compression": ["zstd", "zlib"],
}


def test_legacy_handshake_gets_op_reply_then_op_msg_works(wire: Wire) -> None:
    flags, reply = wire.query("admin.$cmd", HANDSHAKE)
    assert flags == AWAIT_CAPABLE
    assert reply["ok"] == 1.0 and reply["ismaster"] is True and reply["helloOk"] is True
    assert "isWritablePrimary" not in reply
    assert reply["maxWireVersion"] >= 17  # MongoDB 6.0+
    assert "compression" not in reply  # none offered: the peer implements no compressor
    assert "speculativeAuthenticate" not in reply
    hello = wire.command({"hello": 1, "$db": "admin"})
    assert hello["ok"] == 1.0 and hello["isWritablePrimary"] is True
    assert "helloOk" not in hello  # only when asked for
    again = wire.command({"hello": 1, "client": HANDSHAKE["client"], "$db": "admin"})
    assert (again["ok"], again["code"]) == (0.0, 186)  # metadata only in the first hello


@pytest.mark.parametrize("name", ["hello", "ismaster"])
def test_every_handshake_spelling_is_answered(wire: Wire, name: str) -> None:
    flags, reply = wire.query("admin.$cmd", {name: 1})
    assert (flags, reply["ok"]) == (AWAIT_CAPABLE, 1.0)
    assert reply.get("isWritablePrimary", reply.get("ismaster")) is True


def test_sasl_supported_mechs_only_for_a_known_user(wire: Wire) -> None:
    _, known = wire.query(
        "admin.$cmd", {"isMaster": 1, "saslSupportedMechs": f"$external.{MONGO_ROLE_ARN}"}
    )
    assert known["saslSupportedMechs"] == ["MONGODB-AWS"]
    _, unknown = wire.query("admin.$cmd", {"isMaster": 1, "saslSupportedMechs": "$external.nobody"})
    assert "saslSupportedMechs" not in unknown


def test_sasl_start_is_still_allowed_as_op_query(wire: Wire) -> None:
    payload = bson.encode({"r": b"\x01" * 32, "p": ord("n")})
    flags, reply = wire.query(
        "$external.$cmd", {"saslStart": 1, "mechanism": "MONGODB-AWS", "payload": payload}
    )
    assert (flags, reply["ok"], reply["done"]) == (AWAIT_CAPABLE, 1.0, False)
    server = bson.decode(reply["payload"])
    assert len(server["s"]) == 64 and server["s"][:32] == b"\x01" * 32


@pytest.mark.parametrize(
    ("namespace", "doc"),
    [("admin.$cmd", {"ping": 1}), ("app.$cmd", {"find": "items"}), ("app.$cmd", {"insert": "x"})],
)
def test_other_op_query_commands_are_refused(
    wire: Wire, namespace: str, doc: dict[str, Any]
) -> None:
    flags, reply = wire.query(namespace, doc)
    assert flags == AWAIT_CAPABLE
    assert (reply["ok"], reply["code"], reply["codeName"]) == (
        0.0,
        352,
        "UnsupportedOpQueryCommand",
    )
    assert reply["errmsg"].startswith(f"Unsupported OP_QUERY command: {next(iter(doc))}. ")
    assert wire.command({"ping": 1, "$db": "admin"})["ok"] == 1.0  # the connection lives on


def test_op_query_must_not_carry_db(wire: Wire) -> None:
    _, reply = wire.query("admin.$cmd", {"isMaster": 1, "$db": "admin"})
    assert (reply["ok"], reply["code"]) == (0.0, 40621)


def test_op_query_on_a_collection_is_a_query_failure(wire: Wire) -> None:
    flags, reply = wire.query("app.items", {"a": 1})
    assert flags == QUERY_FAILURE
    assert reply["code"] == 5739101 and reply["ok"] == 0.0
    assert reply["$err"].startswith("OP_QUERY is no longer supported. ")


def test_op_get_more_is_a_query_failure(wire: Wire) -> None:
    sent = wire.send(OP_GET_MORE, struct.pack("<i", 0) + b"app.items\0" + struct.pack("<iq", 0, 5))
    response_to, opcode, reply = wire.receive()
    assert (response_to, opcode) == (sent, OP_REPLY)
    assert struct.unpack_from("<i", reply)[0] == QUERY_FAILURE
    assert bson.decode(reply[20:])["$err"].startswith("OP_GET_MORE is no longer supported. ")


def test_fire_and_forget_opcodes_get_no_reply(wire: Wire) -> None:
    wire.send(OP_INSERT, struct.pack("<i", 0) + b"app.items\0" + bson.encode({"a": 1}))
    wire.send(OP_KILL_CURSORS, struct.pack("<iiq", 0, 1, 5))
    assert wire.command({"ping": 1, "$db": "admin"})["ok"] == 1.0  # the next reply is the ping's


def test_unknown_opcode_closes_the_connection(wire: Wire) -> None:
    wire.send(2010, b"\0" * 8)  # OP_COMMAND, removed in MongoDB 4.2
    with pytest.raises(EOFError):
        wire.receive()
