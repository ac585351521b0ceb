"""Credentials from the container credentials endpoint (SnapStart, ECS), against a local server.

The endpoint is a server thread of our own on loopback that answers like Lambda's and ECS's:
``GET`` with ``Authorization: <token>``, a JSON document with ``AccessKeyId``,
``SecretAccessKey``, ``Token`` and ``Expiration``. Time is a :class:`tests.fakes.FakeClock`.
Which URLs may be asked over plain HTTP is checked against botocore's own rule.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.utils import ContainerMetadataFetcher

from devstack.tls import make_tls
from iamdb._aws import container as _container
from iamdb._aws.chain import CredentialResolver
from iamdb._aws.container import ContainerCredentials
from iamdb._aws.credentials import Credentials
from iamdb._core.runtime import Runtime
from iamdb.errors import ConfigError, CredentialsError, IamDbError
from tests.fakes import START, FakeClock
from tests.localserver import Captured, LocalServer, answering, read_request, response
from tests.paths import ROOT

TOKEN = "container-authorization-token-0123456789abcdef"
KEY, SECRET, SESSION = "ASIACONTAINER0000001", "container-secret-key-0123456789", "session-" * 40
REPO = ROOT


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Target:
    """What the credentials server answers; every request is kept."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.token = TOKEN
        self.lifetime = 3600.0
        self.serial = 0
        self.broken: bytes | None = None  # a whole answer instead of credentials

    def __call__(self, request: Captured) -> bytes:
        if self.broken is not None:
            return self.broken
        if request.header("authorization") != self.token:
            return response(401, b'{"message": "bad authorization token"}')
        self.serial += 1
        body = {
            "AccessKeyId": f"{KEY[:-1]}{self.serial}",
            "SecretAccessKey": f"{SECRET}-{self.serial}",
            "Token": SESSION,
            "Expiration": iso(self.clock.now + self.lifetime),
            "AccountId": "123456789012",
        }
        return response(200, json.dumps(body).encode(), [("Content-Type", "application/json")])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def endpoint(clock: FakeClock) -> Target:
    return Target(clock)


@pytest.fixture
def server(endpoint: Target) -> Iterator[LocalServer]:
    with LocalServer(answering(endpoint)) as local:
        yield local


def _env(server: LocalServer, **extra: str) -> dict[str, str]:
    return {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{server.url}/2021-04-23/credentials",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": TOKEN,
        **extra,
    }


def _source(env: dict[str, str], clock: Callable[[], float]) -> ContainerCredentials:
    """Credentials from ``env``'s endpoint on ``clock``; backoff advances a fake clock."""
    sleep = clock.advance if isinstance(clock, FakeClock) else time.sleep
    return ContainerCredentials(Runtime(environ=env, clock=clock, sleep=sleep, random=lambda: 0.5))


def _target(env: dict[str, str]) -> tuple[str, str, int, str]:
    return _container._target(
        env.get(_container.FULL_URI, ""), env.get(_container.RELATIVE_URI, "")
    )


def _fetches(server: LocalServer) -> int:
    return len(server.captured)


# --- fetching ---------------------------------------------------------------------------------


def test_full_uri_with_token(server: LocalServer, clock: FakeClock) -> None:
    source = _source(_env(server), clock)
    creds = source.get()
    assert (creds.access_key, creds.secret_key, creds.token) == (
        "ASIACONTAINER0000001",
        f"{SECRET}-1",
        SESSION,
    )
    (request,) = server.captured
    assert (request.method, request.path) == ("GET", "/2021-04-23/credentials")
    assert request.header("authorization") == TOKEN
    assert request.header("accept") == "application/json"
    assert request.header("host") == f"127.0.0.1:{server.port}"


