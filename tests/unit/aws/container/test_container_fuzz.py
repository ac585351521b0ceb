"""Property tests of the container answer: whatever the endpoint sends, credentials or a
CredentialsError, by the deadline, never another exception, never a secret in the error.

Bodies are arbitrary bytes, arbitrary JSON, and credential documents with each field
replaced by something arbitrary (wrong types, control and non-ASCII characters, any
Expiration); status codes are arbitrary too. The served secret key and session token, and the
authorization token, appear where an endpoint could put them; the error is walked with
:func:`tests.integration.kept_alive.kept_alive`. The parser is also driven without a network,
for many more examples.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from iamdb._aws import container as _container
from iamdb._aws.container import ContainerCredentials
from iamdb._aws.credentials import Credentials
from iamdb._aws.http import Response
from iamdb._core.runtime import Runtime
from iamdb.errors import CredentialsError, IamDbError
from tests.container_endpoint import SECRET, SECRETS, SESSION, TOKEN, Ticking, environment, iso
from tests.fakes import START
from tests.integration.kept_alive import kept_alive
from tests.localserver import Captured, LocalServer, answering, response

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
field_values = st.one_of(
    json_values,
    st.sampled_from([SECRET, SESSION, "", " ", SECRET + "\n", SESSION + "\u2028", "\xe9"]),
    st.builds(lambda s, t: s + t, st.sampled_from([SECRET, SESSION]), st.text(max_size=4)),
)
expirations = st.one_of(
    st.builds(lambda d, z: iso(START + d, z), st.floats(-1e5, 1e5), st.sampled_from(["Z", ""])),
    st.text(max_size=30),
    json_values,
)
messages = st.one_of(
    st.text(max_size=60),
    st.builds(lambda s, w: f"{w} {s} {w}", st.sampled_from(SECRETS), st.text(max_size=10)),
)


@st.composite
def credential_documents(draw: st.DrawFn) -> bytes:
    """Served credentials with any field replaced, dropped or added."""
    doc: dict[str, Any] = {
        "AccessKeyId": "ASIAFUZZ000000000001",
        "SecretAccessKey": SECRET,
        "Token": SESSION,
        "Expiration": iso(START + 3600),
    }
    for name in draw(st.sets(st.sampled_from([*doc, "message"]))):
        if draw(st.booleans()):
            doc.pop(name, None)
        elif name == "Expiration":
            doc[name] = draw(expirations)
        elif name == "message":
            doc[name] = draw(messages)
        else:
            doc[name] = draw(field_values)
    return json.dumps(doc, allow_nan=True).encode()


bodies = st.one_of(
    credential_documents(),
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda d, cut: d[:cut], credential_documents(), st.integers(0, 200)),
)
statuses = st.one_of(st.just(200), st.integers(200, 599))


def _secrets(body: bytes) -> list[str]:
    """What must stay hidden: the token, and the served secrets where the secret key or
    session token field holds them (a message alone that holds SECRET serves no secret)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        doc = None
    fields = [doc.get("SecretAccessKey"), doc.get("Token")] if isinstance(doc, dict) else []
    served = [s for s in SECRETS[1:] if any(s in str(v) for v in fields if v is not None)]
    return [TOKEN, *served]


def _shown(texts: list[str], secrets: list[str]) -> list[str]:
    return [text[:80] for text in texts if any(s in text for s in secrets)]


@settings(max_examples=2000, deadline=None)
@given(status=statuses, body=bodies)
@example(status=200, body=b'{"AccessKeyId": 1e999}')
@example(status=200, body=b"[" * 5000)
@example(status=500, body=json.dumps({"message": f"bad {TOKEN}"}).encode())
def test_the_parser_answers_credentials_or_a_problem(status: int, body: bytes) -> None:
    request = _container._Request("http", "127.0.0.1", 80, "/", TOKEN)
    outcome = _container._read(Response(status, {}, body), request, START)
    if isinstance(outcome, _container._Issued):
        creds = outcome.credentials
        assert status == 200 and isinstance(creds, Credentials)
        for value in (creds.access_key, creds.secret_key, creds.token or "x"):
            assert value.isascii() and value.isprintable()
        assert outcome.expires_at - START > _container.MIN_LEFT_SECONDS
        assert START < outcome.refresh_at < outcome.expires_at
    else:
        assert isinstance(outcome, _container._Problem)
        assert _shown([outcome.why, outcome.advice], _secrets(body)) == []


class Answer:
    """What the shared endpoint answers next (one server for every example)."""

    def __init__(self) -> None:
        self.raw = response(500)

    def __call__(self, request: Captured) -> bytes:
        return self.raw


@pytest.fixture(scope="module")
def endpoint() -> Iterator[tuple[LocalServer, Answer]]:
    answer = Answer()
    with LocalServer(answering(answer)) as server:
        yield server, answer


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(status=statuses, body=bodies, chunked=st.booleans())
def test_any_answer_is_credentials_or_a_credentials_error_by_the_deadline(
    endpoint: tuple[LocalServer, Answer], status: int, body: bytes, chunked: bool
) -> None:
    server, answer = endpoint
    if chunked:
        answer.raw = response(
            status,
            b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n",
            [("Transfer-Encoding", "chunked")],
            length=False,
        )
    else:
        answer.raw = response(status, body)
    t = Ticking()
    deadline = t.clock() + 1.0
    source = ContainerCredentials(
        Runtime(environ=environment(server), clock=t.clock, sleep=t.sleep, random=lambda: 0.5)
    )
    try:
        found: object = source.get(deadline)
    except IamDbError as exc:
        found = exc
    assert t.clock() < deadline + 0.5  # generous: what the socket timeouts may overshoot by
    if isinstance(found, IamDbError):
        assert isinstance(found, CredentialsError), found
        assert _shown([t for _, t in kept_alive(found)], _secrets(body)) == [], found
    else:
        assert isinstance(found, Credentials) and status == 200
