"""No secret is reachable from any error of AwsClient or HttpConnection, at every failure point.

Each failure is provoked for real (loopback servers of our own, :mod:`tests.localserver`) with
credentials whose secret key and session token are known, then everything the exception
keeps alive is walked as a crash reporter would (:func:`tests.integration.kept_alive`):
message, attributes, ``__cause__``/``__context__`` and every traceback frame's locals. The
frame of the test's own helper (which built the environment) is dropped first: above iamdb,
frames are the application's.

Also here: the credential fetch inside an AWS call ends by the call's deadline (it ignored it:
``get_mongo()`` took 2.06 s with 0.4 s left).
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.tls import make_tls
from iamdb._aws.chain import CredentialResolver
from iamdb._aws.client import AwsClient
from iamdb._aws.http import HttpConnection, TransportError
from iamdb._core.log import WarnOnce
from iamdb._core.runtime import Runtime
from iamdb._sql.fleet import FleetLimiter
from iamdb._sql.pace import Waits
from iamdb.errors import ConfigError, CredentialsError, IamDbError, ThrottleError
from tests.fakes import FakeTime
from tests.integration.kept_alive import kept_alive
from tests.localserver import LocalServer, answering, read_request, response, tls_context

SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYSECRETKEY"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEKEPTALIVE//////////SESSIONTOKEN"
ASSUMED_SECRET = "assumed-secret-key-KEPTALIVE-0123456789"
CONTAINER_TOKEN = "container-authorization-token-KEPTALIVE"
SECRETS = (SECRET_KEY, SESSION_TOKEN, ASSUMED_SECRET, CONTAINER_TOKEN, "Signature=")
MiB = 1024 * 1024
SLACK = 1.0  # generous: how long past its deadline a call may end on a slow machine
STS_OK = (
    '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>'
    "<Credentials><AccessKeyId>ASIAASSUMED000000001</AccessKeyId>"
    f"<SecretAccessKey>{ASSUMED_SECRET}</SecretAccessKey><SessionToken>t</SessionToken>"
    "<Expiration>2030-01-01T00:00:00Z</Expiration></Credentials></AssumeRoleResult>"
    "</AssumeRoleResponse>"
).encode()


def assert_no_secret(error: BaseException) -> None:
    for path, text in kept_alive(error):
        for secret in SECRETS:
            assert secret not in text, f"{secret[:12]}... reachable at {path}"


def _environ(url: str, **extra: str) -> dict[str, str]:
    """What Lambda's environment holds (the secrets included) and the endpoint."""
    return {
        "AWS_ACCESS_KEY_ID": "ASIAKEPTALIVE0000001",
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": url,
        **extra,
    }


def _failure(
    env: dict[str, str], service: str, seconds: float = 2.0, payload: Any = None
) -> IamDbError:
    """The error one call raises, with this helper's frame (which holds ``env``) dropped."""
    aws = AwsClient(Runtime(environ=env), CredentialResolver(Runtime(environ=env)))
    deadline = time.time() + seconds
    try:
        if service == "dynamodb":
            aws.dynamodb("UpdateItem", payload or {"TableName": "t", "Key": {}}, deadline)
        else:
            aws.sts({"Action": "AssumeRole", "RoleArn": "arn:aws:iam::1:role/r"}, deadline)
    except IamDbError as exc:
        error = exc
    else:
        raise AssertionError("the call succeeded")
    finally:
        aws.close()
    assert error.__traceback__ is not None
    error.__traceback__ = error.__traceback__.tb_next
    return error


def _serving(answer: bytes, *, then: str = "close") -> Callable[[socket.socket, LocalServer], None]:
    def handle(conn: socket.socket, server: LocalServer) -> None:
        if read_request(conn) is None:
            return
        conn.sendall(answer)
        if then == "wait":
            server.stopping.wait(10)

    return handle


def _silent(conn: socket.socket, server: LocalServer) -> None:
    read_request(conn)
    server.stopping.wait(10)


