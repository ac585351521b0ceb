"""Signed DynamoDB and STS requests, exactly as AwsClient sends them, against botocore's SigV4Auth.

Each request is captured on a real socket by a server of our own (:mod:`tests.localserver`),
then the captured method, body and headers are signed again by botocore's ``SigV4Auth`` at
the captured ``X-Amz-Date``, for the endpoint URL the test configured: botocore derives the
signed ``host`` from that URL itself, so iamdb's host rule (default ports dropped, IPv6
brackets) is checked too. The ``Authorization`` header must be equal byte for byte.

Regional endpoints (``dynamodb.eu-west-3.amazonaws.com:443``...) and generated host names are
reached through one seam: ``socket.getaddrinfo`` resolves every name to the local server, while
everything above it (TCP, TLS with the endpoint's name, HTTP, signing) is iamdb's own.

boto3 itself is compared last (its request captured by a ``before-send`` hook, no network):
the same signed headers, the same body once parsed. boto3 also sends ``User-Agent``,
``amz-sdk-invocation-id`` and ``amz-sdk-request``, none of them signed.
"""

from __future__ import annotations

import json
import socket
import string
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3
import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.credentials import ReadOnlyCredentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.tls import make_tls
from iamdb._aws.chain import CredentialResolver
from iamdb._aws.client import USER_AGENT, AwsClient
from iamdb._core.runtime import Runtime
from tests.localserver import Captured, LocalServer, answering, response, tls_context

ACCESS_KEY = "ASIAEXAMPLEEXAMPLE01"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjE//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+" + "Ab9/+x=" * 120 + "=="
LONG_TOKEN = "FwoGZXIvYXdzE" + "0123456789+/abcdefABCDEF=" * 400  # ~10,000 characters

# The iamdb fleet limiter's ticket write, and the Mongo role's AssumeRole, as they are sent.
UPDATE_ITEM = {
    "TableName": "iamdb-throttle",
    "Key": {"pk": {"S": "q#iamdb-pg.c0devstack00.us-east-1.rds.amazonaws.com:5432"}},
    "UpdateExpression": "SET #n = if_not_exists(#n, :start) + :s, #x = :ttl",
    "ConditionExpression": "(attribute_not_exists(#n) AND (attribute_not_exists(#f) OR "
    "#f <= :start)) OR #n BETWEEN :lo AND :hi",
    "ExpressionAttributeNames": {"#n": "n", "#f": "f", "#x": "expires_at"},
    "ExpressionAttributeValues": {
        ":start": {"N": "1764547200000000"},
        ":s": {"N": "111111"},
        ":lo": {"N": "1764547199950000"},
        ":hi": {"N": "1764547210000000"},
        ":ttl": {"N": "1764550810"},
    },
    "ReturnValues": "UPDATED_NEW",
    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
}
ASSUME_ROLE = {
    "Action": "AssumeRole",
    "RoleArn": "arn:aws:iam::123456789012:role/iamdb-mongo-access",
    "RoleSessionName": "iamdb-MongoExampleFunction-1a2b3c4d",
    "DurationSeconds": "3600",
    "ExternalId": "ext id/with+symbols=&?",
}
STS_ANSWER = b"""<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
<AssumeRoleResult><Credentials><AccessKeyId>ASIAASSUMED000000001</AccessKeyId>
<SecretAccessKey>assumed-secret</SecretAccessKey><SessionToken>assumed-token</SessionToken>
<Expiration>2030-01-01T00:00:00Z</Expiration></Credentials>
<AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/r/s</Arn></AssumedRoleUser>
</AssumeRoleResult><ResponseMetadata><RequestId>rid-1</RequestId></ResponseMetadata>
</AssumeRoleResponse>"""
# Regional endpoints the TLS server holds a certificate for (as the real ones do).
REGIONAL = [
    ("eu-west-3", "dynamodb.eu-west-3.amazonaws.com", "sts.eu-west-3.amazonaws.com"),
    ("cn-north-1", "dynamodb.cn-north-1.amazonaws.com.cn", "sts.cn-north-1.amazonaws.com.cn"),
    ("us-gov-west-1", "dynamodb.us-gov-west-1.amazonaws.com", "sts.us-gov-west-1.amazonaws.com"),
]
FIPS = ("us-east-2", "dynamodb-fips.us-east-2.amazonaws.com", "sts-fips.us-east-2.amazonaws.com")


def _answer(request: Captured) -> bytes:
    if request.header("x-amz-target"):
        return response(200, b'{"Attributes": {"n": {"N": "1"}}}')
    return response(200, STS_ANSWER, [("Content-Type", "text/xml")])


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Any:
    names = ["localhost", *(h for _, *hosts in [*REGIONAL, FIPS] for h in hosts)]
    return make_tls(tmp_path_factory.mktemp("tls"), names, ["127.0.0.1"])


