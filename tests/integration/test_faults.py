"""Fault suite on devstack's real servers: every case checks the failing invocation's outcome
and that the next invocation works (nothing left broken).

Already covered elsewhere, not repeated here: a backend killed while the environment is
frozen and a server restart between invocations (test_sql_singletons.py), DynamoDB
unreachable for the fleet limiter (test_fleet_limiter.py).

Wall-time checks assert a contract, not speed: the call returned before the deadline the
test handed iamdb (a Lambda context's remaining time), or loosely after a bound plus slack
(a hang shows, a busy 2-core machine does not fail).
"""

from __future__ import annotations

import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pymongo.errors import OperationFailure

import iamdb
from devstack.aws import MONGO_ROLE_ARN
from devstack.stack import MONGO_ROLES, Stack
from iamdb._core.runtime import Runtime
from iamdb._registry import Registry
from iamdb.errors import AuthError, ConnectError, ThrottleError
from tests.fakes import RecordingTelemetry
from tests.integration.faultproxy import (
    THROTTLE,
    BlackHole,
    FaultProxy,
    dribble,
    dynamodb_error,
    server_error,
    slow,
)

pytestmark = pytest.mark.integration

ENGINES = ["pg", "mysql"]
CONNECT_TIMEOUT = 2
SLACK = 8.0  # seconds on top of a bound: a hang shows, a busy 2-core machine does not fail


def getter(engine: str) -> Callable[..., Any]:
    return iamdb.get_pg if engine == "pg" else iamdb.get_mysql


def select_one(engine: str, conn: Any) -> Any:
    if engine == "pg":
        return conn.execute("SELECT 1").fetchone()[0]
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        return cur.fetchone()[0]


def timed(call: Callable[[], Any]) -> tuple[BaseException | None, float]:
    """Run ``call``; return the exception it raised (or None) and its wall time."""
    start = time.monotonic()
    try:
        call()
    except BaseException as exc:
        return exc, time.monotonic() - start
    return None, time.monotonic() - start


def is_running(stack: Stack, engine: str) -> bool:
    if engine == "pg":
        assert stack.pg is not None
        return (stack.pg.data / "postmaster.pid").exists()
    assert stack.mysql is not None
    return stack.mysql._proc is not None


@pytest.fixture
def server_down(stack: Stack, stack_env: dict[str, str]) -> Iterator[Callable[[str], Any]]:
    """Hands out the stack's server for an engine; whatever a test did, it runs again after."""
    used: list[str] = []

    def server(engine: str) -> Any:
        used.append(engine)
        return stack.pg if engine == "pg" else stack.mysql

    yield server
    for engine in used:
        if not is_running(stack, engine):
            server(engine).start()


def mongo_uri(stack: Stack, port: int, **options: str) -> str:
    assert stack.tls is not None
    ca = urllib.parse.quote(str(stack.tls.ca), safe="/")
    extra = "".join(f"&{k}={v}" for k, v in options.items())
    return f"mongodb://localhost:{port}/app?tls=true&tlsCAFile={ca}{extra}"


def mongo_round_trip() -> None:
    coll = iamdb.get_mongo().get_default_database().faults
    coll.insert_one({"ok": 1})
    assert coll.find_one({"ok": 1}) is not None


# -- 1. server down for longer than one invocation --------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_server_down_gives_connect_error_in_time_then_recovers(
    stack: Stack,
    stack_env: dict[str, str],
    server_down: Callable[[str], Any],
    monkeypatch: pytest.MonkeyPatch,
    engine: str,
) -> None:
    monkeypatch.setenv(f"IAMDB_{engine.upper()}_CONNECT_TIMEOUT", str(CONNECT_TIMEOUT))
    iamdb.reset()
    first = getter(engine)()
    assert select_one(engine, first) == 1
    server = server_down(engine)
    server.stop()
    for _ in range(2):  # two invocations while it is down: each fails fast and clearly
        error, took = timed(getter(engine))
        assert isinstance(error, ConnectError), repr(error)
        assert "could not connect" in str(error)
        assert took < 2 * CONNECT_TIMEOUT + SLACK
    server.start()
    second = getter(engine)()  # the first call after it is back recovers
    assert second is not first and select_one(engine, second) == 1
    assert getter(engine)() is second


