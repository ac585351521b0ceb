"""Every answer that is not what DynamoDB or STS promise becomes an IamDbError, never a KeyError.

A local server of our own (:mod:`tests.localserver`) answers AwsClient's real requests with
AWS's error documents, with what proxies and load balancers send instead (HTML, empty bodies,
truncated answers) and with garbage; ``assume_role`` is driven on top of the same answers
with a fake clock and sleep. Each error is also searched for the secrets of the request: its
message, repr, attributes and the exceptions it chains to.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from iamdb._aws import sts as _sts
from iamdb._aws.chain import CredentialResolver
from iamdb._aws.client import THROTTLING, AwsClient, AwsError, retryable
from iamdb._aws.http import TransportError
from iamdb._core.runtime import Runtime
from iamdb.errors import (
    AuthError,
    ConfigError,
    ConnectError,
    CredentialsError,
    IamDbError,
    ThrottleError,
)
from tests.fakes import FakeTime
from tests.localserver import Captured, LocalServer, answering, read_request, response

SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjE//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+SESSIONTOKEN"
ROLE = "arn:aws:iam::123456789012:role/iamdb-mongo-access"
JSON = [("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-RequestId", "RID-DDB")]
XML = [("Content-Type", "text/xml")]
STS_NS = 'xmlns="https://sts.amazonaws.com/doc/2011-06-15/"'


class Scripted:
    """A server whose next answers are set by the test (the last one repeats)."""

    def __init__(self) -> None:
        self.answers: list[bytes] = [response(200, b"{}")]

    def __call__(self, _request: Captured) -> bytes:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture
def script() -> Scripted:
    return Scripted()


@pytest.fixture
def server(script: Scripted) -> Iterator[LocalServer]:
    with LocalServer(answering(script)) as local:
        yield local


def _env(url: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "ASIAEXAMPLEEXAMPLE01",
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": url,
    }


@pytest.fixture
def client(server: LocalServer) -> Iterator[AwsClient]:
    env = _env(server.url)
    aws = AwsClient(Runtime(environ=env), CredentialResolver(Runtime(environ=env)))
    yield aws
    aws.close()


def _dynamodb(aws: AwsClient) -> Any:
    return aws.dynamodb("UpdateItem", {"TableName": "t", "Key": {}}, _far())


def _call_sts(aws: AwsClient) -> Any:
    return aws.sts({"Action": "AssumeRole", "RoleArn": ROLE, "RoleSessionName": "s"}, _far())


def _far() -> float:
    return Runtime().clock() + 10


def assert_no_secret(error: BaseException) -> None:
    """Neither the message, repr, attributes nor chained exceptions hold a secret."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        exc = todo.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        texts = [str(exc), repr(exc), *map(repr, exc.args), *map(repr, vars(exc).values())]
        for text in texts:
            for secret in (SECRET_KEY, SESSION_TOKEN, "Signature="):
                assert secret not in text, f"{type(exc).__name__} holds a secret"
        todo += [exc.__cause__, exc.__context__]


# --- DynamoDB -------------------------------------------------------------------------------


def _ddb_error(status: int, kind: str, message: str = "m", **extra: Any) -> bytes:
    import json

    body = {"__type": kind, "message": message, **extra}
    return response(status, json.dumps(body).encode(), JSON)


def test_conditional_check_failed_carries_the_old_item(script: Scripted, client: AwsClient) -> None:
    item = {"pk": {"S": "q#h:5432"}, "n": {"N": "1764547200000000"}}
    script.answers = [
        _ddb_error(
            400,
            "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
            "The conditional request failed",
            Item=item,
        )
    ]
    with pytest.raises(AwsError) as info:
        _dynamodb(client)
    error = info.value
    assert (error.service, error.code, error.status) == (
        "dynamodb",
        "ConditionalCheckFailedException",
        400,
    )
    assert error.item == item and error.request_id == "RID-DDB"
    assert not retryable(error)
    assert_no_secret(error)