@pytest.fixture(scope="module")
def plain() -> Iterator[LocalServer]:
    with LocalServer(answering(_answer)) as server:
        yield server


@pytest.fixture(scope="module")
def tls(tls_files: Any) -> Iterator[LocalServer]:
    with LocalServer(answering(_answer), tls=tls_context(tls_files)) as server:
        yield server


@pytest.fixture(scope="module")
def redirect(plain: LocalServer, tls: LocalServer) -> Iterator[None]:
    """Every name resolves to the local servers (port 443: the TLS one)."""

    def resolve(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        target = plain if port != 443 else tls
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", target.port))]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", resolve)
        yield


def _environ(token: str | None, region: str, **extra: str) -> dict[str, str]:
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, **extra}
    env["AWS_REGION"] = region
    if token is not None:
        env["AWS_SESSION_TOKEN"] = token
    return env


def _send(env: dict[str, str], server: LocalServer, call: str) -> Captured:
    """Make one call with a fresh AwsClient; the request the server received."""
    before = len(server.captured)
    runtime = Runtime(environ=env)
    client = AwsClient(runtime, CredentialResolver(Runtime(environ=env)))
    try:
        if call == "dynamodb":
            assert client.dynamodb("UpdateItem", UPDATE_ITEM, runtime.clock() + 10) == {
                "Attributes": {"n": {"N": "1"}}
            }
        else:
            client.sts(ASSUME_ROLE, runtime.clock() + 10)
    finally:
        client.close()
    assert not server.errors, server.errors
    assert len(server.captured) == before + 1
    return server.captured[-1]


_ADDED_BY_SIGNING = ("authorization", "x-amz-date", "x-amz-security-token")


def botocore_authorization(
    captured: Captured, url: str, service: str, region: str, env: dict[str, str]
) -> str:
    """botocore's Authorization for the captured request, signed at its X-Amz-Date."""
    stamp = captured.header("x-amz-date")
    assert stamp is not None
    instant = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ")
    headers = {
        k: v
        for k, v in captured.headers
        # host: botocore derives it from the URL; the rest are not part of what is signed
        if k.lower() not in (*_ADDED_BY_SIGNING, "host", "content-length", "user-agent")
    }
    request = AWSRequest(method=captured.method, url=url + "/", data=captured.body, headers=headers)
    credentials = ReadOnlyCredentials(
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], env.get("AWS_SESSION_TOKEN")
    )
    original = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda *args, **kwargs: instant
    try:
        botocore.auth.SigV4Auth(credentials, service, region).add_auth(request)
    finally:
        botocore.auth.get_current_datetime = original
    assert request.headers["X-Amz-Date"] == stamp
    assert request.headers.get("X-Amz-Security-Token") == captured.header("x-amz-security-token")
    return str(request.headers["Authorization"])


def _check(captured: Captured, url: str, service: str, region: str, env: dict[str, str]) -> None:
    assert captured.method == "POST" and captured.path == "/"
    assert captured.header("authorization") == botocore_authorization(
        captured, url, service, region, env
    )
    assert captured.header("x-amz-security-token") == env.get("AWS_SESSION_TOKEN")
    assert captured.header("user-agent") == USER_AGENT
    assert captured.header("content-length") == str(len(captured.body))


def _host(url: str) -> str:
    return urlsplit(url).netloc


# --- explicit cases -----------------------------------------------------------------------


@pytest.mark.parametrize("call", ["dynamodb", "sts"])
@pytest.mark.parametrize(
    "token", [None, SESSION_TOKEN, LONG_TOKEN], ids=["long-term", "session", "long-session"]
)
@pytest.mark.parametrize(
    ("kind", "region"),
    [
        ("127.0.0.1", "us-east-1"),
        ("localhost", "eu-west-3"),
        ("tls-localhost", "ap-southeast-2"),
        ("ipv6", "us-west-2"),
    ],
)
def test_configured_endpoints_sign_as_botocore(
    plain: LocalServer,
    tls: LocalServer,
    tls_files: Any,
    call: str,
    token: str | None,
    kind: str,
    region: str,
) -> None:
    if kind == "ipv6":
        if not _ipv6_loopback():
            pytest.skip("no IPv6 loopback on this machine")
        with LocalServer(answering(_answer), host="::1") as server:
            _configured_case(server, server.url, call, token, region, {})
        return
    server = tls if kind.startswith("tls") else plain
    url = f"{'https' if server is tls else 'http'}://{kind.removeprefix('tls-')}:{server.port}"
    _configured_case(server, url, call, token, region, {"AWS_CA_BUNDLE": str(tls_files.ca)})


