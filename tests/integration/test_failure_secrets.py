"""No secret is reachable from any failure: every failure point, walked as a crash reporter does.

A table of failure points, one per row, each reached through the public API against devstack:
STS (a trust policy that does not admit the function, STS unreachable, a signature mismatch,
throttling until the deadline, answers that are not credentials), MONGODB-AWS against a server
whose SASL frames are malformed, and the SQL flavours (singletons, ``pg_pool``, SQLAlchemy,
``iamdb.aio``) refused or unreachable. Each must raise an ``IamDbError`` from which
:func:`tests.integration.kept_alive.kept_alive` reaches no secret: the function's secret key
and session token, any token iamdb signed, any assumed role's credentials. The container
credentials and the fleet queue have their own tables (tests/unit/aws/container,
tests/unit/sql/fleet).
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import bson
import pytest

import iamdb
from devstack.aws import MONGO_UNTRUSTED_ROLE_ARN
from devstack.mongo_wire import OP_MSG, frame, parse_msg, read_message
from devstack.stack import Stack
from tests.integration.faultproxy import THROTTLE, Fault, FaultProxy
from tests.integration.leaks import Secrets

pytestmark = pytest.mark.integration


class Context:
    """A Lambda context: ``seconds`` of the invocation remain from its creation."""

    def __init__(self, seconds: float) -> None:
        import time

        self.ends = time.time() + seconds
        self.aws_request_id = "failure-secrets"

    def get_remaining_time_in_millis(self) -> int:
        import time

        return int((self.ends - time.time()) * 1000)


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class MalformedMongo:
    """A plaintext loopback "MongoDB" that answers ``hello`` properly and ``saslStart`` with
    ``reply`` (missing fields, a payload that is no BSON...): pymongo's own code then fails
    while it holds the credentials."""

    def __init__(self, reply: dict[str, Any]) -> None:
        self.reply = reply
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.port = 0

        def run() -> None:
            async def start() -> None:
                server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
                self.port = server.sockets[0].getsockname()[1]
                ready.set()

            self.loop.run_until_complete(start())
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(5)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_id, opcode, payload = await read_message(reader)
                if opcode != OP_MSG:
                    return
                _, body = parse_msg(payload)
                name = next(iter(body)).lower()
                if name in ("hello", "ismaster"):
                    doc = {
                        "ok": 1.0,
                        "isWritablePrimary": True,
                        "maxWireVersion": 21,
                        "minWireVersion": 0,
                        "maxBsonObjectSize": 16777216,
                        "maxMessageSizeBytes": 48000000,
                        "maxWriteBatchSize": 100000,
                        "logicalSessionTimeoutMinutes": 30,
                        "connectionId": 1,
                    }
                else:
                    doc = self.reply
                data = struct.pack("<IB", 0, 0) + bson.encode(doc)
                writer.write(frame(1, request_id, OP_MSG, data))
                await writer.drain()
        except Exception:
            writer.close()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


Case = Callable[[pytest.MonkeyPatch, Stack, Secrets], BaseException]


def raised(call: Callable[[], Any]) -> BaseException:
    try:
        call()
    except iamdb.IamDbError as exc:
        return exc
    raise AssertionError("expected an IamDbError")


def _untrusted_role(mp: pytest.MonkeyPatch, stack: Stack, found: Secrets) -> BaseException:
    mp.setenv("IAMDB_MONGO_ROLE_ARN", MONGO_UNTRUSTED_ROLE_ARN)
    iamdb.reset()
    return raised(iamdb.get_mongo)


def _sts_unreachable(mp: pytest.MonkeyPatch, stack: Stack, found: Secrets) -> BaseException:
    mp.setenv("AWS_ENDPOINT_URL_STS", f"http://127.0.0.1:{closed_port()}")
    iamdb.reset()
    iamdb.set_lambda_context(Context(1.5))
    return raised(iamdb.get_mongo)


def _signature_mismatch(mp: pytest.MonkeyPatch, stack: Stack, found: Secrets) -> BaseException:
    wrong = "A" * 40
    found.add_secret(wrong)
    mp.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    iamdb.reset()
    return raised(iamdb.get_mongo)


def _sts_answering(fault: Fault) -> Case:
    def case(mp: pytest.MonkeyPatch, stack: Stack, found: Secrets) -> BaseException:
        proxy = FaultProxy(stack.aws.endpoint_url)
        proxy.__enter__()
        mp.setattr(_PROXIES, "current", proxy)
        proxy.default = fault
        mp.setenv("AWS_ENDPOINT_URL_STS", proxy.url)
        iamdb.reset()
        iamdb.set_lambda_context(Context(1.5))
        return raised(iamdb.get_mongo)

    return case


class _PROXIES:
    current: FaultProxy | None = None


def _malformed_sasl(reply: dict[str, Any]) -> Case:
    def case(mp: pytest.MonkeyPatch, stack: Stack, found: Secrets) -> BaseException:
        server = MalformedMongo(reply)
        mp.setattr(_SERVERS, "current", server)
        mp.setenv("IAMDB_MONGO_URI", f"mongodb://127.0.0.1:{server.port}/app?tls=false")
        iamdb.reset()
        iamdb.set_lambda_context(Context(3.0))
        return raised(iamdb.get_mongo)

    return case


class _SERVERS:
    current: MalformedMongo | None = None


def _sql(engine: str, variable: str, value: str, flavour: str = "singleton") -> Case:
    def case(mp: pytest.MonkeyPatch, stack: Stack, found: Secrets) -> BaseException:
        mp.setenv(f"IAMDB_{engine.upper()}_{variable}", value)
        iamdb.reset()
        iamdb.set_lambda_context(Context(2.0))
        if flavour == "pool":
            pool = iamdb.pg_pool()
            try:
                return raised(lambda: pool.connection().__enter__())
            finally:
                pool.close()
        if flavour == "sqlalchemy":
            from iamdb.sqlalchemy import create_engine

            sa_engine = create_engine(engine)  # type: ignore[arg-type]
            return raised(lambda: sa_engine.connect().close())
        if flavour == "aio":
            from iamdb import aio

            return raised(lambda: asyncio.run(aio.get_pg()))
        getter = {"pg": iamdb.get_pg, "mysql": iamdb.get_mysql, "dsql": iamdb.get_dsql}
        return raised(getter[engine])

    return case


NO_TOKEN = (
    "<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>ASIAX</AccessKeyId>"
    f"<SecretAccessKey>s{'e' * 40}</SecretAccessKey></Credentials></AssumeRoleResult>"
    "</AssumeRoleResponse>"
)

CASES: dict[str, Case] = {
    "sts: trust policy does not admit the function": _untrusted_role,
    "sts: unreachable until the deadline": _sts_unreachable,
    "sts: signature mismatch": _signature_mismatch,
    "sts: throttling until the deadline": _sts_answering(THROTTLE),
    "sts: 500 until the deadline": _sts_answering(Fault(500, "<x/>")),
    "sts: 200 that is not XML": _sts_answering(Fault(200, "{not xml")),
    "sts: 200 without a session token": _sts_answering(
        Fault(
            200,
            "<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>ASIAX"
            "</AccessKeyId><SecretAccessKey>s" + "e" * 40 + "</SecretAccessKey>"
            "</Credentials></AssumeRoleResult></AssumeRoleResponse>",
        )
    ),
    "mongo sasl: no payload": _malformed_sasl({"ok": 1.0, "conversationId": 1, "done": False}),
    "mongo sasl: no conversationId": _malformed_sasl(
        {
            "ok": 1.0,
            "payload": bson.encode({"s": b"x" * 64, "h": "sts.amazonaws.com"}),
            "done": False,
        }
    ),
    "mongo sasl: payload not BSON": _malformed_sasl(
        {"ok": 1.0, "conversationId": 1, "payload": b"\x05\x00\x00\x00garbage", "done": False}
    ),
    "mongo sasl: no done": _malformed_sasl(
        {"ok": 1.0, "conversationId": 1, "payload": bson.encode({"x": 1})}
    ),
    "pg: refused login": _sql("pg", "USER", "nobody"),
    "mysql: refused login": _sql("mysql", "USER", "nobody"),
    "dsql: role not allowed": _sql("dsql", "USER", "iamdb_dsql_app"),
    "pg: nothing listening": _sql("pg", "PORT", str(closed_port())),
    "mysql: nothing listening": _sql("mysql", "PORT", str(closed_port())),
    "pg_pool: refused login": _sql("pg", "USER", "nobody", "pool"),
    "pg_pool: nothing listening": _sql("pg", "PORT", str(closed_port()), "pool"),
    "sqlalchemy pg: refused login": _sql("pg", "USER", "nobody", "sqlalchemy"),
    "sqlalchemy mysql: nothing listening": _sql("mysql", "PORT", str(closed_port()), "sqlalchemy"),
    "aio pg: refused login": _sql("pg", "USER", "nobody", "aio"),
    "aio pg: nothing listening": _sql("pg", "PORT", str(closed_port()), "aio"),
}


@pytest.fixture
def cleanup() -> Iterator[None]:
    yield
    if _PROXIES.current is not None:
        _PROXIES.current.__exit__(None, None, None)
    if _SERVERS.current is not None:
        _SERVERS.current.close()
    iamdb.set_lambda_context(None)


@pytest.mark.parametrize("case", list(CASES))
def test_no_secret_is_reachable_from_the_failure(
    case: str,
    secrets: Secrets,
    stack: Stack,
    monkeypatch: pytest.MonkeyPatch,
    cleanup: None,
    caplog: Any,
) -> None:
    if "mysql" in case and stack.mysql is None:
        pytest.skip("no MariaDB")
    iamdb.get_pg()  # a token and an assumed role made before the failure: they must not show
    iamdb.get_mongo()
    exc = CASES[case](monkeypatch, stack, secrets)
    assert isinstance(exc, iamdb.IamDbError)
    assert exc.__context__ is None and exc.__cause__ is None, repr(exc.__context__)
    assert secrets.tokens and secrets.leases
    secrets.see_exception(case, exc)
    leaks = secrets.leaks()
    assert not leaks, "\n".join(sorted(set(leaks)))