@pytest.mark.parametrize(
    ("status", "kind", "code", "retry"),
    [
        (400, "com.amazon.coral.availability#ThrottlingException", "ThrottlingException", True),
        (
            400,
            "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "ProvisionedThroughputExceededException",
            True,
        ),
        (
            400,
            "com.amazonaws.dynamodb.v20120810#RequestLimitExceeded",
            "RequestLimitExceeded",
            True,
        ),
        (500, "com.amazonaws.dynamodb.v20120810#InternalServerError", "InternalServerError", True),
        (
            503,
            "com.amazon.coral.availability#ServiceUnavailableException",
            "ServiceUnavailableException",
            True,
        ),
        (400, "com.amazon.coral.validate#ValidationException", "ValidationException", False),
        (
            400,
            "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException",
            "ResourceNotFoundException",
            False,
        ),
        (400, "com.amazon.coral.service#AccessDeniedException", "AccessDeniedException", False),
        (
            400,
            "com.amazon.coral.service#UnrecognizedClientException",
            "UnrecognizedClientException",
            False,
        ),
        (400, "ThrottlingException", "ThrottlingException", True),  # no namespace
    ],
)
def test_dynamodb_json_errors(
    script: Scripted, client: AwsClient, status: int, kind: str, code: str, retry: bool
) -> None:
    script.answers = [_ddb_error(status, kind, "x" * 5000)]
    with pytest.raises(AwsError) as info:
        _dynamodb(client)
    assert (info.value.code, info.value.status) == (code, status)
    assert info.value.item is None
    assert retryable(info.value) is retry
    assert len(str(info.value)) < 500  # a long message is cut
    assert_no_secret(info.value)


@pytest.mark.parametrize(
    ("answer", "code", "retry"),
    [
        (
            response(
                500,
                b"<html><body>Internal Server Error</body></html>",
                [("Content-Type", "text/html")],
            ),
            "MalformedResponse",
            True,
        ),
        (response(502, b"<html>Bad Gateway</html>"), "MalformedResponse", True),
        (response(503, b""), "HTTP503", True),
        (response(400, b""), "HTTP400", False),
        (response(200, b"not json at all"), "MalformedResponse", False),
        (response(200, b'{"Attributes": '), "MalformedResponse", False),
        (response(200, b"[1, 2, 3]"), "MalformedResponse", False),
        (response(200, b'"a string"'), "MalformedResponse", False),
        (response(200, b"null"), "MalformedResponse", False),
        (response(200, b"\xff\xfe\x00\x00garbage"), "MalformedResponse", False),
        (response(200, b"[" * 100_000 + b"]" * 100_000), "MalformedResponse", False),
        (
            response(400, b'{"__type": 7, "message": ["not", "text"], "Item": "nope"}'),
            "HTTP400",
            False,
        ),
        (response(400, b'{"message": "no type"}'), "HTTP400", False),
        (response(403, b'{"Message": "Forbidden"}'), "HTTP403", False),
    ],
    ids=[
        "500-html",
        "502-html",
        "503-empty",
        "400-empty",
        "200-garbage",
        "200-truncated-json",
        "200-list",
        "200-string",
        "200-null",
        "200-not-utf8",
        "200-deeply-nested",
        "400-odd-types",
        "400-no-type",
        "403-gateway",
    ],
)
def test_dynamodb_answers_that_are_not_dynamodb_answers(
    script: Scripted, client: AwsClient, answer: bytes, code: str, retry: bool
) -> None:
    script.answers = [answer]
    with pytest.raises(AwsError) as info:
        _dynamodb(client)
    assert info.value.code == code
    assert info.value.item is None
    assert retryable(info.value) is retry
    assert_no_secret(info.value)