def _configured_case(
    server: LocalServer, url: str, call: str, token: str | None, region: str, extra: dict[str, str]
) -> None:
    env = _environ(token, region, **extra, **{f"AWS_ENDPOINT_URL_{call.upper()}": url})
    captured = _send(env, server, call)
    assert captured.header("host") == _host(url)
    _check(captured, url, call, region, env)


@pytest.mark.usefixtures("redirect")
@pytest.mark.parametrize("call", ["dynamodb", "sts"])
@pytest.mark.parametrize("token", [None, SESSION_TOKEN], ids=["long-term", "session"])
@pytest.mark.parametrize(("region", "dynamodb", "sts"), [*REGIONAL, FIPS])
def test_regional_endpoints_on_the_default_port_sign_as_botocore(
    tls: LocalServer,
    tls_files: Any,
    call: str,
    token: str | None,
    region: str,
    dynamodb: str,
    sts: str,
) -> None:
    extra = {"AWS_CA_BUNDLE": str(tls_files.ca)}
    if (region, dynamodb, sts) == FIPS:
        extra["AWS_USE_FIPS_ENDPOINT"] = "true"
    env = _environ(token, region, **extra)
    captured = _send(env, tls, call)
    host = dynamodb if call == "dynamodb" else sts
    assert captured.header("host") == host  # no :443
    _check(captured, f"https://{host}", call, region, env)


@pytest.mark.usefixtures("redirect")
@pytest.mark.parametrize("call", ["dynamodb", "sts"])
def test_http_on_port_80_signs_the_host_without_the_port(plain: LocalServer, call: str) -> None:
    url = "http://dynamodb.local.example"
    env = _environ(SESSION_TOKEN, "us-east-1", AWS_ENDPOINT_URL=url)
    captured = _send(env, plain, call)
    assert captured.header("host") == "dynamodb.local.example"
    _check(captured, url, call, "us-east-1", env)


def test_rotated_credentials_sign_the_next_request(plain: LocalServer) -> None:
    env = _environ(SESSION_TOKEN, "us-east-1", AWS_ENDPOINT_URL=plain.url)
    runtime = Runtime(environ=env)
    client = AwsClient(runtime, CredentialResolver(Runtime(environ=env)))
    try:
        client.dynamodb("UpdateItem", UPDATE_ITEM, runtime.clock() + 10)
        first = dict(env)
        env.update(
            AWS_ACCESS_KEY_ID="ASIAROTATED000000002",
            AWS_SECRET_ACCESS_KEY="rotated-secret",
            AWS_SESSION_TOKEN="rotated-token",
        )
        client.sts(ASSUME_ROLE, runtime.clock() + 10)
    finally:
        client.close()
    old, new = plain.captured[-2:]
    _check(old, plain.url, "dynamodb", "us-east-1", first)
    _check(new, plain.url, "sts", "us-east-1", env)
    assert "ASIAROTATED000000002/" in (new.header("authorization") or "")


# --- generated cases ----------------------------------------------------------------------

_LABEL = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=10)
HOSTS = st.builds(
    lambda labels, upper: ".".join(labels).upper() if upper else ".".join(labels),
    st.lists(_LABEL, min_size=1, max_size=4),
    st.booleans(),
)
PORTS = st.one_of(st.just(80), st.integers(1, 65535))
REGIONS = st.one_of(
    st.sampled_from(["us-east-1", "eu-central-1", "cn-northwest-1", "us-gov-east-1"]),
    st.from_regex(r"\A[a-z]{2}(-gov|-iso|-isob)?-[a-z]{4,9}-[1-9]\Z"),
)
TOKENS = st.one_of(
    st.none(),
    st.text(string.ascii_letters + string.digits + "+/=", min_size=1, max_size=3000),
)
# Printable ASCII, as real secret keys are: the resolver refuses anything else at the source.
SECRETS = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=60)
TEXT = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40)


