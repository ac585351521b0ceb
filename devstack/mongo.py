"""A MongoDB wire-protocol peer that verifies MONGODB-AWS logins like Atlas does.

No MongoDB server can be installed here, so devstack speaks the protocol itself (asyncio,
OP_MSG only, as pymongo 4.20 does). It is a **verifying test peer, not a database**: the
documents live in memory, and only what iamdb's tests and examples use is served.

Authentication is done the way Atlas and Percona Server for MongoDB do it:

1. ``saslStart`` on ``$external`` with mechanism ``MONGODB-AWS``: the client sends 32 random
   bytes ``r`` and the channel-binding flag ``p`` = ``n``; the peer answers a 64-byte nonce
   ``s`` (``r`` + 32 bytes of its own) and the STS host ``h``.
2. ``saslContinue``: the client sends the ``Authorization`` header ``a`` and ``X-Amz-Date``
   ``d`` (and its session token ``t``) of a SigV4-signed STS ``GetCallerIdentity`` request.
   The peer checks the header signs ``host``, ``x-amz-date``, ``x-mongodb-server-nonce`` and
   ``x-mongodb-gs2-cb-flag`` (and the session token), rebuilds the request with *its own*
   nonce, and forwards it to devstack's STS (moto, signature checking on): a client that
   signed anything else fails there.
3. STS answers the caller's ARN; ``arn:aws:sts::A:assumed-role/R/S`` maps to
   ``arn:aws:iam::A:role/R``, which must be a configured ``$external`` user. moto does not
   check expiry, so the peer refuses credentials past the ``Expiration`` STS issued
   (``clock`` is injectable, for tests that simulate hours).

Every login attempt is recorded in :attr:`MongoPeer.events` (no secrets in them or in logs).
"""

from __future__ import annotations

import asyncio
import base64
import calendar
import datetime as dt
import http.client
import itertools
import logging
import os
import re
import ssl
import struct
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import bson
from bson import ObjectId
from bson.binary import Binary

from devstack.tls import TlsFiles
from devstack.verifier import KeyInfo

log = logging.getLogger("devstack.mongo")

OP_MSG = 2013
STS_BODY = "Action=GetCallerIdentity&Version=2011-06-15"
REQUIRED_SIGNED = ("host", "x-amz-date", "x-mongodb-gs2-cb-flag", "x-mongodb-server-nonce")
MAX_DATE_SKEW = 900  # STS refuses requests signed more than 15 minutes away
# Commands a connection may run before it logged in (as a real mongod with auth on).
PRE_AUTH = frozenset(
    {"hello", "ismaster", "ping", "buildinfo", "saslstart", "saslcontinue", "connectionstatus"}
)
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[A-Z0-9]{16,128})/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)"
    r"/(?P<service>[a-z0-9-]+)/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;-]+), ?"
    r"Signature=(?P<sig>[0-9a-f]{64})"
)
_ASSUMED = re.compile(r"arn:(?P<p>[\w-]+):sts::(?P<a>\d{12}):assumed-role/(?P<r>[\w+=,.@-]+)/.+")


@dataclass(frozen=True)
class AuthEvent:
    """One MONGODB-AWS login attempt as the peer saw it."""

    ok: bool
    reason: str
    access_key: str
    user: str  # the $external user it mapped to ("" when STS refused)
    at: float  # peer clock
    expires_at: float | None  # the credentials' Expiration, as STS issued it


class CommandError(Exception):
    def __init__(self, code: int, name: str, message: str) -> None:
        super().__init__(message)
        self.code, self.name, self.message = code, name, message


class AuthFailed(Exception):
    """Internal: a login check failed; ``reason`` is safe to log."""


@dataclass
class _Conn:
    id: int
    user: str | None = None
    nonces: dict[int, bytes] = field(default_factory=dict)  # conversationId -> server nonce


@dataclass
class _Cursor:
    ns: str
    docs: list[dict[str, Any]]