def test_dynamodb_success_is_the_decoded_answer(script: Scripted, client: AwsClient) -> None:
    script.answers = [response(200, b'{"Attributes": {"n": {"N": "5"}}}', JSON)]
    assert _dynamodb(client) == {"Attributes": {"n": {"N": "5"}}}
    script.answers = [response(200, b"", JSON)]  # UpdateItem without ReturnValues: nothing
    assert _dynamodb(client) == {}


# --- STS --------------------------------------------------------------------------------------


def _sts_error(status: int, code: str, message: str = "m", kind: str = "Sender") -> bytes:
    body = (
        f"<ErrorResponse {STS_NS}><Error><Type>{kind}</Type><Code>{code}</Code>"
        f"<Message>{message}</Message></Error><RequestId>RID-STS</RequestId></ErrorResponse>"
    )
    return response(status, body.encode(), XML)


def _sts_ok(credentials: str) -> bytes:
    body = (
        f"<AssumeRoleResponse {STS_NS}><AssumeRoleResult>{credentials}"
        "<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/r/s</Arn>"
        "</AssumedRoleUser></AssumeRoleResult>"
        "<ResponseMetadata><RequestId>RID-OK</RequestId></ResponseMetadata></AssumeRoleResponse>"
    )
    return response(200, body.encode(), XML)


GOOD_CREDENTIALS = (
    "<Credentials><AccessKeyId>ASIAASSUMED000000001</AccessKeyId>"
    "<SecretAccessKey>assumed-secret-key-0123456789</SecretAccessKey>"
    "<SessionToken>assumed-session-token-0123456789</SessionToken>"
    "<Expiration>2030-01-01T00:00:00Z</Expiration></Credentials>"
)


@pytest.mark.parametrize(
    ("status", "code", "retry"),
    [
        (403, "AccessDenied", False),
        (400, "Throttling", True),
        (400, "ExpiredToken", False),
        (403, "InvalidClientTokenId", False),
        (403, "SignatureDoesNotMatch", False),
        (400, "RegionDisabledException", False),
        (500, "InternalFailure", True),
        (503, "ServiceUnavailable", True),
        (400, "IDPCommunicationError", True),
    ],
)
def test_sts_xml_errors(
    script: Scripted, client: AwsClient, status: int, code: str, retry: bool
) -> None:
    script.answers = [_sts_error(status, code, "User: arn:aws:sts::1:assumed-role/x is not ...")]
    with pytest.raises(AwsError) as info:
        _call_sts(client)
    assert (info.value.service, info.value.code, info.value.status) == ("sts", code, status)
    assert info.value.request_id == "RID-STS"
    assert retryable(info.value) is retry
    assert_no_secret(info.value)


BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        b'<!ENTITY lol%d "%s">' % (i + 1, (b"&lol;" if i == 0 else b"&lol%d;" % i) * 10)
        for i in range(9)
    )
    + b"]><lolz>&lol9;</lolz>"
)


@pytest.mark.parametrize(
    "answer",
    [
        response(200, b""),
        response(200, b"<not xml"),
        response(200, b'{"json": "instead"}'),
        response(200, b"<?xml version='1.0' encoding='utf-8'?><a>\xff\xfe</a>"),
        response(200, BILLION_LAUGHS),
        response(
            200,
            b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
        ),
        response(500, b"<html><body>upstream error</body></html"),
        response(403, b"Forbidden"),
    ],
    ids=[
        "empty",
        "truncated",
        "json",
        "bad-utf8",
        "billion-laughs",
        "external-entity",
        "html-500",
        "text-403",
    ],
)
def test_sts_garbage_is_a_malformed_response(
    script: Scripted, client: AwsClient, answer: bytes
) -> None:
    script.answers = [answer]
    with pytest.raises(AwsError) as info:
        _call_sts(client)
    assert info.value.code == "MalformedResponse"
    assert_no_secret(info.value)