def test_full_uri_with_token_file_read_at_every_fetch(
    server: LocalServer, endpoint: Target, clock: FakeClock, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")  # as files usually end
    env = _env(server, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=str(token_file))
    env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = "the-file-wins-over-this-variable"
    source = _source(env, clock)
    assert source.get().secret_key == f"{SECRET}-1"
    endpoint.token = "rotated-token-0123456789abcdefgh"
    token_file.write_text(endpoint.token)  # EKS and ECS rotate the file
    clock.advance(3600)
    assert source.get().secret_key == f"{SECRET}-2"
    assert [r.header("authorization") for r in server.captured] == [TOKEN, endpoint.token]


def test_no_token_sends_no_authorization(server: LocalServer, endpoint: Target) -> None:
    env = _env(server)
    del env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
    endpoint.token = None  # type: ignore[assignment]
    _source(env, FakeClock()).get()
    assert server.captured[0].header("authorization") is None


def test_https_full_uri_with_the_ca_from_aws_ca_bundle(tmp_path: Path, clock: FakeClock) -> None:
    from tests.localserver import tls_context

    files = make_tls(tmp_path, ["localhost"])
    with LocalServer(answering(Target(clock)), tls=tls_context(files)) as local:
        env = {
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"https://localhost:{local.port}/creds",
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": TOKEN,
            "AWS_CA_BUNDLE": str(files.ca),
        }
        assert _source(env, clock).get().access_key.startswith("ASIA")


# --- cache and refresh ------------------------------------------------------------------------


def test_cached_until_shortly_before_expiration(server: LocalServer, clock: FakeClock) -> None:
    source = _source(_env(server), clock)
    first = source.get()
    refresh_at = START + 3600 - _container.REFRESH_SECONDS
    clock.now = refresh_at - 0.001
    assert source.get() is first and _fetches(server) == 1
    clock.now = refresh_at
    second = source.get()
    assert second != first and _fetches(server) == 2
    assert source.get() is second and _fetches(server) == 2


def test_short_lived_credentials_refresh_at_half_life(
    server: LocalServer, endpoint: Target, clock: FakeClock
) -> None:
    endpoint.lifetime = 120.0
    source = _source(_env(server), clock)
    source.get()
    clock.advance(59.999)
    source.get()
    assert _fetches(server) == 1
    clock.advance(0.001)
    source.get()
    assert _fetches(server) == 2


def test_a_failed_refresh_keeps_still_valid_credentials(
    server: LocalServer, endpoint: Target, clock: FakeClock, caplog: Any
) -> None:
    source = _source(_env(server), clock)
    first = source.get()
    endpoint.broken = response(500, b'{"message": "metadata service unavailable"}')
    clock.now = START + 3600 - _container.REFRESH_SECONDS  # due for refresh, 300 s left
    with caplog.at_level(logging.WARNING, logger="iamdb"):
        assert source.get() is first
    assert _fetches(server) == 2
    assert "metadata service unavailable" in caplog.text
    assert SECRET not in caplog.text and TOKEN not in caplog.text
    clock.advance(9.999)
    assert source.get() is first and _fetches(server) == 2  # not asked again at once
    clock.advance(0.001)
    assert source.get() is first and _fetches(server) == 3
    endpoint.broken = None
    clock.advance(10)
    assert source.get() != first and _fetches(server) == 4


def test_a_failed_refresh_with_too_little_left_raises(
    server: LocalServer, endpoint: Target, clock: FakeClock
) -> None:
    source = _source(_env(server), clock)
    source.get()
    endpoint.broken = response(500, b"")
    clock.now = START + 3600 - _container.MIN_LEFT_SECONDS
    with pytest.raises(CredentialsError):
        source.get()


def test_the_resolver_caches_container_credentials_on_its_clock(
    server: LocalServer, clock: FakeClock
) -> None:
    resolver = CredentialResolver(Runtime(environ=_env(server), clock=clock))
    assert resolver.resolve() is resolver.resolve()
    assert _fetches(server) == 1
    clock.advance(3600)
    assert resolver.resolve().secret_key == f"{SECRET}-2"


def test_environment_credentials_come_before_the_endpoint(
    server: LocalServer, clock: FakeClock
) -> None:
    env = _env(server, AWS_ACCESS_KEY_ID="AKIAENVIRONMENT00001", AWS_SECRET_ACCESS_KEY="s" * 20)
    resolver = CredentialResolver(Runtime(environ=env, clock=clock))
    assert resolver.resolve().access_key == "AKIAENVIRONMENT00001"
    del env["AWS_ACCESS_KEY_ID"]  # the mapping is read live
    assert resolver.resolve().access_key.startswith("ASIACONTAINER")
    assert _fetches(server) == 1


# --- bad answers ------------------------------------------------------------------------------


def _creds_body(**changes: Any) -> bytes:
    body: dict[str, Any] = {
        "AccessKeyId": KEY,
        "SecretAccessKey": SECRET,
        "Token": SESSION,
        "Expiration": iso(START + 3600),
    }
    for name, value in changes.items():
        if value is None:
            body.pop(name)
        else:
            body[name] = value
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    "answer",
    [
        response(500, b'{"message": "internal error"}'),
        response(500, b"<html>Internal Server Error</html>"),
        response(401, b'{"message": "bad token"}'),
        response(404, b""),
        response(200, b"not json"),
        response(200, b""),
        response(200, b"[]"),
        response(200, b'"credentials"'),
        response(200, b"{" * 50_000),
        response(200, b"[" * 100_000 + b"]" * 100_000),
        response(200, _creds_body(AccessKeyId=None)),
        response(200, _creds_body(SecretAccessKey=None)),
        response(200, _creds_body(AccessKeyId="")),
        response(200, _creds_body(AccessKeyId=12345)),
        response(200, _creds_body(SecretAccessKey=["s"])),
        response(200, _creds_body(Token=7)),
        response(200, _creds_body(Expiration=None)),
        response(200, _creds_body(Expiration="tomorrow")),
        response(200, _creds_body(Expiration=1893456000)),
        response(200, b"HTTP/1.1 garbage"),
        b'HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{"AccessKeyId": ',
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
    ],
    ids=[
        "500-json",
        "500-html",
        "401",
        "404-empty",
        "garbage",
        "empty",
        "list",
        "string",
        "unclosed",
        "deeply-nested",
        "no-key",
        "no-secret",
        "empty-key",
        "number-key",
        "list-secret",
        "number-token",
        "no-expiration",
        "bad-expiration",
        "number-expiration",
        "200-garbage-body",
        "dropped",
        "not-http",
    ],
)
def test_bad_answers_are_credentials_errors(answer: bytes, clock: FakeClock) -> None:
    def handle(conn: socket.socket, server: LocalServer) -> None:
        if read_request(conn) is not None:
            conn.sendall(answer)

    with LocalServer(handle) as local:
        source = _source(_env(local), clock)
        with pytest.raises(CredentialsError) as info:
            source.get()
    message = str(info.value)
    for secret in (TOKEN, SECRET, SESSION):
        assert secret not in message and secret not in repr(info.value)