class MongoPeer:
    """Start with :meth:`start` (its own event-loop thread), always :meth:`stop`."""

    def __init__(
        self,
        *,
        sts_endpoint: str,
        lookup: Callable[[str], KeyInfo | None],
        users: Iterable[str] = (),
        tls: TlsFiles | None = None,
        port: int = 0,
        clock: Callable[[], float] = time.time,
        sts_host: str = "sts.amazonaws.com",
    ) -> None:
        self.sts_endpoint = sts_endpoint
        self.sts_host = sts_host
        self.users: set[str] = set(users)
        self.clock = clock
        self.port = port
        self.events: deque[AuthEvent] = deque(maxlen=10_000)
        self.connections_opened = 0
        self._lookup = lookup
        self._tls = tls
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._cursor_ids = itertools.count(1000)
        self._store: dict[str, list[dict[str, Any]]] = {}
        self._cursors: dict[int, _Cursor] = {}
        self._writers: set[asyncio.StreamWriter] = set()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(
                        self._serve, "127.0.0.1", self.port, ssl=self._ssl_context()
                    )
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="devstack-mongo", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.close()
            if self._server is not None:
                await self._server.wait_closed()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
        except Exception:
            log.exception("mongo peer: shutdown")
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        self._loop = self._thread = None

    def add_user(self, arn: str) -> None:
        """Create a ``$external`` user (an IAM role or user ARN)."""
        self.users.add(arn)

    def remove_user(self, arn: str) -> None:
        self.users.discard(arn)

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self._tls is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self._tls.cert), str(self._tls.key))
        return ctx

    # -- wire protocol -----------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(next(self._ids))
        self.connections_opened += 1
        self._writers.add(writer)
        try:
            while True:
                header = await reader.readexactly(16)
                length, request_id, _, opcode = struct.unpack("<iiii", header)
                if not 16 < length <= 48_000_000:
                    break
                payload = await reader.readexactly(length - 16)
                if opcode != OP_MSG:
                    log.info("mongo peer: opcode %d not supported, closing", opcode)
                    break
                flags, body = _parse_msg(payload)
                reply = await self._dispatch(conn, body)
                if flags & 2:  # moreToCome: the client wants no answer
                    continue
                writer.write(_reply(next(self._ids), request_id, reply))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _dispatch(self, conn: _Conn, body: dict[str, Any]) -> dict[str, Any]:
        name = next(iter(body), "")
        lname = name.lower()
        try:
            if lname not in PRE_AUTH and conn.user is None:
                raise CommandError(13, "Unauthorized", f"command {name} requires authentication")
            if lname in ("saslstart", "saslcontinue"):
                return await self._sasl(conn, lname, body)
            handler = getattr(self, f"_cmd_{lname}", None)
            if handler is None:
                raise CommandError(59, "CommandNotFound", f"no such command: '{name}'")
            result: dict[str, Any] = handler(conn, body)
            return {**result, "ok": 1.0}
        except CommandError as err:
            return {"ok": 0.0, "errmsg": err.message, "code": err.code, "codeName": err.name}

    # -- authentication ----------------------------------------------------------------

    async def _sasl(self, conn: _Conn, lname: str, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("$db") != "$external":
            raise CommandError(18, "AuthenticationFailed", "MONGODB-AWS must use $external")
        if lname == "saslstart":
            if body.get("mechanism") != "MONGODB-AWS":
                raise CommandError(334, "MechanismUnavailable", "only MONGODB-AWS is offered")
            first = bson.decode(bytes(body.get("payload", b"")))
            client_nonce = bytes(first.get("r", b""))
            if len(client_nonce) != 32 or first.get("p") != ord("n"):
                raise CommandError(18, "AuthenticationFailed", "bad client nonce or cb flag")
            server_nonce = client_nonce + os.urandom(32)
            conversation = len(conn.nonces) + 1
            conn.nonces[conversation] = server_nonce
            reply = bson.encode({"s": Binary(server_nonce), "h": self.sts_host})
            return {
                "conversationId": conversation,
                "done": False,
                "payload": Binary(reply),
                "ok": 1.0,
            }
        server_nonce = conn.nonces.pop(int(body.get("conversationId", 0)), b"")
        if not server_nonce:
            raise CommandError(17, "ProtocolError", "no such SASL conversation")
        second = bson.decode(bytes(body.get("payload", b"")))
        try:
            user, key, expires = await asyncio.to_thread(self._verify, second, server_nonce)
        except AuthFailed as failed:
            key = str(failed.args[1]) if len(failed.args) > 1 else ""
            self._record(False, str(failed.args[0]), key, "", None)
            raise CommandError(18, "AuthenticationFailed", "Authentication failed.") from None
        conn.user = user
        self._record(True, "ok", key, user, expires)
        return {"conversationId": 1, "done": True, "payload": Binary(b""), "ok": 1.0}

    def _record(self, ok: bool, reason: str, key: str, user: str, expires: float | None) -> None:
        self.events.append(AuthEvent(ok, reason, key, user, self.clock(), expires))
        if not ok:
            log.info("refused MONGODB-AWS login: access_key=%s reason=%s", key or "-", reason)

    def _verify(self, second: dict[str, Any], server_nonce: bytes) -> tuple[str, str, float | None]:
        """Check one ``saslContinue`` payload; return (user, access key, expiry)."""
        auth, date, token = second.get("a"), second.get("d"), second.get("t")
        if not isinstance(auth, str) or not isinstance(date, str):
            raise AuthFailed("payload lacks a or d")
        match = _AUTH.fullmatch(auth)
        if match is None:
            raise AuthFailed("malformed Authorization header")
        key = match["key"]
        signed = match["signed"].split(";")
        missing = [h for h in REQUIRED_SIGNED if h not in signed]
        if token is not None and "x-amz-security-token" not in signed:
            missing.append("x-amz-security-token")
        if missing:
            raise AuthFailed(f"headers not signed: {','.join(missing)}", key)
        if match["service"] != "sts" or match["date"] != date[:8]:
            raise AuthFailed("credential scope is not sts or not of X-Amz-Date's day", key)
        try:
            signed_at = calendar.timegm(time.strptime(date, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            raise AuthFailed("malformed X-Amz-Date", key) from None
        if abs(time.time() - signed_at) > MAX_DATE_SKEW:  # STS's own check: wall clock
            raise AuthFailed("request signed too long ago or in the future", key)
        arn = self._caller_arn(auth, date, token, server_nonce, key)
        user = _external_user(arn)
        info = self._lookup(key)
        expires = info.expires_at if info is not None else None
        if expires is not None and self.clock() >= expires:
            raise AuthFailed("credentials expired", key)
        if user not in self.users:
            raise AuthFailed(f"no $external user {user}", key)
        return user, key, expires

    def _caller_arn(self, auth: str, date: str, token: Any, server_nonce: bytes, key: str) -> str:
        """Forward the client-signed GetCallerIdentity (with our nonce) to STS."""
        url = urllib.parse.urlsplit(self.sts_endpoint)
        conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=10)
        headers = {
            "Host": self.sts_host,  # exactly what the client signed
            "Content-Type": "application/x-www-form-urlencoded",
            "Content-Length": str(len(STS_BODY)),
            "X-Amz-Date": date,
            "X-MongoDB-Server-Nonce": base64.b64encode(server_nonce).decode(),
            "X-MongoDB-GS2-CB-Flag": "n",
            "Authorization": auth,
        }
        if isinstance(token, str):
            headers["X-Amz-Security-Token"] = token
        try:
            conn.putrequest("POST", "/", skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders(STS_BODY.encode())
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
        except OSError as exc:
            raise AuthFailed(f"STS unreachable: {type(exc).__name__}", key) from None
        finally:
            conn.close()
        root = _xml(text)
        if response.status != 200:
            code = _find(root, "Code") or f"HTTP {response.status}"
            raise AuthFailed(f"STS refused: {code}", key)
        arn = _find(root, "Arn")
        if not arn:
            raise AuthFailed("STS answered without an Arn", key)
        return arn

    # -- commands ------------------------------------------------------------------------

    def _cmd_hello(self, conn: _Conn, body: dict[str, Any]) -> dict[str, Any]:
        reply: dict[str, Any] = {
            "helloOk": True,
            "isWritablePrimary": True,
            "maxBsonObjectSize": 16 * 1024 * 1024,
            "maxMessageSizeBytes": 48_000_000,
            "maxWriteBatchSize": 100_000,
            "localTime": dt.datetime.now(dt.timezone.utc),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": conn.id,
            "minWireVersion": 0,
            "maxWireVersion": 21,
            "readOnly": False,
        }
        if "saslSupportedMechs" in body:
            reply["saslSupportedMechs"] = ["MONGODB-AWS"]
        return reply

    def _cmd_ismaster(self, conn: _Conn, body: dict[str, Any]) -> dict[str, Any]:
        reply = self._cmd_hello(conn, body)
        reply["ismaster"] = reply.pop("isWritablePrimary")
        return reply

    def _cmd_ping(self, conn: _Conn, body: dict[str, Any]) -> dict[str, Any]:
        return {}

    def _cmd_buildinfo(self, conn: _Conn, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "version": "7.0.0",
            "versionArray": [7, 0, 0, 0],
            "gitVersion": "iamdb-devstack-peer",
            "modules": ["iamdb-devstack"],
            "maxBsonObjectSize": 16 * 1024 * 1024,
        }

    def _cmd_connectionstatus(self, conn: _Conn, body: dict[str, Any]) -> dict[str, Any]:
        users = [] if conn.user is None else [{"user": conn.user, "db": "$external"}]
        return {"authInfo": {"authenticatedUsers": users, "authenticatedUserRoles": []}}

    def _cmd_endsessions(self, conn: _Conn, body: dict[str, Any]) -> dict[str, Any]:
        return {}

    def _cmd_killcursors(self, conn: _Conn, body: dict[str, Any]) -> dict[str, Any]:
        killed: list[Any] = []
        missing: list[Any] = []
        for cid in body.get("cursors", []):
            (killed if self._cursors.pop(int(cid), None) else missing).append(cid)
        return {"cursorsKilled": killed, "cursorsNotFound": missing, "cursorsAlive": []}

    def _cmd_insert(self, conn: _Conn, body: dict[str, Any]) -> dict[str, Any]:
        docs = self._coll(body, "insert")
        errors, n = [], 0
        for index, doc in enumerate(body.get("documents", [])):
            doc = dict(doc)
            doc.setdefault("_id", ObjectId())
            if any(d["_id"] == doc["_id"] for d in docs):
                errors.append({"index": index, "code": 11000, "errmsg": "E11000 duplicate key"})
                if body.get("ordered", True):
                    break
                continue
            docs.append(doc)
            n += 1
        return {"n": n, **({"writeErrors": errors} if errors else {})}

    def _cmd_find(self, conn: _Conn, body: dict[str, Any]) -> dict[str, Any]:
        docs = [d for d in self._coll(body, "find") if _matches(d, body.get("filter") or {})]
        docs = _sorted(docs, body.get("sort"))
        skip, limit = int(body.get("skip", 0)), abs(int(body.get("limit", 0)))
        docs = docs[skip : skip + limit if limit else None]
        projection = body.get("projection")
        docs = [_project(d, projection) for d in docs]
        batch = int(body.get("batchSize", 101)) or len(docs)
        single = bool(body.get("singleBatch")) or int(body.get("limit", 0)) < 0
        return self._cursor(_ns(body, "find"), docs, batch, "firstBatch", single)

    def _cmd_getmore(self, conn: _Conn, body: dict[str, Any]) -> dict[str, Any]:
        cid = int(body["getMore"])
        cursor = self._cursors.pop(cid, None)
        if cursor is None:
            raise CommandError(43, "CursorNotFound", f"cursor id {cid} not found")
        batch = int(body.get("batchSize", 0)) or len(cursor.docs)
        first, rest = cursor.docs[:batch], cursor.docs[batch:]
        if rest:
            self._cursors[cid] = _Cursor(cursor.ns, rest)
        return {
            "cursor": {"nextBatch": first, "id": bson.Int64(cid if rest else 0), "ns": cursor.ns}
        }

    def _cmd_update(self, conn: _Conn, body: dict[str, Any]) -> dict[str, Any]:
        docs = self._coll(body, "update")
        n = modified = 0
        upserted = []
        for index, spec in enumerate(body.get("updates", [])):
            hits = [d for d in docs if _matches(d, spec.get("q") or {})]
            if not spec.get("multi"):
                hits = hits[:1]
            for doc in hits:
                before = dict(doc)
                _apply(doc, spec["u"])
                modified += doc != before
            n += len(hits)
            if not hits and spec.get("upsert"):
                doc = {k: v for k, v in (spec.get("q") or {}).items() if not k.startswith("$")}
                _apply(doc, spec["u"])
                doc.setdefault("_id", ObjectId())
                docs.append(doc)
                upserted.append({"index": index, "_id": doc["_id"]})
                n += 1
        return {"n": n, "nModified": modified, **({"upserted": upserted} if upserted else {})}

    def _cmd_delete(self, conn: _Conn, body: dict[str, Any]) -> dict[str, Any]:
        docs = self._coll(body, "delete")
        n = 0
        for spec in body.get("deletes", []):
            hits = [d for d in docs if _matches(d, spec.get("q") or {})]
            if spec.get("limit", 0) == 1:
                hits = hits[:1]
            for doc in hits:
                docs.remove(doc)
            n += len(hits)
        return {"n": n}

    def _cmd_count(self, conn: _Conn, body: dict[str, Any]) -> dict[str, Any]:
        return {"n": sum(_matches(d, body.get("query") or {}) for d in self._coll(body, "count"))}

    def _cmd_aggregate(self, conn: _Conn, body: dict[str, Any]) -> dict[str, Any]:
        docs = list(self._coll(body, "aggregate"))
        for stage in body.get("pipeline", []):
            docs = _stage(docs, stage)
        batch = int(body.get("cursor", {}).get("batchSize", 101)) or len(docs)
        return self._cursor(_ns(body, "aggregate"), docs, batch, "firstBatch", False)

    def _cmd_drop(self, conn: _Conn, body: dict[str, Any]) -> dict[str, Any]:
        ns = _ns(body, "drop")
        if self._store.pop(ns, None) is None:
            raise CommandError(26, "NamespaceNotFound", "ns not found")
        return {"ns": ns, "nIndexesWas": 1}

    def _cmd_listcollections(self, conn: _Conn, body: dict[str, Any]) -> dict[str, Any]:
        db = body["$db"]
        names = sorted(ns.split(".", 1)[1] for ns in self._store if ns.split(".", 1)[0] == db)
        infos = [
            {"name": n, "type": "collection", "options": {}, "info": {"readOnly": False}}
            for n in names
        ]
        infos = [i for i in infos if _matches(i, body.get("filter") or {})]
        if body.get("nameOnly"):
            infos = [{"name": i["name"], "type": "collection"} for i in infos]
        return self._cursor(
            f"{db}.$cmd.listCollections", infos, len(infos) or 1, "firstBatch", True
        )

    def _coll(self, body: dict[str, Any], command: str) -> list[dict[str, Any]]:
        return self._store.setdefault(_ns(body, command), [])

    def _cursor(
        self, ns: str, docs: list[dict[str, Any]], batch: int, key: str, single: bool
    ) -> dict[str, Any]:
        first, rest = docs[:batch], docs[batch:]
        cid = 0
        if rest and not single:
            cid = next(self._cursor_ids)
            self._cursors[cid] = _Cursor(ns, rest)
        return {"cursor": {key: first, "id": bson.Int64(cid), "ns": ns}}


# -- OP_MSG ---------------------------------------------------------------------------------


def _parse_msg(payload: bytes) -> tuple[int, dict[str, Any]]:
    """(flagBits, body with kind-1 document sequences merged in)."""
    (flags,) = struct.unpack_from("<I", payload)
    end = len(payload) - (4 if flags & 1 else 0)
    pos, body, sequences = 4, None, {}
    while pos < end:
        kind = payload[pos]
        pos += 1
        if kind == 0:
            (size,) = struct.unpack_from("<i", payload, pos)
            body = bson.decode(payload[pos : pos + size])
            pos += size
        elif kind == 1:
            (size,) = struct.unpack_from("<i", payload, pos)
            section = payload[pos + 4 : pos + size]
            ident, _, docs = section.partition(b"\0")
            sequences[ident.decode()] = bson.decode_all(docs)
            pos += size
        else:
            raise ValueError(f"OP_MSG section kind {kind}")
    if body is None:
        raise ValueError("OP_MSG without a body")
    body.update(sequences)
    return flags, body


def _reply(request_id: int, response_to: int, doc: dict[str, Any]) -> bytes:
    data = struct.pack("<IB", 0, 0) + bson.encode(doc)
    return struct.pack("<iiii", 16 + len(data), request_id, response_to, OP_MSG) + data


def _ns(body: dict[str, Any], command: str) -> str:
    """``db.collection`` of a collection command (``{command: collection, $db: db}``)."""
    collection = body.get(command, body[next(iter(body))])
    if not isinstance(collection, str) or not collection:
        raise CommandError(73, "InvalidNamespace", f"{command} needs a collection name")
    return f"{body['$db']}.{collection}"


def _external_user(arn: str) -> str:
    """``arn:aws:sts::A:assumed-role/R/S`` -> ``arn:aws:iam::A:role/R``; others unchanged."""
    match = _ASSUMED.fullmatch(arn)
    if match:
        return f"arn:{match['p']}:iam::{match['a']}:role/{match['r']}"
    return arn


def _xml(text: str) -> ET.Element | None:
    try:
        return ET.fromstring(text)
    except ET.ParseError:
        return None


def _find(root: ET.Element | None, tag: str) -> str | None:
    if root is None:
        return None
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == tag:
            return (element.text or "").strip()
    return None


# -- the in-memory query language (just enough) -----------------------------------------------

_MISSING = object()


def _get_path(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return _MISSING
        doc = doc[part]
    return doc


def _rank(value: Any) -> tuple[int, Any]:
    """A sort key that orders mixed types the way MongoDB roughly does."""
    if value is _MISSING or value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (5, value)
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    if isinstance(value, ObjectId):
        return (4, str(value))
    if isinstance(value, dt.datetime):
        return (6, value.timestamp())
    return (3, repr(value))


def _compare(op: str, value: Any, arg: Any) -> bool:
    if op == "$eq":
        return value == arg or (arg is None and value is _MISSING)
    if op == "$ne":
        return not _compare("$eq", value, arg)
    if op == "$in":
        return any(_compare("$eq", value, a) for a in arg)
    if op == "$nin":
        return not _compare("$in", value, arg)
    if op == "$exists":
        return (value is not _MISSING) == bool(arg)
    if value is _MISSING or _rank(value)[0] != _rank(arg)[0]:
        return False
    left, right = _rank(value)[1], _rank(arg)[1]
    results = {
        "$gt": left > right,
        "$gte": left >= right,
        "$lt": left < right,
        "$lte": left <= right,
    }
    return bool(results[op])


def _matches(doc: dict[str, Any], query: dict[str, Any]) -> bool:
    for key, cond in query.items():
        if key == "$and":
            ok = all(_matches(doc, q) for q in cond)
        elif key == "$or":
            ok = any(_matches(doc, q) for q in cond)
        elif key.startswith("$"):
            raise CommandError(2, "BadValue", f"unknown top level operator: {key}")
        else:
            value = _get_path(doc, key)
            if isinstance(cond, dict) and cond and all(k.startswith("$") for k in cond):
                ops = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists"}
                unknown = set(cond) - ops
                if unknown:
                    raise CommandError(2, "BadValue", f"unknown operator: {sorted(unknown)[0]}")
                ok = all(_compare(op, value, arg) for op, arg in cond.items())
            else:
                ok = _compare("$eq", value, cond) or (isinstance(value, list) and cond in value)
        if not ok:
            return False
    return True


def _sorted(docs: list[dict[str, Any]], spec: dict[str, Any] | None) -> list[dict[str, Any]]:
    for key, direction in reversed(list((spec or {}).items())):

        def rank(doc: dict[str, Any], key: str = key) -> tuple[int, Any]:
            return _rank(_get_path(doc, key))

        docs = sorted(docs, key=rank, reverse=direction < 0)
    return docs


def _project(doc: dict[str, Any], projection: dict[str, Any] | None) -> dict[str, Any]:
    if not projection:
        return doc
    fields = {k: bool(v) for k, v in projection.items() if k != "_id"}
    keep_id = bool(projection.get("_id", True))
    if any(fields.values()):
        out = {k: doc[k] for k in fields if k in doc}
    else:
        out = {k: v for k, v in doc.items() if k not in fields}
    if keep_id and "_id" in doc:
        out = {"_id": doc["_id"], **out}
    else:
        out.pop("_id", None)
    return out


def _apply(doc: dict[str, Any], update: dict[str, Any]) -> None:
    if not any(k.startswith("$") for k in update):  # a replacement document
        keep = doc.get("_id")
        doc.clear()
        doc.update(update)
        if keep is not None:
            doc.setdefault("_id", keep)
        return
    for op, fields in update.items():
        for key, value in fields.items():
            if op == "$set":
                doc[key] = value
            elif op == "$unset":
                doc.pop(key, None)
            elif op == "$inc":
                doc[key] = doc.get(key, 0) + value
            else:
                raise CommandError(9, "FailedToParse", f"unknown update operator: {op}")


def _stage(docs: list[dict[str, Any]], stage: dict[str, Any]) -> list[dict[str, Any]]:
    ((name, arg),) = stage.items()
    if name == "$match":
        return [d for d in docs if _matches(d, arg)]
    if name == "$skip":
        return docs[int(arg) :]
    if name == "$limit":
        return docs[: int(arg)]
    if name == "$sort":
        return _sorted(docs, arg)
    if name == "$project":
        return [_project(d, arg) for d in docs]
    if name == "$count":
        return [{arg: len(docs)}] if docs else []
    if (
        name == "$group"
        and all(k == "_id" or v == {"$sum": 1} for k, v in arg.items())
        and not isinstance(arg.get("_id"), (str, dict))
    ):
        if not docs:
            return []
        return [{k: (v if k == "_id" else len(docs)) for k, v in arg.items()}]
    raise CommandError(
        40324, "Location40324", f"the devstack peer does not support the stage {name}"
    )
