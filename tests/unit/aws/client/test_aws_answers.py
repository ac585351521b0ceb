"""DynamoDB's JSON and STS's XML answers, hostile or broken, through AwsClient and a real socket.

Any answer gives a result or an AwsError (``MalformedResponse`` when it cannot be read), never
expat's ValueError or LookupError, a UnicodeError or a RecursionError; what an error repeats
of the answer is bounded and on one line, its code an identifier; ``server_time`` comes from
the answer's ``Date`` on errors too. Property-based (hypothesis) after the named cases; each
error is walked with :func:`tests.integration.kept_alive.kept_alive` for the request's
secrets.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iamdb._aws.chain import CredentialResolver
from iamdb._aws.client import AwsClient, AwsError, DynamoAnswer
from iamdb._core.runtime import Runtime
from tests.integration.kept_alive import kept_alive
from tests.localserver import Captured, LocalServer, answering, response

SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYFUZZKEY"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEFUZZ//////////SESSIONTOKEN"
DATE = "Sun, 06 Nov 1994 08:49:37 GMT"
CODE = re.compile(r"[A-Za-z0-9._:-]{1,100}")


class Scripted:
    """The server's next answer, set by each example."""

    def __init__(self) -> None:
        self.answer = response(200, b"{}")

    def __call__(self, _request: Captured) -> bytes:
        return self.answer


@pytest.fixture(scope="module")
def script() -> Scripted:
    return Scripted()


@pytest.fixture(scope="module")
def client(script: Scripted) -> Iterator[AwsClient]:
    with LocalServer(answering(script)) as server:
        env = {
            "AWS_ACCESS_KEY_ID": "ASIAEXAMPLEFUZZ00001",
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_SESSION_TOKEN": SESSION_TOKEN,
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": server.url,
        }
        aws = AwsClient(Runtime(environ=env), CredentialResolver(Runtime(environ=env)))
        yield aws
        aws.close()


def _call(aws: AwsClient, service: str) -> Any:
    """The call's result, or the AwsError it raised (any other exception propagates)."""
    deadline = Runtime().clock() + 5
    try:
        if service == "dynamodb":
            return aws.dynamodb("UpdateItem", {"TableName": "t", "Key": {}}, deadline)
        return aws.sts({"Action": "AssumeRole", "RoleArn": "arn:aws:iam::1:role/r"}, deadline)
    except AwsError as exc:
        return exc


def assert_readable(error: AwsError) -> None:
    """Bounded, on one line, an identifier for a code, and no secret kept alive."""
    assert CODE.fullmatch(error.code), error.code
    assert CODE.fullmatch(error.request_id) or error.request_id == ""
    assert len(str(error)) <= 600 and str(error).isprintable()
    for path, text in kept_alive(error):
        assert SECRET_KEY not in text and SESSION_TOKEN not in text, path
        assert "Signature=" not in text, path


# --- named cases ------------------------------------------------------------------------------

DECLARED = ["shift_jis", "utf-32", "utf-16", "euc-jp", "bogus-encoding", "latin-1", "cp1252"]


@pytest.mark.parametrize("encoding", DECLARED)
def test_an_xml_declared_encoding_is_never_looked_up(
    script: Scripted, client: AwsClient, encoding: str
) -> None:
    """STS sends UTF-8; expat raised ValueError or LookupError for these declarations."""
    body = f'<?xml version="1.0" encoding="{encoding}"?><ErrorResponse><Error><Code>Throttling'
    body += "</Code><Message>slow down</Message></Error></ErrorResponse>"
    script.answer = response(400, body.encode(), [("Date", DATE)])
    error = _call(client, "sts")
    assert isinstance(error, AwsError) and error.code == "Throttling"
    assert error.server_time == 784111777.0
    assert_readable(error)


@pytest.mark.parametrize("codec", ["utf-16", "utf-32", "shift_jis"])
def test_xml_in_another_encoding_is_a_malformed_response(
    script: Scripted, client: AwsClient, codec: str
) -> None:
    body = f'<?xml version="1.0" encoding="{codec}"?><A>\u30c6\u30b9\u30c8</A>'.encode(codec)
    script.answer = response(200, body, [("Date", DATE)])
    error = _call(client, "sts")
    assert isinstance(error, AwsError) and error.code == "MalformedResponse"
    assert error.server_time == 784111777.0