def _deaf(conn: socket.socket, server: LocalServer) -> None:
    server.stopping.wait(10)


def _dribble(conn: socket.socket, server: LocalServer) -> None:
    read_request(conn)
    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100:
        if server.stopping.wait(0.05):
            return
        conn.sendall(bytes([byte]))


def _xml(status: int, code: str) -> bytes:
    body = f"<ErrorResponse><Error><Code>{code}</Code><Message>m</Message></Error></ErrorResponse>"
    return response(status, body.encode(), [("Content-Type", "text/xml")])


def _json(status: int, kind: str) -> bytes:
    return response(status, json.dumps({"__type": kind, "message": "m"}).encode())


SERVED: dict[str, Callable[[socket.socket, LocalServer], None]] = {
    "read-timeout": _silent,
    "dribble": _dribble,
    "broken-status": _serving(b"HTTP/1.1 \xb200 OK\r\n\r\n"),
    "broken-length": _serving(b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n", then="wait"),
    "broken-chunk": _serving(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\n"),
    "broken-header": _serving(b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n"),
    "mid-answer": _serving(b"HTTP/1.1 200 OK\r\nContent-Length: 900\r\n\r\n" + STS_OK),
    "xml-4xx": _serving(_xml(403, "AccessDenied")),
    "xml-5xx": _serving(_xml(503, "ServiceUnavailable")),
    "json-4xx": _serving(_json(400, "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException")),
    "json-5xx": _serving(_json(500, "com.amazonaws.dynamodb.v20120810#InternalServerError")),
    "malformed-xml": _serving(response(200, STS_OK + b"<trailing")),
    "malformed-json": _serving(response(200, b'{"Attributes": ')),
}


@pytest.mark.parametrize("service", ["dynamodb", "sts"])
@pytest.mark.parametrize("case", sorted(SERVED))
def test_no_secret_in_errors_of_answers(case: str, service: str) -> None:
    with LocalServer(SERVED[case]) as server:
        error = _failure(_environ(server.url), service, seconds=0.5)
    assert_no_secret(error)


@pytest.mark.parametrize("service", ["dynamodb", "sts"])
def test_no_secret_when_the_connection_is_refused(service: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = _failure(_environ(f"http://127.0.0.1:{port}"), service)
    assert isinstance(error, TransportError) and "cannot connect" in str(error)
    assert_no_secret(error)


@pytest.mark.parametrize("service", ["dynamodb", "sts"])
def test_no_secret_when_tls_fails(tmp_path: Path, service: str) -> None:
    served = make_tls(tmp_path / "served", ["localhost"], ["127.0.0.1"])
    other = make_tls(tmp_path / "other", ["localhost"], ["127.0.0.1"])
    with LocalServer(answering(lambda _: response(200)), tls=tls_context(served)) as server:
        env = _environ(f"https://localhost:{server.port}", AWS_CA_BUNDLE=str(other.ca))
        error = _failure(env, service)
    assert isinstance(error, TransportError) and "TLS" in str(error)
    assert_no_secret(error)


def test_no_secret_when_sending_times_out() -> None:
    payload = {"TableName": "t", "Key": {"pk": {"S": "x" * (16 * MiB)}}}
    with LocalServer(_deaf) as server:
        error = _failure(_environ(server.url), "dynamodb", seconds=0.5, payload=payload)
    assert isinstance(error, TransportError) and "sending" in str(error)
    assert_no_secret(error)


def test_no_secret_when_no_time_is_left() -> None:
    with LocalServer(answering(lambda _: response(200))) as server:
        error = _failure(_environ(server.url), "sts", seconds=-1.0)
    assert isinstance(error, TransportError)
    assert_no_secret(error)


@pytest.mark.parametrize("how", ["close", "reset"])
def test_no_secret_on_the_resend_path(how: str) -> None:
    """A kept-alive connection closed under a request: GET is sent again, POST is not."""

    def one_answer(conn: socket.socket, server: LocalServer) -> None:
        assert read_request(conn) is not None
        conn.sendall(response(200, b"{}"))
        read_request(conn)
        if how == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    with LocalServer(one_answer) as server:
        conn = HttpConnection("http", server.host, server.port, clock=time.time, environ={})
        headers = {"host": "h", "x-amz-security-token": SESSION_TOKEN}
        for method in ("GET", "GET", "POST"):
            try:
                conn.request(method, "/", headers, b"", time.time() + 5)
            except TransportError as exc:
                error = exc
        conn.close()
    assert error.sent
    assert_no_secret(error)


def test_no_secret_when_the_credentials_cannot_be_sent() -> None:
    """A session token HTTP/1.1 cannot carry: UnicodeEncodeError's object was the whole head."""
    with LocalServer(answering(lambda _: response(200))) as server:
        env = _environ(server.url)
        env["AWS_SESSION_TOKEN"] = SESSION_TOKEN + "\u20ac"
        error = _failure(env, "dynamodb")
        assert server.accepted == 0
    # Refused where it is read, naming the variable: no request head is ever built with it.
    assert isinstance(error, ConfigError) and error.variable == "AWS_SESSION_TOKEN"
    assert_no_secret(error)


def test_no_secret_when_the_credentials_cannot_be_signed() -> None:
    with LocalServer(answering(lambda _: response(200))) as server:
        env = _environ(server.url)
        env["AWS_SECRET_ACCESS_KEY"] = SECRET_KEY + "\udcff"
        error = _failure(env, "sts")
    assert isinstance(error, ConfigError)
    assert_no_secret(error)


def test_no_secret_when_the_fleet_limiter_gives_up_under_throttling() -> None:
    """The ThrottleError keeps the last AwsError as ``__context__``: its frames held the
    signed headers (``x-amz-security-token``, ``authorization``)."""
    throttled = _json(400, "com.amazon.coral.availability#ThrottlingException")
    with LocalServer(answering(lambda _: throttled)) as server:
        env = _environ(server.url)
        t = FakeTime()
        rt = Runtime(environ=env, clock=t.clock, sleep=t.sleep, random=lambda: 0.5)
        aws = AwsClient(rt, CredentialResolver(Runtime(environ=env)))
        fleet = FleetLimiter("iamdb-throttle", aws, rt, WarnOnce())
        with pytest.raises(ThrottleError) as info:
            fleet.acquire("db.example:5432", 10.0, Waits(rt, "db.example:5432", t.now + 2.0))
        aws.close()
    del env, rt, aws, fleet
    assert len(server.captured) >= 2
    assert_no_secret(info.value)


# --- the credential fetch inside a call ends by the call's deadline --------------------------


@pytest.fixture
def silent_container_endpoint() -> Iterator[tuple[LocalServer, threading.Event]]:
    answered = threading.Event()

    def silent(conn: socket.socket, server: LocalServer) -> None:
        read_request(conn)
        server.stopping.wait(10)
        answered.set()

    with LocalServer(silent) as server:
        yield server, answered


@pytest.mark.parametrize("service", ["dynamodb", "sts"])
def test_container_credentials_are_fetched_by_the_calls_deadline(
    silent_container_endpoint: tuple[LocalServer, threading.Event], service: str
) -> None:
    """SnapStart: credentials come from the container endpoint; an endpoint that does not
    answer must not hold the call past its deadline (the fetch's own bound is 2 s)."""
    container, _ = silent_container_endpoint
    with LocalServer(answering(lambda _: response(200))) as aws_server:
        env = {
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": aws_server.url,
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{container.url}/creds",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": CONTAINER_TOKEN,
        }
        start = time.monotonic()
        error = _failure(env, service, seconds=0.4)
        assert time.monotonic() - start < 0.4 + SLACK
        assert aws_server.accepted == 0
    assert isinstance(error, CredentialsError) and "container" in str(error)
    assert_no_secret(error)