def test_sts_errors_in_the_errors_wrapper_are_read_as_botocore_reads_them(
    script: Scripted, client: AwsClient
) -> None:
    """``<ErrorResponse><Errors><Error>``, as moto (devstack's STS) writes them."""
    body = (
        b'<?xml version="1.0" encoding="utf-8"?>\n<ErrorResponse><Errors><Error>'
        b"<Code>AccessDenied</Code><Message>not authorized to perform: sts:AssumeRole</Message>"
        b"<Type>Sender</Type></Error></Errors></ErrorResponse>"
    )
    script.answers = [response(403, body, XML)]
    with pytest.raises(AwsError) as info:
        _call_sts(client)
    assert info.value.code == "AccessDenied"
    assert "not authorized" in str(info.value)


def test_sts_error_without_a_code_is_named_by_its_status(
    script: Scripted, client: AwsClient
) -> None:
    script.answers = [response(503, b"<ServiceUnavailable/>", XML)]
    with pytest.raises(AwsError) as info:
        _call_sts(client)
    assert info.value.code == "HTTP503" and retryable(info.value)


# --- assume_role on top of those answers ----------------------------------------------------


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def _assume(server: LocalServer, fake_time: FakeTime, seconds: float = 10.0) -> _sts.Lease:
    env = _env(server.url)
    runtime = Runtime(environ=env, clock=fake_time.clock, sleep=fake_time.sleep)
    aws = AwsClient(runtime, CredentialResolver(Runtime(environ=env)))
    try:
        return _sts.assume_role(
            aws,
            runtime,
            ROLE,
            duration_seconds=3600,
            external_id=None,
            deadline=fake_time.now + seconds,
        )
    finally:
        aws.close()


def test_assume_role_reads_the_credentials(
    script: Scripted, server: LocalServer, fake_time: FakeTime
) -> None:
    script.answers = [_sts_ok(GOOD_CREDENTIALS)]
    role = _assume(server, fake_time)
    assert role.credentials.access_key == "ASIAASSUMED000000001"
    assert role.expires_at == 1893456000.0
    assert role.principal == "arn:aws:sts::123456789012:assumed-role/r/s"
    assert "assumed-secret" not in repr(role)


@pytest.mark.parametrize(
    "credentials",
    [
        "",
        "<Credentials/>",
        GOOD_CREDENTIALS.replace("2030-01-01T00:00:00Z", "next tuesday"),
        GOOD_CREDENTIALS.replace("<Expiration>2030-01-01T00:00:00Z</Expiration>", ""),
        GOOD_CREDENTIALS.replace("assumed-session-token-0123456789", ""),
        GOOD_CREDENTIALS.replace("<SecretAccessKey>", "<Secret>").replace(
            "</SecretAccessKey>", "</Secret>"
        ),
        "<Credentials><AccessKeyId><b>nested</b></AccessKeyId></Credentials>",
    ],
    ids=["none", "empty", "bad-expiration", "no-expiration", "no-token", "renamed", "nested"],
)
def test_http_200_without_usable_credentials_is_a_connect_error(
    script: Scripted, server: LocalServer, fake_time: FakeTime, credentials: str
) -> None:
    script.answers = [_sts_ok(credentials)]
    with pytest.raises(ConnectError) as info:
        _assume(server, fake_time)
    assert ROLE in str(info.value)
    assert fake_time.sleeps == []  # an answer that makes no sense is not retried
    assert_no_secret(info.value)


def test_access_denied_is_an_auth_error_naming_the_trust_policy(
    script: Scripted, server: LocalServer, fake_time: FakeTime
) -> None:
    script.answers = [_sts_error(403, "AccessDenied")]
    with pytest.raises(AuthError) as info:
        _assume(server, fake_time)
    assert "trust policy" in str(info.value) and "RID-STS" in str(info.value)
    assert len(server.captured) == 1 and fake_time.sleeps == []


@pytest.mark.parametrize("code", ["InvalidClientTokenId", "ExpiredToken", "SignatureDoesNotMatch"])
def test_refused_own_credentials_are_a_credentials_error(
    script: Scripted, server: LocalServer, fake_time: FakeTime, code: str
) -> None:
    script.answers = [_sts_error(403, code)]
    with pytest.raises(CredentialsError):
        _assume(server, fake_time)
    assert len(server.captured) == 1


