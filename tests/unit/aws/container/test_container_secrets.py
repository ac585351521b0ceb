"""No secret reachable from any error of a container credentials fetch, at every failure point.

Each case below is one way the fetch can fail: the endpoint unreachable, silent, slow, cut
short, refusing, or serving something unusable (the secrets inside it), and the token itself
(variable or file) unusable. The error is walked as a crash reporter walks it
(:func:`tests.integration.kept_alive.kept_alive`: its chain, attributes, and every frame's
locals on its traceback): neither the authorization token nor the served secret key or session
token may appear in any text. The fetch is asked both directly and through the resolver,
whose caller sees the environment (that holds the token) one frame up.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from iamdb._aws.chain import CredentialResolver
from iamdb._aws.container import ContainerCredentials
from iamdb._core.runtime import Runtime
from iamdb.errors import ConfigError, CredentialsError, IamDbError
from tests.container_endpoint import (
    CLOSE,
    KEY,
    RESET,
    SECRET,
    SECRETS,
    SESSION,
    SILENT,
    TOKEN,
    Dribble,
    Step,
    Ticking,
    creds_body,
    environment,
    iso,
    ok,
    serve,
)
from tests.fakes import START, FakeTime
from tests.integration.kept_alive import kept_alive
from tests.localserver import response

LATER = START + 3600
GOOD = ok(LATER)

# Each: what the endpoint does, and the error expected. The answers carry the secrets where
# an endpoint could put them.
ANSWERS: dict[str, tuple[list[Step], type[IamDbError]]] = {
    "silent": ([SILENT], CredentialsError),
    "dribbling": ([Dribble(GOOD, 0.2)], CredentialsError),
    "closed-unanswered": ([CLOSE], CredentialsError),
    "reset": ([RESET], CredentialsError),
    "cut-short": ([GOOD[: len(GOOD) - 20]], CredentialsError),
    "chunked-cut-short": (
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n" + creds_body(LATER)],
        CredentialsError,
    ),
    "not-http": ([b"SSH-2.0-OpenSSH_9.2 " + creds_body(LATER) + b"\r\n\r\n"], CredentialsError),
    "500-with-credentials": ([response(500, creds_body(LATER))], CredentialsError),
    "500-empty": ([response(500)], CredentialsError),
    "503-html": ([response(503, b"<html>" + SECRET.encode() + b"</html>")], CredentialsError),
    "401-echoing-the-token": (
        [response(401, json.dumps({"message": f"bad token {TOKEN}"}).encode())],
        CredentialsError,
    ),
    "403-message-holds-a-secret": (
        [response(403, creds_body(LATER, message=f"denied {SECRET} {SESSION}"))],
        CredentialsError,
    ),
    "404-empty": ([response(404)], CredentialsError),
    "429": ([response(429, creds_body(LATER))], CredentialsError),
    "302": (
        [response(302, creds_body(LATER), [("Location", "http://127.0.0.1:1/")])],
        CredentialsError,
    ),
    "no-key": ([ok(LATER, AccessKeyId=None)], CredentialsError),
    "no-secret": ([ok(LATER, SecretAccessKey=None)], CredentialsError),
    "number-key": ([ok(LATER, AccessKeyId=12345)], CredentialsError),
    "list-secret": ([ok(LATER, SecretAccessKey=[SECRET])], CredentialsError),
    "object-token": ([ok(LATER, Token={"t": SESSION})], CredentialsError),
    "no-expiration": ([ok(LATER, Expiration=None)], CredentialsError),
    "number-expiration": ([ok(LATER, Expiration=LATER)], CredentialsError),
    "bad-expiration": ([ok(LATER, Expiration="tomorrow " + SECRET)], CredentialsError),
    "expired": ([ok(START - 60)], CredentialsError),
    "expiring-within-the-margin": ([ok(START + 5)], CredentialsError),
    "newline-in-secret": ([ok(LATER, SecretAccessKey=SECRET + "\n")], CredentialsError),
    "crlf-in-token": ([ok(LATER, Token=SESSION + "\r\nX-Injected: 1")], CredentialsError),
    "non-latin1-token": ([ok(LATER, Token=SESSION + "\u2028")], CredentialsError),
    "latin1-secret": ([ok(LATER, SecretAccessKey=SECRET + "\xe9")], CredentialsError),
    "malformed-json": ([response(200, creds_body(LATER)[:-3])], CredentialsError),
    "json-list": ([response(200, b"[" + creds_body(LATER) + b"]")], CredentialsError),
    "json-string": (
        [response(200, json.dumps(creds_body(LATER).decode()).encode())],
        CredentialsError,
    ),
    "invalid-utf8": ([response(200, creds_body(LATER)[:-2] + b'\xff"}')], CredentialsError),
    "deeply-nested": (
        [response(200, b'{"a": ' + b"[" * 100_000 + SECRET.encode())],
        CredentialsError,
    ),
    "retries-exhausted": ([response(500, creds_body(LATER))] * 5, CredentialsError),
}


def _failure(call: Callable[[float], object], deadline: float) -> IamDbError:
    """The error of ``call(deadline)``; this frame holds a bound method and a number only
    (the test's own frames, which hold every secret, are not walked)."""
    try:
        call(deadline)
    except IamDbError as exc:
        return exc
    raise AssertionError("no error")


def _leaks(exc: BaseException) -> list[str]:
    return [
        f"{path}: {text[:120]!r}"
        for path, text in kept_alive(exc)
        if any(secret in text for secret in SECRETS)
    ]


Fetch = Callable[[dict[str, str], FakeTime], Callable[[float], object]]


@pytest.fixture(params=["container", "resolver"])
def fetch(request: pytest.FixtureRequest) -> Fetch:
    """``fetch(env, t)``: what gets the credentials, directly or through the resolver."""

    def make(env: dict[str, str], t: FakeTime) -> Callable[[float], object]:
        runtime = Runtime(environ=env, clock=t.clock, sleep=t.sleep, random=lambda: 0.5)
        if request.param == "container":
            return ContainerCredentials(runtime).get
        return CredentialResolver(runtime).resolve

    return make


@pytest.mark.parametrize("case", list(ANSWERS))
def test_no_secret_reachable_from_a_failed_fetch(case: str, fetch: Fetch) -> None:
    steps, kind = ANSWERS[case]
    server, _ = serve(steps)
    with server:
        error = _failure(fetch(environment(server), Ticking()), START + 1)
    assert isinstance(error, kind), error
    assert _leaks(error) == [], error


def test_nothing_listening(fetch: Fetch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"http://127.0.0.1:{port}/creds",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": TOKEN,
    }
    error = _failure(fetch(env, Ticking()), START + 1)
    assert isinstance(error, CredentialsError)
    assert _leaks(error) == []


@pytest.fixture
def endpoint() -> Iterator[dict[str, str]]:
    server, _ = serve([GOOD])
    with server:
        yield environment(server)


BAD_TOKENS = {
    "crlf": TOKEN + "\r\nX-Injected: 1",
    "lf": TOKEN + "\nx",
    "nul": TOKEN + "\x00x",
    "tab": TOKEN + "\tx",
    "del": TOKEN + "\x7fx",
    "non-latin1": TOKEN + "\u0100",
    "line-separator": TOKEN + "\u2028x",
}


@pytest.mark.parametrize("bad", list(BAD_TOKENS))
def test_a_bad_token_variable(bad: str, endpoint: dict[str, str], fetch: Fetch) -> None:
    env = {**endpoint, "AWS_CONTAINER_AUTHORIZATION_TOKEN": BAD_TOKENS[bad]}
    error = _failure(fetch(env, Ticking()), START + 1)
    assert isinstance(error, ConfigError)
    assert error.variable == "AWS_CONTAINER_AUTHORIZATION_TOKEN"
    assert _leaks(error) == []


def _token_file(tmp_path: Path, kind: str) -> str:
    path = tmp_path / "token"
    if kind == "missing":
        pass
    elif kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        return "/dev/zero"
    elif kind == "symlink-to-fifo":
        os.mkfifo(tmp_path / "fifo")
        path.symlink_to(tmp_path / "fifo")
    elif kind == "not-utf8":
        path.write_bytes(TOKEN.encode() + b"\xff\xfe")
    elif kind == "too-large":
        path.write_text(TOKEN * 2000)
    else:
        path.write_text(BAD_TOKENS[kind])
    return str(path)


TOKEN_FILES = [
    "missing",
    "directory",
    "fifo",
    "dev-zero",
    "symlink-to-fifo",
    "not-utf8",
    "too-large",
    *BAD_TOKENS,
]


@pytest.mark.parametrize("kind", TOKEN_FILES)
def test_a_bad_token_file(
    kind: str,
    tmp_path: Path,
    endpoint: dict[str, str],
    fetch: Fetch,
) -> None:
    env = {**endpoint, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": _token_file(tmp_path, kind)}
    error = _failure(fetch(env, Ticking()), START + 1)
    assert isinstance(error, ConfigError)
    assert error.variable == "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
    assert _leaks(error) == []


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://10.0.0.5/creds"),
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "ftp://127.0.0.1/creds"),
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:x/creds"),
        ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "creds"),
    ],
)
def test_a_bad_endpoint_setting(var: str, value: str, fetch: Fetch) -> None:
    env = {var: value, "AWS_CONTAINER_AUTHORIZATION_TOKEN": TOKEN}
    error = _failure(fetch(env, Ticking()), START + 1)
    assert isinstance(error, ConfigError) and error.variable == var
    assert _leaks(error) == []


def test_no_time_left(endpoint: dict[str, str]) -> None:
    t = Ticking()
    runtime = Runtime(environ=endpoint, clock=t.clock, sleep=t.sleep)
    error = _failure(ContainerCredentials(runtime).get, t.now - 1)
    assert isinstance(error, CredentialsError) and _leaks(error) == []


def test_the_successful_answer_is_what_was_served(endpoint: dict[str, str]) -> None:
    """The cases above fail for their own reason, not because the endpoint never works."""
    t = Ticking()
    runtime = Runtime(environ=endpoint, clock=t.clock, sleep=t.sleep)
    creds = ContainerCredentials(runtime).get()
    assert (creds.access_key, creds.secret_key, creds.token) == (KEY, SECRET, SESSION)
    assert iso(LATER).endswith("Z")
