"""MongoDB wire protocol for devstack's peer: framing, and each opcode answered as MongoDB 6/7 do.

Modern drivers speak ``OP_MSG`` only, but every driver that has no Stable API version set
(mongosh, the Node.js driver, pymongo before 4.18) opens a connection with a legacy ``OP_QUERY``
``isMaster``/``hello`` on ``admin.$cmd``. MongoDB 5.1+ still answers that handshake (and a few
commands old cluster members send) with an ``OP_REPLY``, answers any other ``OP_QUERY`` command
with ``UnsupportedOpQueryCommand`` (352), a query on a collection or an ``OP_GET_MORE`` with a
``QueryFailure`` reply, and records the fire-and-forget opcodes as errors without answering.
This module does the same, and knows nothing about the commands themselves: it hands every
command document (with ``$db``) to a ``dispatch`` coroutine.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import bson
from bson.errors import BSONError

log = logging.getLogger("devstack.mongo")

OP_REPLY = 1
OP_UPDATE = 2001
OP_INSERT = 2002
OP_QUERY = 2004
OP_GET_MORE = 2005
OP_DELETE = 2006
OP_KILL_CURSORS = 2007
OP_MSG = 2013
MAX_MESSAGE_BYTES = 48_000_000

CHECKSUM_PRESENT = 1  # OP_MSG flag bits
MORE_TO_COME = 2
QUERY_FAILURE = 2  # OP_REPLY responseFlags
AWAIT_CAPABLE = 8  # set by mongod on every successful OP_REPLY

# What MongoDB 6/7 still run when it arrives as OP_QUERY (check_allowed_op_query_cmd.cpp).
OP_QUERY_COMMANDS = frozenset(
    {"hello", "isMaster", "ismaster", "buildinfo", "buildInfo", "saslStart", "saslContinue"}
    | {"authenticate", "_isSelf"}
)
# Removed opcodes that never get an answer: the server records the error and reads on.
FIRE_AND_FORGET = {
    OP_UPDATE: "OP_UPDATE",
    OP_INSERT: "OP_INSERT",
    OP_DELETE: "OP_DELETE",
    OP_KILL_CURSORS: "OP_KILL_CURSORS",
}
_UPGRADE = (
    "The client driver may require an upgrade. "
    "For more details see https://dochub.mongodb.org/core/legacy-opcode-removal"
)

Dispatch = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class CommandError(Exception):
    """A command failed: the reply is ``{ok: 0, errmsg, code, codeName}``."""

    def __init__(self, code: int, name: str, message: str) -> None:
        super().__init__(message)
        self.code, self.name, self.message = code, name, message

    def reply(self) -> dict[str, Any]:
        """The error document; without ``codeName`` when ``name`` is empty (DocumentDB's)."""
        reply: dict[str, Any] = {"ok": 0.0, "errmsg": self.message, "code": self.code}
        if self.name:
            reply["codeName"] = self.name
        return reply


class ProtocolError(Exception):
    """The client broke the protocol: the server closes the connection."""


async def read_message(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    """(requestID, opCode, payload) of the next message."""
    length, request_id, _, opcode = struct.unpack("<iiii", await reader.readexactly(16))
    if not 16 < length <= MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message length {length}")
    return request_id, opcode, await reader.readexactly(length - 16)


def frame(request_id: int, response_to: int, opcode: int, body: bytes) -> bytes:
    return struct.pack("<iiii", 16 + len(body), request_id, response_to, opcode) + body


async def answer(opcode: int, payload: bytes, dispatch: Dispatch) -> tuple[int, bytes] | None:
    """(reply opcode, reply payload) for one request; None when no reply is due."""
    if opcode == OP_MSG:
        flags, body = parse_msg(payload)
        reply = await dispatch(body)
        if flags & MORE_TO_COME:  # the client wants no answer
            return None
        return OP_MSG, struct.pack("<IB", 0, 0) + bson.encode(reply)
    if opcode == OP_QUERY:
        flags, doc = await _legacy_query(payload, dispatch)
        return OP_REPLY, op_reply(flags, doc)
    if opcode == OP_GET_MORE:
        return OP_REPLY, op_reply(QUERY_FAILURE, _removed("OP_GET_MORE"))
    if opcode in FIRE_AND_FORGET:
        log.info("mongo peer: %s is no longer supported (no reply)", FIRE_AND_FORGET[opcode])
        return None
    raise ProtocolError(f"Message type {opcode} is not supported.")


async def _legacy_query(payload: bytes, dispatch: Dispatch) -> tuple[int, dict[str, Any]]:
    namespace, query = parse_query(payload)
    db, _, collection = namespace.partition(".")
    if collection != "$cmd":
        return QUERY_FAILURE, _removed("OP_QUERY")
    if "$query" in query:  # a command wrapped with legacy query modifiers ($readPreference)
        query = dict(query["$query"])
    name = next(iter(query), "")
    if "$db" in query:
        error = CommandError(40621, "Location40621", "$db is not allowed in OP_QUERY requests")
        return AWAIT_CAPABLE, error.reply()
    if name not in OP_QUERY_COMMANDS:
        message = f"Unsupported OP_QUERY command: {name}. {_UPGRADE}"
        return AWAIT_CAPABLE, CommandError(352, "UnsupportedOpQueryCommand", message).reply()
    return AWAIT_CAPABLE, await dispatch({**query, "$db": db})


def _removed(what: str) -> dict[str, Any]:
    """The ``$err`` document mongod sends for an opcode it no longer serves."""
    return {"$err": f"{what} is no longer supported. {_UPGRADE}", "code": 5739101, "ok": 0.0}


def op_reply(flags: int, doc: dict[str, Any]) -> bytes:
    """An OP_REPLY payload holding one document (cursor 0, starting at 0)."""
    return struct.pack("<iqii", flags, 0, 0, 1) + bson.encode(doc)


def parse_query(payload: bytes) -> tuple[str, dict[str, Any]]:
    """(fullCollectionName, query) of an OP_QUERY payload."""
    try:
        end = payload.index(b"\0", 4)
        pos = end + 1 + 8  # numberToSkip, numberToReturn
        (size,) = struct.unpack_from("<i", payload, pos)
        return payload[4:end].decode(), bson.decode(payload[pos : pos + size])
    except (ValueError, struct.error, BSONError) as exc:
        raise ProtocolError(f"malformed OP_QUERY: {exc}") from None


def parse_msg(payload: bytes) -> tuple[int, dict[str, Any]]:
    """(flagBits, body with kind-1 document sequences merged in) of an OP_MSG payload."""
    try:
        (flags,) = struct.unpack_from("<I", payload)
        end = len(payload) - (4 if flags & CHECKSUM_PRESENT else 0)
        pos, body, sequences = 4, None, {}
        while pos < end:
            kind = payload[pos]
            (size,) = struct.unpack_from("<i", payload, pos + 1)
            if kind == 0:
                body = bson.decode(payload[pos + 1 : pos + 1 + size])
            elif kind == 1:
                ident, _, docs = payload[pos + 5 : pos + 1 + size].partition(b"\0")
                sequences[ident.decode()] = bson.decode_all(docs)
            else:
                raise ProtocolError(f"OP_MSG section kind {kind}")
            pos += 1 + size
    except (ValueError, IndexError, struct.error, BSONError) as exc:
        raise ProtocolError(f"malformed OP_MSG: {exc}") from None
    if body is None:
        raise ProtocolError("OP_MSG without a body")
    body.update(sequences)
    return flags, body
