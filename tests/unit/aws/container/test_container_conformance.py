"""iamdb's container credentials against botocore's ``ContainerProvider``, answer for answer.

Each case is a script of loopback endpoint answers (and a token setting); iamdb's
:class:`~iamdb._aws.container.ContainerCredentials` and botocore's ``ContainerProvider`` (its
``RefreshableCredentials``, frozen) each get a fresh server playing the same script. They
must agree: the same credentials, or both a failure. The exceptions are deliberate, each
with its reason in ``differs``: where iamdb is stricter (credentials that would fail later, or
a token that is no clean header value) or sturdier (an answer botocore cannot read). Both
sides' attempts are bounded by 0.3 s here, and neither sleeps between them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from botocore.credentials import ContainerProvider
from botocore.utils import ContainerMetadataFetcher

from iamdb._aws import container as _container
from iamdb._aws.container import ContainerCredentials
from iamdb._core.runtime import Runtime
from iamdb.errors import IamDbError
from tests.container_endpoint import (
    CLOSE,
    KEY,
    RESET,
    SECRET,
    SESSION,
    SILENT,
    TOKEN,
    Step,
    creds_body,
    iso,
    ok,
    serve,
)
from tests.localserver import response

NO_FILE = b"<a token file that does not exist>"
Outcome = tuple[str | None, ...]  # ("ok", key, secret, token) or ("error",)
GOOD: Outcome = ("ok", KEY, SECRET, SESSION)
FAILED: Outcome = ("error",)


@dataclass(frozen=True)
class Case:
    """The endpoint's answers (built from the current time), the token, and what differs."""

    steps: Callable[[float], list[Step]]
    token: str | None = TOKEN  # AWS_CONTAINER_AUTHORIZATION_TOKEN
    token_file: bytes | None = None  # AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE's content
    url: str | None = None  # AWS_CONTAINER_CREDENTIALS_FULL_URI instead of the server's
    differs: str = ""  # why iamdb deliberately disagrees ("": they must agree)
    iamdb: Outcome = GOOD  # iamdb's outcome where it differs


def _good(now: float) -> list[Step]:
    return [ok(now + 3600)]


def _then_good(*first: Step) -> Callable[[float], list[Step]]:
    return lambda now: [*first, ok(now + 3600)]


def _always(step: Step) -> Callable[[float], list[Step]]:
    return lambda now: [step]


def _served(**changes: object) -> Callable[[float], list[Step]]:
    return lambda now: [ok(now + 3600, **changes)]


def _expiring(seconds: float, zone: str = "Z") -> Callable[[float], list[Step]]:
    return lambda now: [ok(now + seconds, Expiration=iso(now + seconds, zone))]