def test_throttling_is_retried_inside_the_deadline_then_a_connect_error(
    script: Scripted, server: LocalServer, fake_time: FakeTime
) -> None:
    script.answers = [_sts_error(400, "Throttling", kind="Sender")]
    with pytest.raises(ConnectError) as info:
        _assume(server, fake_time, seconds=5.0)
    assert "Throttling" in str(info.value)
    assert len(server.captured) == len(fake_time.sleeps) + 1 >= 2
    assert sum(fake_time.sleeps) < 5.0  # no wait past the deadline


def test_throttling_then_success(
    script: Scripted, server: LocalServer, fake_time: FakeTime
) -> None:
    script.answers = [
        _sts_error(400, "Throttling"),
        response(500, b"<html>oops</html>"),
        _sts_ok(GOOD_CREDENTIALS),
    ]
    role = _assume(server, fake_time)
    assert role.credentials.access_key == "ASIAASSUMED000000001"
    assert len(server.captured) == 3 and len(fake_time.sleeps) == 2


# --- the connection itself ------------------------------------------------------------------


def _dropping(partial: bytes) -> Callable[[socket.socket, LocalServer], None]:
    def handle(conn: socket.socket, server: LocalServer) -> None:
        read_request(conn)
        conn.sendall(partial)

    return handle


@pytest.mark.parametrize("service", ["dynamodb", "sts"])
def test_a_connection_dropped_mid_answer_is_a_retryable_transport_error(service: str) -> None:
    partial = b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n<AssumeRoleResponse"
    with LocalServer(_dropping(partial)) as server:
        env = _env(server.url)
        aws = AwsClient(Runtime(environ=env), CredentialResolver(Runtime(environ=env)))
        with pytest.raises(TransportError) as info:
            _dynamodb(aws) if service == "dynamodb" else _call_sts(aws)
        aws.close()
    assert info.value.sent and retryable(info.value)
    assert isinstance(info.value, ConnectError)
    assert_no_secret(info.value)


def test_assume_role_through_dropped_connections_ends_as_a_connect_error() -> None:
    partial = b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n<AssumeRoleResponse"
    fake_time = FakeTime()
    with LocalServer(_dropping(partial)) as server:
        with pytest.raises(ConnectError) as info:
            _assume(server, fake_time, seconds=3.0)
        assert server.accepted == len(fake_time.sleeps) + 1 >= 2
    assert not isinstance(info.value, TransportError)  # iamdb's own summary, naming the role
    assert ROLE in str(info.value)


# --- retryable() ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TransportError("t", sent=True), True),
        (TransportError("t", sent=False), True),
        *((AwsError("dynamodb", code, "m", status=400), True) for code in sorted(THROTTLING)),
        (AwsError("dynamodb", "Anything", "m", status=500), True),
        (AwsError("dynamodb", "Anything", "m", status=599), True),
        (AwsError("dynamodb", "MalformedResponse", "m", status=502), True),
        (AwsError("dynamodb", "MalformedResponse", "m", status=200), False),
        (AwsError("dynamodb", "MalformedResponse", "m"), False),
        (AwsError("dynamodb", "ConditionalCheckFailedException", "m", status=400), False),
        (AwsError("dynamodb", "ValidationException", "m", status=400), False),
        (AwsError("dynamodb", "ResourceNotFoundException", "m", status=400), False),
        (AwsError("sts", "AccessDenied", "m", status=403), False),
        (AwsError("sts", "HTTP499", "m", status=499), False),
        (ConfigError("AWS_REGION", "bad"), False),
        (CredentialsError("none"), False),
        (ThrottleError("later"), False),
        (IamDbError("other"), False),
    ],
    ids=repr,
)
def test_retryable_classification(error: IamDbError, expected: bool) -> None:
    assert retryable(error) is expected