def test_an_endpoint_that_never_answers_fails_within_the_fetch_bound() -> None:
    returned = threading.Event()
    polls = []

    def silent(conn: socket.socket, server: LocalServer) -> None:
        read_request(conn)
        while len(polls) < 40 and not returned.wait(0.25):
            polls.append(1)

    with LocalServer(silent) as local:
        source = _source(_env(local), time.time)
        try:
            with pytest.raises(CredentialsError) as info:
                source.get(deadline=time.time() + 0.5)  # nearer than the 2 s fetch bound
        finally:
            returned.set()
    assert "timed out" in str(info.value)
    assert len(polls) <= int(0.5 / 0.25) + 1


def test_nothing_listening_is_a_credentials_error(clock: FakeClock) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"AWS_CONTAINER_CREDENTIALS_FULL_URI": f"http://127.0.0.1:{port}/creds"}
    with pytest.raises(CredentialsError) as info:
        _source(env, clock).get()
    assert isinstance(info.value, IamDbError)


# --- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "directory", "not-utf8"])
def test_unreadable_token_file_is_a_config_error_before_any_call(
    server: LocalServer, clock: FakeClock, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "token"
    if kind == "directory":
        path.mkdir()
    elif kind == "not-utf8":
        path.write_bytes(b"\xff\xfe\xfa token")
    env = _env(server, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=str(path))
    with pytest.raises(ConfigError) as info:
        _source(env, clock).get()
    assert info.value.variable == "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
    assert server.accepted == 0


@pytest.mark.parametrize("bad", [TOKEN + "\r\nX-Injected: 1", TOKEN + "\n", "tok\x00en" + TOKEN])
@pytest.mark.parametrize("where", ["variable", "file"])
def test_a_token_with_control_characters_is_refused_without_repeating_it(
    server: LocalServer, clock: FakeClock, tmp_path: Path, bad: str, where: str
) -> None:
    if where == "file":
        (tmp_path / "token").write_text(bad.replace("\n", "\n\n") + "x")
        env = _env(server, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=str(tmp_path / "token"))
        variable = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
    else:
        env = _env(server, AWS_CONTAINER_AUTHORIZATION_TOKEN=bad + "x")
        variable = "AWS_CONTAINER_AUTHORIZATION_TOKEN"
    with pytest.raises(ConfigError) as info:
        _source(env, clock).get()
    assert info.value.variable == variable
    assert TOKEN not in str(info.value)
    assert server.accepted == 0


HTTP_URLS = [
    "http://127.0.0.1/creds",
    "http://127.0.0.1:8080/creds",
    "http://127.1.2.3/creds",
    "http://localhost:9001/2021-04-23/credentials",
    "http://[::1]:9001/creds",
    "http://169.254.170.2/v2/credentials/abc",
    "http://169.254.170.23/v1/credentials",
    "http://[fd00:ec2::23]/v1/credentials",
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/role",
    "http://10.0.0.5/creds",
    "http://example.com/creds",
    "http://metadata.internal/creds",
    "http://localhost.example.com/creds",
    "http://[::2]/creds",
    "http://0.0.0.0/creds",
    "http://169.254.170.3/creds",
    "https://example.com/creds",
    "https://10.0.0.5:8443/creds",
]


@pytest.mark.parametrize("url", HTTP_URLS)
def test_which_hosts_may_be_asked_is_botocores_rule(url: str) -> None:
    try:
        ContainerMetadataFetcher()._validate_allowed_url(url)
    except ValueError:
        allowed = False
    else:
        allowed = True
    env = {"AWS_CONTAINER_CREDENTIALS_FULL_URI": url, "AWS_CONTAINER_AUTHORIZATION_TOKEN": TOKEN}
    if allowed:
        parts = urlsplit(url)
        scheme, host, _port, path = _target(env)
        assert (scheme, host, path) == (parts.scheme, parts.hostname, parts.path)
    else:
        with pytest.raises(ConfigError) as info:
            _source(env, FakeClock()).get()
        assert info.value.variable == "AWS_CONTAINER_CREDENTIALS_FULL_URI"
        assert TOKEN not in str(info.value)


@pytest.mark.parametrize(
    ("relative", "path"),
    [
        ("/v2/credentials/0123-abcd", "/v2/credentials/0123-abcd"),
        ("/v2/credentials?id=1&x=%2F", "/v2/credentials?id=1&x=%2F"),
        ("  /padded  ", "/padded"),
    ],
)
def test_relative_uri_goes_to_the_ecs_agent(relative: str, path: str) -> None:
    env = {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": relative}
    assert _target(env) == ("http", "169.254.170.2", 80, path)


@pytest.mark.parametrize(
    "relative",
    ["v2/credentials", "http://evil.example/creds", "@evil/x", "/v2/a b", "/v2/a\x00b", "/a\x7f"],
)
def test_a_relative_uri_that_is_no_clean_path_is_a_config_error(relative: str) -> None:
    env = {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": relative}
    with pytest.raises(ConfigError) as info:
        _source(env, FakeClock()).get()
    assert info.value.variable == "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"


def test_relative_uri_wins_over_full_uri_as_in_botocore() -> None:
    env = {
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:9/creds",
    }
    assert _target(env) == ("http", "169.254.170.2", 80, "/v2/credentials/x")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/creds",
        "127.0.0.1:80/creds",
        "http:///creds",
        "http://127.0.0.1:x/",
        "http://127.0.0.1/a b HTTP/1.0",
        "http://127.0.0.1/a?\x0bb",
    ],
)
def test_malformed_full_uri_is_a_config_error(url: str) -> None:
    env = {"AWS_CONTAINER_CREDENTIALS_FULL_URI": url}
    with pytest.raises(ConfigError) as info:
        _source(env, FakeClock()).get()
    assert info.value.variable == "AWS_CONTAINER_CREDENTIALS_FULL_URI"


# --- secrets and imports ----------------------------------------------------------------------


def test_no_secret_in_reprs(server: LocalServer, clock: FakeClock) -> None:
    source = _source(_env(server), clock)
    creds = source.get()
    resolver = CredentialResolver(Runtime(environ=_env(server), clock=clock))
    resolver.resolve()
    for text in (repr(creds), str(creds), repr(source), repr(resolver)):
        for secret in (TOKEN, SESSION, creds.secret_key):
            assert secret not in text
    assert isinstance(creds, Credentials)


_CHILD = """
import json, sys
from iamdb._aws.chain import default_resolver
creds = default_resolver.resolve()
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("botocore", "boto3"))
print(json.dumps({"key": creds.access_key, "loaded": loaded}))
"""


def test_no_botocore_is_imported_on_this_path(server: LocalServer, endpoint: Target) -> None:
    endpoint.clock = FakeClock(time.time())  # the child runs on the real clock
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "IAMDB_", "PYTHON"))}
    env.update(_env(server), PYTHONPATH=str(REPO / "layer"))
    child = subprocess.run(
        [sys.executable, "-c", _CHILD],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    report = json.loads(child.stdout)
    assert report == {"key": "ASIACONTAINER0000001", "loaded": []}
    assert _fetches(server) == 1