@pytest.mark.usefixtures("redirect")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    host=HOSTS,
    port=PORTS.filter(lambda p: p != 443),  # plain HTTP: the redirect sends 443 to the TLS server
    region=REGIONS,
    token=TOKENS,
    secret=SECRETS,
    key=TEXT,
    session=st.from_regex(r"\A[\w+=,.@-]{2,64}\Z", fullmatch=True),
    external=TEXT,
)
def test_generated_requests_sign_as_botocore(
    plain: LocalServer,
    host: str,
    port: int,
    region: str,
    token: str | None,
    secret: str,
    key: str,
    session: str,
    external: str,
) -> None:
    url = f"http://{host}" + ("" if port == 80 else f":{port}")
    env = _environ(token, region, AWS_ENDPOINT_URL=url)
    env["AWS_SECRET_ACCESS_KEY"] = secret
    runtime = Runtime(environ=env)
    client = AwsClient(runtime, CredentialResolver(Runtime(environ=env)))
    payload = {**UPDATE_ITEM, "Key": {"pk": {"S": key}}}
    params = {**ASSUME_ROLE, "RoleSessionName": session, "ExternalId": external}
    try:
        client.dynamodb("UpdateItem", payload, runtime.clock() + 10)
        client.sts(params, runtime.clock() + 10)
    finally:
        client.close()
    dynamodb, sts = plain.captured[-2:]
    for captured, service in ((dynamodb, "dynamodb"), (sts, "sts")):
        assert captured.header("host") == _host(url).lower()
        _check(captured, url, service, region, env)
    assert json.loads(dynamodb.body) == payload
    assert parse_qsl(sts.body.decode(), strict_parsing=True) == [
        ("Action", "AssumeRole"),
        ("Version", "2011-06-15"),
        *((k, v) for k, v in params.items() if k != "Action"),
    ]


# --- against boto3 itself ------------------------------------------------------------------


def _boto3_request(service: str, region: str, token: str | None, call: Any) -> Any:
    """The request boto3 signs and would send for ``call(client)`` (no network)."""
    captured: list[Any] = []

    def before_send(request: Any, **_: Any) -> AWSResponse:
        captured.append(request)
        body = b"{}" if service == "dynamodb" else STS_ANSWER
        return AWSResponse(request.url, 200, {}, _Raw(body))

    session = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        aws_session_token=token,
        region_name=region,
    )
    client = session.client(service)
    client.meta.events.register("before-send", before_send)
    call(client)
    (request,) = captured
    return request


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def _signed_names(authorization: str | bytes) -> list[str]:
    text = authorization.decode() if isinstance(authorization, bytes) else authorization
    return text.split("SignedHeaders=")[1].split(",")[0].split(";")


@pytest.mark.usefixtures("redirect")
@pytest.mark.parametrize("token", [None, SESSION_TOKEN], ids=["long-term", "session"])
@pytest.mark.parametrize(("region", "dynamodb_host", "sts_host"), REGIONAL)
def test_same_request_as_boto3(
    tls: LocalServer,
    tls_files: Any,
    monkeypatch: pytest.MonkeyPatch,
    token: str | None,
    region: str,
    dynamodb_host: str,
    sts_host: str,
) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_STS"):
        monkeypatch.delenv(name, raising=False)  # boto3 reads the process environment
    env = _environ(token, region, AWS_CA_BUNDLE=str(tls_files.ca))

    ours = _send(env, tls, "dynamodb")
    theirs = _boto3_request("dynamodb", region, token, lambda c: c.update_item(**UPDATE_ITEM))
    assert theirs.url == f"https://{dynamodb_host}/" and ours.header("host") == dynamodb_host
    assert json.loads(ours.body) == json.loads(theirs.body)
    _same_signed_headers(ours, theirs)

    ours = _send(env, tls, "sts")
    params = {k: v for k, v in ASSUME_ROLE.items() if k != "Action"}
    theirs = _boto3_request(
        "sts",
        region,
        token,
        lambda c: c.assume_role(**{**params, "DurationSeconds": int(params["DurationSeconds"])}),
    )
    assert theirs.url == f"https://{sts_host}/" and ours.header("host") == sts_host
    # boto3 encodes a space as '+', iamdb as '%20': the same form once parsed, in the same order
    assert parse_qsl(ours.body.decode(), strict_parsing=True) == parse_qsl(
        theirs.body.decode() if isinstance(theirs.body, bytes) else theirs.body,
        strict_parsing=True,
    )
    _same_signed_headers(ours, theirs)


def _same_signed_headers(ours: Captured, theirs: Any) -> None:
    assert ours.method == theirs.method == "POST"
    authorization = ours.header("authorization") or ""
    assert _signed_names(authorization) == _signed_names(theirs.headers["Authorization"])
    for name in _signed_names(authorization):
        if name in ("host", "x-amz-date"):
            continue
        value = theirs.headers[name]
        assert ours.header(name) == (value.decode() if isinstance(value, bytes) else value), name
    unsigned = {k.lower() for k in theirs.headers} - set(_signed_names(authorization))
    assert unsigned == {
        "user-agent",
        "authorization",
        "amz-sdk-invocation-id",
        "amz-sdk-request",
        "content-length",
    }


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True
