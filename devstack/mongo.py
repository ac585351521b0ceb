"""A MongoDB wire-protocol peer that verifies MONGODB-AWS logins like Atlas does.

No MongoDB server can be installed here, so devstack speaks the protocol itself (asyncio). It
talks to every current client: the legacy ``OP_QUERY`` handshake that mongosh, the Node.js driver
and pymongo < 4.18 send first is answered as MongoDB 6/7 answer it, then ``OP_MSG``
(:mod:`devstack.mongo_wire`). It is a **verifying test peer, not a database**: the documents live
in memory (:mod:`devstack.mongo_store`), and only what iamdb's tests and examples use is served.

Authentication is done the way Atlas and Percona Server for MongoDB do it:

1. ``saslStart`` on ``$external`` with mechanism ``MONGODB-AWS``: the client sends 32 random
   bytes ``r`` and the channel-binding flag ``p`` = ``n``; the peer answers a 64-byte nonce
   ``s`` (``r`` + 32 bytes of its own) and the STS host ``h``.
2. ``saslContinue``: the client's signed STS ``GetCallerIdentity`` request is checked and
   forwarded to devstack's STS with the peer's nonce (:mod:`devstack.mongo_auth`).
3. The caller's ARN maps to a ``$external`` user, which must be configured (with its roles,
   reported by ``connectionStatus``; roles are shown, not enforced). moto does not check expiry,
   so the peer refuses credentials past the ``Expiration`` STS issued (``clock`` is injectable,
   for tests that simulate hours).

Every login attempt is recorded in :attr:`MongoPeer.events` (no secrets in them or in logs).
With ``documentdb=`` it plays an Amazon DocumentDB 5.0 cluster instead of a standalone
(:mod:`devstack.mongo_docdb`): a replica-set primary that refuses retryable writes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import os
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import bson
from bson.binary import Binary

from devstack.mongo_auth import AuthEvent, AuthFailed, Role, verify_caller
from devstack.mongo_docdb import VERSION as DOCDB_VERSION
from devstack.mongo_docdb import DocumentDB
from devstack.mongo_store import Store
from devstack.mongo_wire import CommandError, ProtocolError, answer, frame, read_message
from devstack.tls import TlsFiles
from devstack.verifier import KeyInfo

log = logging.getLogger("devstack.mongo")

# Commands a connection may run before it logged in (as a real mongod with auth on).
PRE_AUTH = frozenset(
    {"hello", "ismaster", "ping", "buildinfo", "saslstart", "saslcontinue", "connectionstatus"}
)
MECHANISMS = ["MONGODB-AWS"]


@dataclass
class _Conn:
    id: int
    user: str | None = None
    roles: tuple[Role, ...] = ()
    greeted: bool = False  # the client metadata arrived (only the first hello may carry it)
    nonces: dict[int, bytes] = field(default_factory=dict)  # conversationId -> server nonce


class MongoPeer:
    """Start with :meth:`start` (its own event-loop thread), always :meth:`stop`.

    ``users`` maps each ``$external`` user (an IAM role or user ARN) to the roles it holds.
    """

    def __init__(
        self,
        *,
        sts_endpoint: str,
        lookup: Callable[[str], KeyInfo | None],
        users: Mapping[str, Iterable[Role]] | None = None,
        tls: TlsFiles | None = None,
        port: int = 0,
        clock: Callable[[], float] = time.time,
        sts_host: str = "sts.amazonaws.com",
        documentdb: DocumentDB | None = None,
    ) -> None:
        self.sts_endpoint = sts_endpoint
        self.documentdb = documentdb
        self.sts_host = sts_host
        self.users = {arn: tuple(roles) for arn, roles in (users or {}).items()}
        self.clock = clock
        self.port = port
        self.events: deque[AuthEvent] = deque(maxlen=10_000)
        self._lookup = lookup
        self._tls = tls
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._store = Store()
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

    def add_user(self, arn: str, roles: Iterable[Role] = ()) -> None:
        """Create a ``$external`` user (an IAM role or user ARN) granted ``roles``."""
        self.users[arn] = tuple(roles)

    def remove_user(self, arn: str) -> None:
        self.users.pop(arn, None)

    def open_connections(self) -> int:
        """Client connections the peer is serving now (closed ones leave once it saw EOF)."""
        return len(self._writers)

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self._tls is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self._tls.cert), str(self._tls.key))
        return ctx

    # -- wire protocol -----------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(next(self._ids))
        self._writers.add(writer)

        async def dispatch(body: dict[str, Any]) -> dict[str, Any]:
            return await self._dispatch(conn, body)

        try:
            while True:
                request_id, opcode, payload = await read_message(reader)
                reply = await answer(opcode, payload, dispatch)
                if reply is not None:
                    writer.write(frame(next(self._ids), request_id, *reply))
                    await writer.drain()
        except ProtocolError as exc:
            log.info("mongo peer: %s, closing connection %d", exc, conn.id)
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
            if self.documentdb is not None:
                self.documentdb.check(body)
            if lname in ("saslstart", "saslcontinue"):
                return await self._sasl(conn, lname, body)
            handler = getattr(self, f"_cmd_{lname}", None)
            if handler is not None:
                result: dict[str, Any] = handler(conn, body)
            else:
                command = self._store.command(lname)
                if command is None:
                    raise CommandError(59, "CommandNotFound", f"no such command: '{name}'")
                result = command(body)
            return {**result, "ok": 1.0}
        except CommandError as err:
            return err.reply()

    # -- authentication ----------------------------------------------------------------

    async def _sasl(self, conn: _Conn, lname: str, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("$db") != "$external":
            raise CommandError(18, "AuthenticationFailed", "MONGODB-AWS must use $external")
        if lname == "saslstart":
            if body.get("mechanism") not in MECHANISMS:
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
        conn.user, conn.roles = user, self.users.get(user, ())
        self._record(True, "ok", key, user, expires)
        return {"conversationId": 1, "done": True, "payload": Binary(b""), "ok": 1.0}

    def _record(self, ok: bool, reason: str, key: str, user: str, expires: float | None) -> None:
        self.events.append(AuthEvent(ok, reason, key, user, self.clock(), expires))
        if not ok:
            log.info("refused MONGODB-AWS login: access_key=%s reason=%s", key or "-", reason)

    def _verify(self, second: dict[str, Any], server_nonce: bytes) -> tuple[str, str, float | None]:
        """Check one ``saslContinue`` payload; return (user, access key, expiry)."""
        user, key = verify_caller(
            second, server_nonce, sts_endpoint=self.sts_endpoint, sts_host=self.sts_host
        )
        info = self._lookup(key)
        expires = info.expires_at if info is not None else None
        if expires is not None and self.clock() >= expires:
            raise AuthFailed("credentials expired", key)
        if user not in self.users:
            raise AuthFailed(f"no $external user {user}", key)
        return user, key, expires

    # -- commands ------------------------------------------------------------------------

    def _cmd_hello(self, conn: _Conn, body: dict[str, Any]) -> dict[str, Any]:
        """A standalone's handshake reply, a DocumentDB primary's with ``documentdb`` (no
        ``topologyVersion`` either way: no streaming monitor).

        Offers no compression (``compression`` is left out) and no speculative authentication
        (MONGODB-AWS has none): real servers answer so when they have neither.
        """
        client = body.get("client")
        if client is not None:
            if conn.greeted:
                raise CommandError(
                    186,
                    "ClientMetadataCannotBeMutated",
                    "The client metadata document may only be sent in the first hello",
                )
            if not isinstance(client, dict):
                raise CommandError(14, "TypeMismatch", "'client' must be a document")
            conn.greeted = True
            log.debug("mongo peer: connection %d from %s", conn.id, client.get("driver"))
        reply: dict[str, Any] = {
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
        if self.documentdb is not None:
            reply.update(self.documentdb.hello(self.port))
        if body.get("helloOk"):
            reply["helloOk"] = True
        if body.get("saslSupportedMechs") in {f"$external.{arn}" for arn in self.users}:
            reply["saslSupportedMechs"] = MECHANISMS  # servers omit it for unknown users
        return reply

    def _cmd_ismaster(self, conn: _Conn, body: dict[str, Any]) -> dict[str, Any]:
        reply = self._cmd_hello(conn, body)
        reply["ismaster"] = reply.pop("isWritablePrimary")
        return reply

    def _cmd_ping(self, conn: _Conn, body: dict[str, Any]) -> dict[str, Any]:
        return {}

    def _cmd_buildinfo(self, conn: _Conn, body: dict[str, Any]) -> dict[str, Any]:
        version = "7.0.0" if self.documentdb is None else DOCDB_VERSION
        return {
            "version": version,
            "versionArray": [*map(int, version.split(".")), 0],
            "gitVersion": "iamdb-devstack-peer",
            "modules": ["iamdb-devstack"],
            "maxBsonObjectSize": 16 * 1024 * 1024,
        }

    def _cmd_connectionstatus(self, conn: _Conn, body: dict[str, Any]) -> dict[str, Any]:
        users = [] if conn.user is None else [{"user": conn.user, "db": "$external"}]
        roles = [{"role": r.role, "db": r.db} for r in conn.roles]
        return {"authInfo": {"authenticatedUsers": users, "authenticatedUserRoles": roles}}

    def _cmd_endsessions(self, conn: _Conn, body: dict[str, Any]) -> dict[str, Any]:
        return {}