STRICTER_4XX = (
    "a 4xx other than 408/429 (a refused token, a wrong path) is not retried: it will not "
    "change in a second, and retrying spends the caller's time; botocore retries any non-200"
)
UNUSABLE = (
    "served credentials must be strings of printable ASCII (CredentialsError); botocore "
    "hands them out and the signing or the request fails later"
)
CASES: dict[str, Case] = {
    "200": Case(_good),
    "200-chunked": Case(
        lambda now: [
            response(
                200,
                b"%x\r\n%s\r\n0\r\n\r\n" % (len(creds_body(now + 3600)), creds_body(now + 3600)),
                [("Transfer-Encoding", "chunked")],
                length=False,
            )
        ]
    ),
    "500-then-200": Case(_then_good(response(500))),
    "503-503-then-200": Case(_then_good(response(503), response(503))),
    "503x3-then-200": Case(_then_good(response(503), response(503), response(503))),
    "502-json-then-200": Case(_then_good(response(502, b'{"message": "bad gateway"}'))),
    "429-then-200": Case(_then_good(response(429))),
    "timeout-then-200": Case(_then_good(SILENT)),
    "timeout-x3": Case(_always(SILENT)),
    "closed-then-200": Case(_then_good(CLOSE)),
    "reset-then-200": Case(_then_good(RESET)),
    "cut-short-then-200": Case(lambda now: [ok(now + 3600)[:-10], ok(now + 3600)]),
    "500-forever": Case(_always(response(500, b'{"message": "down"}'))),
    "401-then-200": Case(
        _then_good(response(401, b'{"message": "bad token"}')), differs=STRICTER_4XX, iamdb=FAILED
    ),
    "404-then-200": Case(_then_good(response(404)), differs=STRICTER_4XX, iamdb=FAILED),
    "401-forever": Case(_always(response(401))),
    "not-json": Case(_always(response(200, b"<html>not json</html>"))),
    "not-json-then-200": Case(_then_good(response(200, b"<html>proxy</html>"))),
    "empty-200": Case(_always(response(200))),
    "json-list": Case(_always(response(200, b"[]"))),
    "json-string": Case(_always(response(200, b'"credentials"'))),
    "no-key": Case(_served(AccessKeyId=None)),
    "no-secret": Case(_served(SecretAccessKey=None)),
    "no-token": Case(
        _served(Token=None),
        differs="credentials without a session token (long-term keys, as devstack serves them) "
        "are handed out; botocore raises KeyError",
        iamdb=("ok", KEY, SECRET, None),
    ),
    "null-token": Case(lambda now: [_null_token(now)], iamdb=("ok", KEY, SECRET, None)),
    "empty-token": Case(_served(Token=""), iamdb=("ok", KEY, SECRET, None)),
    "number-key": Case(_served(AccessKeyId=12345), differs=UNUSABLE, iamdb=FAILED),
    "extra-fields": Case(_served(AccountId="123456789012", RoleArn="arn:aws:iam::1:role/x")),
    "no-expiration": Case(_served(Expiration=None)),
    "number-expiration": Case(_served(Expiration=1893456000)),
    "bad-expiration": Case(_served(Expiration="tomorrow")),
    "expired-an-hour-ago": Case(_expiring(-3600)),
    "expired-a-second-ago": Case(_expiring(-1)),
    "expiring-in-30-s": Case(
        _expiring(30),
        differs="credentials with a minute or less left are refused: a token or login signed "
        "with them fails moments later; botocore hands them out, refreshing on every call",
        iamdb=FAILED,
    ),
    "expiring-in-5-min": Case(_expiring(300)),
    "expiration-with-offset": Case(_expiring(3600, "+00:00")),
    "expiration-without-zone": Case(
        _expiring(3600, ""),
        differs="an Expiration without a zone is read as UTC (as AWS means it); botocore "
        "compares it with an aware datetime and raises TypeError",
    ),
    "token-file-trailing-newline": Case(
        _good,
        token_file=TOKEN.encode() + b"\n",
        differs="a token file's trailing newline is stripped (files end so); botocore sends it "
        "and refuses it as an illegal header value",
    ),
    "token-file": Case(_good, token_file=TOKEN.encode()),
    "token-file-empty": Case(_good, token_file=b""),
    "token-file-missing": Case(_good, token_file=NO_FILE),
    "token-crlf": Case(_good, token=TOKEN + "\r\nX-Injected: 1"),
    "token-lf": Case(_good, token=TOKEN + "\nx"),
    "token-nul": Case(
        _good,
        token=TOKEN + "\x00",
        differs="control characters in the token are refused (ConfigError); botocore checks "
        "CR and LF only and sends the rest",
        iamdb=FAILED,
    ),
    "token-latin1": Case(
        _good,
        token=TOKEN + "\xe9",
        differs="a non-ASCII token is refused (ConfigError): HTTP senders should not send "
        "obs-text (RFC 9110), and Lambda's and ECS's tokens are ASCII; botocore sends Latin-1",
        iamdb=FAILED,
    ),
    "token-non-latin1": Case(_good, token=TOKEN + "\u0100"),
    "no-token-at-all": Case(_good, token=None),
    "secret-with-newline": Case(
        _served(SecretAccessKey=SECRET + "\n"),
        differs=UNUSABLE,
        iamdb=FAILED,
    ),
    "session-token-non-ascii": Case(
        _served(Token=SESSION + "\xe9"),
        differs=UNUSABLE,
        iamdb=FAILED,
    ),
    "http-to-a-private-address": Case(_good, url="http://10.0.0.5/creds"),
    "http-to-link-local-metadata": Case(_good, url="http://169.254.169.254/creds"),
}


def _null_token(now: float) -> bytes:
    body = creds_body(now + 3600).replace(f'"{SESSION}"'.encode(), b"null")
    return response(200, body)


@pytest.fixture(autouse=True)
def short_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both sides' attempts bounded by 0.3 s; no proxy from the machine's environment."""
    monkeypatch.setattr(_container, "FETCH_SECONDS", 0.3)
    monkeypatch.setattr(ContainerMetadataFetcher, "TIMEOUT_SECONDS", 0.3)
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


def ours(env: dict[str, str]) -> Outcome:
    source = ContainerCredentials(Runtime(environ=env, sleep=lambda seconds: None))
    try:
        creds = source.get()
    except IamDbError:
        return FAILED
    return ("ok", creds.access_key, creds.secret_key, creds.token or None)


def theirs(env: dict[str, str]) -> Outcome:
    provider = ContainerProvider(
        environ=env, fetcher=ContainerMetadataFetcher(sleep=lambda seconds: None)
    )
    try:
        frozen = provider.load().get_frozen_credentials()
    except Exception:  # botocore fails with many types (KeyError, ValueError, RuntimeError...)
        return FAILED
    return ("ok", frozen.access_key, frozen.secret_key, frozen.token or None)


@contextlib.contextmanager
def _environment(case: Case, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A fresh server playing the case's script, and the environment that names it."""
    server, _ = serve(case.steps(time.time()))
    with server:
        env = {"AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{server.url}/2021-04-23/credentials"}
        if case.url is not None:
            env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = case.url
        if case.token is not None:
            env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = case.token
        if case.token_file is not None:
            path = tmp_path / "token"
            if case.token_file is not NO_FILE:
                path.write_bytes(case.token_file)
            env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] = str(path)
        yield env


def outcomes(name: str, tmp_path: Path, run: Callable[[dict[str, str]], Outcome]) -> Outcome:
    with _environment(CASES[name], tmp_path) as env:
        return run(env)


@pytest.mark.parametrize("name", list(CASES))
def test_iamdb_agrees_with_botocore_or_differs_on_purpose(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    mine, botocore = outcomes(name, tmp_path, ours), outcomes(name, tmp_path, theirs)
    if not case.differs:
        assert mine == botocore
    else:
        assert mine != botocore, f"no longer differs: {case.differs}"
        assert mine == case.iamdb, case.differs