# -- 2. black hole: accepts TCP, never answers ------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_black_hole_connect_timeout_holds(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    with BlackHole() as hole:
        monkeypatch.setenv(f"IAMDB_{engine.upper()}_PORT", str(hole.port))
        monkeypatch.setenv(f"IAMDB_{engine.upper()}_CONNECT_TIMEOUT", str(CONNECT_TIMEOUT))
        iamdb.reset()
        error, took = timed(getter(engine))
        assert isinstance(error, ConnectError), repr(error)
        assert hole.accepted >= 1  # the TCP connect succeeded: the timeout is the handshake's
        assert took < 2 * CONNECT_TIMEOUT + SLACK
    # The real server on the next invocation: nothing was left broken.
    monkeypatch.setenv(f"IAMDB_{engine.upper()}_PORT", stack_env[f"IAMDB_{engine.upper()}_PORT"])
    iamdb.reset()
    assert select_one(engine, getter(engine)()) == 1


def test_black_hole_mongo_is_bounded_by_its_uri_timeouts(
    stack: Stack, stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bound_ms = CONNECT_TIMEOUT * 1000
    with BlackHole() as hole:
        uri = mongo_uri(
            stack, hole.port, serverSelectionTimeoutMS=str(bound_ms), connectTimeoutMS=str(bound_ms)
        )
        monkeypatch.setenv("IAMDB_MONGO_URI", uri)
        iamdb.reset()
        error, took = timed(iamdb.get_mongo)
        assert isinstance(error, ConnectError), repr(error)
        assert hole.accepted >= 1
        assert took < 2 * CONNECT_TIMEOUT + SLACK
    monkeypatch.setenv("IAMDB_MONGO_URI", stack_env["IAMDB_MONGO_URI"])
    iamdb.reset()
    mongo_round_trip()


def test_black_hole_mongo_defaults_are_bounded(
    stack: Stack, stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without timeout options in the URI, iamdb's Lambda defaults (5 s) bound the wait."""
    with BlackHole() as hole:
        monkeypatch.setenv("IAMDB_MONGO_URI", mongo_uri(stack, hole.port))
        iamdb.reset()
        error, took = timed(iamdb.get_mongo)
        assert isinstance(error, ConnectError), repr(error)
        assert took < 5 + SLACK


# -- 3. STS errors through the fault proxy (role path of get_mongo) ---------------------------


@pytest.fixture
def sts_proxy(
    stack: Stack, stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[FaultProxy]:
    with FaultProxy(stack.aws.endpoint_url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", proxy.url)
        iamdb.reset()  # the STS client is rebuilt with the proxy's endpoint
        yield proxy
        iamdb.reset()


def assume_calls(proxy: FaultProxy) -> int:
    return sum(1 for hint, _ in proxy.requests if "AssumeRole" in hint)


class Invocation:
    """A Lambda context stand-in: ``seconds`` of the invocation remain from its creation."""

    def __init__(self, seconds: float) -> None:
        self.ends = time.time() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self.ends - time.time()) * 1000)


def test_sts_throttling_then_success_is_retried(sts_proxy: FaultProxy) -> None:
    sts_proxy.script(THROTTLE, THROTTLE)
    mongo_round_trip()
    assert assume_calls(sts_proxy) == 3  # two throttled, the third assumed the role


def test_sts_persistent_5xx_is_retried_until_the_deadline_then_recovers(
    sts_proxy: FaultProxy,
) -> None:
    sts_proxy.default = server_error(503)
    iamdb.set_lambda_context(Invocation(3.0))  # iamdb stops waiting 0.5 s before the end
    error, took = timed(iamdb.get_mongo)
    assert isinstance(error, ConnectError), repr(error)
    message = str(error)
    assert MONGO_ROLE_ARN in message and "before the deadline" in message and "503" in message
    assert assume_calls(sts_proxy) >= 2  # retried with backoff ...
    assert took < 3.0  # ... and given up before the invocation's end
    iamdb.set_lambda_context(None)
    sts_proxy.default = slow(0)  # STS is back: the next invocation logs in
    mongo_round_trip()


@pytest.mark.parametrize("fault", [slow(12), dribble(0.2)], ids=["no-answer", "dribbling"])
def test_sts_that_never_finishes_answering_ends_at_the_deadline(
    sts_proxy: FaultProxy, fault: Any
) -> None:
    sts_proxy.default = fault
    iamdb.set_lambda_context(Invocation(3.0))
    error, took = timed(iamdb.get_mongo)
    assert isinstance(error, ConnectError), repr(error)
    assert took < 3.0  # a total bound per call, not a per-read timeout
    iamdb.set_lambda_context(None)
    sts_proxy.default = slow(0)
    mongo_round_trip()


def test_sts_that_accepts_and_never_answers_ends_at_the_deadline(
    stack: Stack, stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with BlackHole() as hole:
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", f"http://127.0.0.1:{hole.port}")
        iamdb.reset()
        iamdb.set_lambda_context(Invocation(2.0))
        error, took = timed(iamdb.get_mongo)
        assert isinstance(error, ConnectError), repr(error)
        assert took < 2.0 and hole.accepted >= 1
    iamdb.reset()


def test_sts_slow_answers_within_the_deadline_succeed(sts_proxy: FaultProxy) -> None:
    sts_proxy.script(slow(1.5))
    error, took = timed(mongo_round_trip)
    assert error is None, repr(error)
    assert took >= 1.5 and assume_calls(sts_proxy) == 1


# -- 4. the fleet limiter's DynamoDB slow, failing or pushing back ------------------------------


@pytest.fixture
def dynamodb_proxy(
    stack: Stack, stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[FaultProxy]:
    with FaultProxy(stack.aws.endpoint_url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", proxy.url)
        yield proxy


@pytest.fixture
def fleet_registry(stack_env: dict[str, str]) -> Iterator[tuple[Registry, RecordingTelemetry]]:
    """A registry of its own (live environment), whose metrics the test can read."""
    telemetry = RecordingTelemetry()
    registry = Registry(runtime=Runtime(environ=os.environ), telemetry=telemetry)
    try:
        yield registry, telemetry
    finally:
        registry.reset()


def limiter_calls(proxy: FaultProxy) -> int:
    return sum(1 for hint, _ in proxy.requests if "UpdateItem" in hint)


def login(registry: Registry, engine: str) -> Any:
    get = registry.get_pg if engine == "pg" else registry.get_mysql
    return select_one(engine, get())


@pytest.mark.parametrize("fault", [slow(5), dribble(0.2)], ids=["no-answer", "dribbling"])
@pytest.mark.parametrize("engine", ENGINES)
def test_dynamodb_that_does_not_answer_in_time_fails_open(
    dynamodb_proxy: FaultProxy,
    fleet_registry: tuple[Registry, RecordingTelemetry],
    engine: str,
    fault: Any,
) -> None:
    registry, telemetry = fleet_registry
    dynamodb_proxy.default = fault  # past the limiter's 1 s per call
    error, took = timed(lambda: login(registry, engine))
    assert error is None, repr(error)
    # Asked twice (one late answer may be a stall), then failed open.
    assert telemetry.totals(engine)["LimiterFailOpen"] == 1 and limiter_calls(dynamodb_proxy) == 2
    assert took < 2 * 5  # never past the login's own bound


@pytest.mark.parametrize("engine", ENGINES)
def test_dynamodb_slow_within_its_bound_still_gives_a_slot(
    dynamodb_proxy: FaultProxy, fleet_registry: tuple[Registry, RecordingTelemetry], engine: str
) -> None:
    registry, telemetry = fleet_registry
    dynamodb_proxy.default = slow(0.3)
    assert login(registry, engine) == 1
    assert "LimiterFailOpen" not in telemetry.totals(engine)
    assert limiter_calls(dynamodb_proxy) >= 1


def test_dynamodb_throttling_is_back_pressure_not_an_outage(
    dynamodb_proxy: FaultProxy, fleet_registry: tuple[Registry, RecordingTelemetry]
) -> None:
    registry, telemetry = fleet_registry
    dynamodb_proxy.script(dynamodb_error("ThrottlingException"), server_error(503))
    assert login(registry, "pg") == 1
    totals = telemetry.totals("pg")
    # Two pushed back, the third took the ticket (a fourth, sent without waiting, marks the
    # queue idle again: it may reach the proxy later).
    assert "LimiterFailOpen" not in totals and limiter_calls(dynamodb_proxy) >= 3
    assert totals["ThrottleWaitMs"] >= 50  # backed off (at least the first 50 ms) and retried


def test_dynamodb_that_keeps_pushing_back_gives_throttle_error_at_the_deadline(
    dynamodb_proxy: FaultProxy, fleet_registry: tuple[Registry, RecordingTelemetry]
) -> None:
    registry, telemetry = fleet_registry
    dynamodb_proxy.default = dynamodb_error("ThrottlingException")
    registry.set_lambda_context(Invocation(2.0))
    error, took = timed(lambda: login(registry, "pg"))
    assert isinstance(error, ThrottleError) and "pushing back" in str(error), repr(error)
    assert took < 2.0 and limiter_calls(dynamodb_proxy) >= 2
    assert "LimiterFailOpen" not in telemetry.totals("pg")
    registry.set_lambda_context(None)
    dynamodb_proxy.default = slow(0)  # DynamoDB is back: the next invocation logs in
    assert login(registry, "pg") == 1


# -- 5. the Mongo peer refusing credentials mid-run -------------------------------------------


@pytest.fixture(params=["600000", "500"], ids=["refusal-on-record", "heartbeat-cleared"])
def revocable(
    stack: Stack, sts_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, request: Any
) -> Iterator[Any]:
    """The Mongo peer, with the role's user restored whatever the test did.

    With a long heartbeat the refusal stays on pymongo's server description until the next
    ``get_mongo()``; with a 0.5 s one the monitor clears it first (as a frozen environment's
    would after 10 s), and only iamdb's listener remembers it.
    """
    peer = stack.mongo
    assert peer is not None
    uri = mongo_uri(stack, peer.port, heartbeatFrequencyMS=request.param)
    monkeypatch.setenv("IAMDB_MONGO_URI", uri)
    iamdb.reset()
    try:
        yield peer
    finally:
        peer.add_user(MONGO_ROLE_ARN, MONGO_ROLES)


def drop_sockets(peer: Any) -> None:
    """The peer closes every connection: the next operation needs a new socket and login."""
    done = threading.Event()

    def close_all() -> None:
        for writer in list(peer._writers):
            writer.close()
        done.set()

    peer._loop.call_soon_threadsafe(close_all)
    assert done.wait(5)


def wait_for_heartbeat_to_clear(client: Any) -> None:
    """Until pymongo's monitor replaced the refused server's description with a healthy one."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        servers = client.topology_description.server_descriptions().values()
        if all(server.error is None for server in servers):
            return
        time.sleep(0.05)
    raise AssertionError("the heartbeat never cleared the refusal")


def test_revoked_role_reassumes_once_then_auth_error(revocable: Any, sts_proxy: FaultProxy) -> None:
    mongo_round_trip()
    client = iamdb.get_mongo()
    assert assume_calls(sts_proxy) == 1
    revocable.remove_user(MONGO_ROLE_ARN)
    drop_sockets(revocable)
    with pytest.raises(OperationFailure) as info:  # the running invocation sees the refusal
        client.get_default_database().faults.find_one({})
    assert info.value.code == 18
    if client.options.heartbeat_frequency < 1:
        wait_for_heartbeat_to_clear(client)
    # The next invocation: iamdb assumes the role once more, the server refuses that too.
    with pytest.raises(AuthError, match=MONGO_ROLE_ARN):
        iamdb.get_mongo()
    assert assume_calls(sts_proxy) == 2
    # Access restored: the next call assumes again and works; nothing was left broken.
    revocable.add_user(MONGO_ROLE_ARN)
    mongo_round_trip()
    assert iamdb.get_mongo() is not client
    assert assume_calls(sts_proxy) == 3