def test_a_huge_multiline_error_type_becomes_a_bounded_code(
    script: Scripted, client: AwsClient
) -> None:
    """A 2 MB ``__type`` with newlines went verbatim into the fleet limiter's warning."""
    kind = "com.amazonaws#Throttling\nException" + "\n\x1b[31mX" * 300_000
    body = json.dumps({"__type": kind, "message": "line one\nline two\r\n\x00" * 10_000})
    script.answer = response(400, body.encode(), [("x-amzn-RequestId", "RID <b>! " * 5000)])
    error = _call(client, "dynamodb")
    assert isinstance(error, AwsError)
    assert error.code == ("ThrottlingException" + "31mX" * 30)[:100]
    assert error.request_id.startswith("RIDbRIDb") and len(error.request_id) <= 100
    assert "\n" not in str(error)
    assert_readable(error)


# --- property-based -------------------------------------------------------------------------

TEXT = st.text(max_size=40) | st.sampled_from(["\n", "\r\n", "\x00", "\x1b[2J", "\u2028", "#"])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
JSON_OBJECTS = st.fixed_dictionaries(
    {},
    optional={
        "__type": JSON_VALUES | TEXT.map(lambda t: "com.amazonaws.dynamodb.v20120810#" + t),
        "message": JSON_VALUES,
        "Message": JSON_VALUES,
        "Item": JSON_VALUES,
        "Attributes": JSON_VALUES,
    },
)


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    value = draw(JSON_OBJECTS | JSON_VALUES)
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    encoded = text.encode(draw(st.sampled_from(["utf-8", "utf-16", "utf-32", "utf-8-sig"])))
    return draw(st.sampled_from([encoded, encoded[: len(encoded) // 2], b"[" * 5000 + encoded]))


@st.composite
def xml_bodies(draw: st.DrawFn) -> bytes:
    tag = st.sampled_from(["ErrorResponse", "Error", "Errors", "Code", "Message", "RequestId", "x"])
    parts = []
    for name in draw(st.lists(tag, max_size=6)):
        text = draw(TEXT).replace("&", "&amp;").replace("<", "&lt;")
        parts.append(f"<{name}>{text}" if draw(st.booleans()) else f"<{name}>{text}</{name}>")
    xml = "".join(parts) + "".join(f"</{n}>" for n in reversed(draw(st.lists(tag, max_size=3))))
    declared = draw(st.sampled_from(["", *DECLARED, "utf-8", "UTF-8", "ascii", "x" * 300]))
    if declared:
        xml = f'<?xml version="1.0" encoding="{declared}"?>' + xml
    codec = draw(st.sampled_from(["utf-8", "utf-16", "utf-32", "latin-1", "shift_jis"]))
    return xml.encode(codec, "replace")


STATUS = st.sampled_from([200, 400, 403, 500, 503]) | st.integers(200, 599)
HEADERS = st.lists(
    st.tuples(
        st.sampled_from(["Date", "x-amzn-RequestId", "Content-Type"]),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")),
    ),
    max_size=3,
).map(lambda fields: [(k, v.strip()) for k, v in fields])
SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(status=STATUS, body=json_bodies() | st.binary(max_size=100), headers=HEADERS)
def test_any_dynamodb_answer_is_a_result_or_an_aws_error(
    script: Scripted, client: AwsClient, status: int, body: bytes, headers: list[Any]
) -> None:
    script.answer = response(status, body, headers)
    outcome = _call(client, "dynamodb")
    if isinstance(outcome, AwsError):
        assert_readable(outcome)
        assert outcome.item is None or isinstance(outcome.item, dict)
    else:
        assert isinstance(outcome, DynamoAnswer) and status == 200


@SETTINGS
@given(status=STATUS, body=xml_bodies() | st.binary(max_size=100), headers=HEADERS)
def test_any_sts_answer_is_a_result_or_an_aws_error(
    script: Scripted, client: AwsClient, status: int, body: bytes, headers: list[Any]
) -> None:
    script.answer = response(status, body, headers)
    outcome = _call(client, "sts")
    if isinstance(outcome, AwsError):
        assert_readable(outcome)
    else:
        assert status == 200 and outcome.tag is not None
