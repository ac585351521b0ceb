"""Answers as a hostile or broken endpoint sends them, read through a real loopback socket.

The odd cases one by one first (each was, or could have been, a ValueError out of
``get_pg()``), then property-based: well-formed answers of every framing, line ending and
split are read exactly; mutated and random ones give a Response or a TransportError, never
another exception, by the deadline, and no error keeps the request's secrets alive
(:func:`tests.integration.kept_alive.kept_alive` walks each, as a crash reporter would).

One server serves every example (:class:`Stage`): it answers the next request with the
staged bytes, cut into pieces, then closes the connection or keeps it open.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from iamdb._aws.http import HttpConnection, Response, TransportError
from tests.integration.kept_alive import kept_alive
from tests.localserver import LocalServer, read_request

TOKEN = "IQoJb3JpZ2luX2VjEFUZZ-SESSION-TOKEN-0123456789abcdef"
SIGNATURE = "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
HEADERS = {
    "host": "127.0.0.1",
    "x-amz-security-token": TOKEN,
    "authorization": f"AWS4-HMAC-SHA256 Credential=A/x, SignedHeaders=host, Signature={SIGNATURE}",
}
BUDGET = 0.3  # seconds each request may take
SLACK = 2.0  # a generous bound on how long past its deadline a request may end
MiB = 1024 * 1024
TCHAR = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class Stage:
    """What the server answers next: ``answer`` cut at ``cuts``; then closes, or waits."""

    def __init__(self) -> None:
        self.answer = b""
        self.cuts: list[int] = []
        self.close = True

    def handle(self, conn: socket.socket, server: LocalServer) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if read_request(conn) is None:
            return
        answer, close, at = self.answer, self.close, 0
        for cut in [*sorted(self.cuts), len(answer)]:
            conn.sendall(answer[at:cut])
            at = max(at, cut)
        if not close:
            read_request(conn)  # open until the client closes it (or asks again)


@pytest.fixture(scope="module")
def stage() -> Iterator[tuple[Stage, LocalServer]]:
    staged = Stage()
    with LocalServer(staged.handle) as server:
        yield staged, server


def _ask(stage: tuple[Stage, LocalServer], answer: bytes, cuts: list[int], close: bool) -> Any:
    """The staged answer's Response or TransportError; any other exception propagates."""
    staged, server = stage
    staged.answer, staged.cuts, staged.close = answer, cuts, close
    conn = HttpConnection("http", server.host, server.port, clock=time.monotonic, environ={})
    start = time.monotonic()
    try:
        return conn.request("POST", "/", HEADERS, b"{}", start + BUDGET)
    except TransportError as exc:
        return exc
    finally:
        conn.close()
        assert time.monotonic() - start < BUDGET + SLACK


def assert_no_secret(error: BaseException) -> None:
    for path, text in kept_alive(error):
        assert TOKEN not in text and SIGNATURE not in text, path


# --- one by one -----------------------------------------------------------------------------

BROKEN = [
    b"HTTP/1.1 \xc2\xb200 OK\r\nContent-Length: 0\r\n\r\n",  # superscript two, UTF-8
    b"HTTP/1.1 \xb200 OK\r\nContent-Length: 0\r\n\r\n",  # superscript two, Latin-1
    b"HTTP/1.1 \xd9\xa200 OK\r\n\r\n",  # Arabic-Indic digit two
    b"HTTP/1.1 20 OK\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/1.1 099 OK\r\n\r\n",
    b"HTTP/1.1 600 OK\r\n\r\n",
    b"HTTP/1.1 +20 OK\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    b"HTTP/1.1200 OK\r\n\r\n",
    b"http/1.1 200 OK\r\n\r\n",
    b"HTTP/2.0 200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: \xc2\xb2\r\n\r\nab",
    b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nab",
    b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nab",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1_0\r\n\r\nab",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\nab",
    b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nab",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2 2\r\n\r\nab",
    b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\nab",
    b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n"
    + b"2\r\nab\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nab",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nab\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+2\r\nab\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\nab\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\xc2\xb2\r\nab\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 40 + b"\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",  # obs-fold
    b"HTTP/1.1 200 OK\r\n Content-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nNo colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-\xc3\xa9: non-ASCII name\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Nul: a\x00b\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Esc: \x1b[31m\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Cr: a\rb\r\nContent-Length: 0\r\n\r\n",  # bare CR
    b"HTTP/1.1 200 OK\rContent-Length: 0\r\n\r\n",  # CR alone as a line end
]


@pytest.mark.parametrize("answer", BROKEN, ids=range(len(BROKEN)))
def test_odd_answers_are_broken_answers(stage: tuple[Stage, LocalServer], answer: bytes) -> None:
    outcome = _ask(stage, answer, [], close=True)
    assert isinstance(outcome, TransportError), outcome
    assert "broken answer" in str(outcome) and outcome.sent
    assert_no_secret(outcome)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            b"HTTP/1.1 200 OK\nContent-Length: 2\n\nab",
            Response(200, {"content-length": "2"}, b"ab"),
        ),
        (
            b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nab",
            Response(200, {"content-length": "2"}, b"ab"),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
            Response(200, {"content-length": "2, 2"}, b"ab"),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 002, 2\r\n\r\nab",
            Response(200, {"content-length": "002, 2"}, b"ab"),
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n2 ;x=y\nab\n0\nT: 1\n\n",
            Response(200, {"transfer-encoding": "Chunked"}, b"ab"),
        ),
        (
            b"HTTP/1.1 200 OK\r\nX-Latin: caf\xe9 \t\r\nContent-Length: 0\r\n\r\n",
            Response(200, {"x-latin": "caf\xe9", "content-length": "0"}, b""),
        ),
        (b"HTTP/1.0 204 No Content\r\n\r\n", Response(204, {}, b"")),
    ],
    ids=[
        "bare-lf",
        "no-reason",
        "same-length-twice",
        "same-length-listed",
        "chunked-lf",
        "latin-1",
        "204",
    ],
)
def test_odd_but_valid_answers_are_read(
    stage: tuple[Stage, LocalServer], answer: bytes, expected: Response
) -> None:
    assert _ask(stage, answer, [], close=False) == expected


# --- property-based -------------------------------------------------------------------------

FIELD_NAMES = st.text(alphabet=TCHAR, min_size=1, max_size=10).filter(
    lambda n: n.lower() not in ("content-length", "transfer-encoding", "connection")
)
FIELD_VALUES = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=30,
).map(lambda v: v.strip(" "))


@st.composite
def valid_answers(draw: st.DrawFn) -> tuple[bytes, Response, bool]:
    """(bytes, the Response they are, whether the server must close after them)."""
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    status = draw(st.integers(200, 599).filter(lambda s: s not in (204, 304)))
    fields = draw(st.lists(st.tuples(FIELD_NAMES, FIELD_VALUES), max_size=6))
    body = draw(st.binary(max_size=300))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    head = [b"HTTP/1.1 %d %s" % (status, draw(st.sampled_from([b"OK", b"", b"Odd  reason"])))]
    expected: dict[str, str] = {}
    for name, value in fields:
        head.append(
            f"{name}:{draw(st.sampled_from(['', ' ', '  ', chr(9)]))}{value}".encode("latin-1")
        )
        key = name.lower()
        expected[key] = f"{expected[key]}, {value}" if key in expected else value
    if framing == "length":
        head.append(b"Content-Length: %d" % len(body))
        expected["content-length"] = str(len(body))
        payload = body
    elif framing == "chunked":
        head.append(b"Transfer-Encoding: chunked")
        expected["transfer-encoding"] = "chunked"
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) if b > a]
        size = draw(st.sampled_from([b"%x", b"%X", b"%04x"]))
        ext = draw(st.sampled_from([b"", b";a=b", b" ; name"]))
        payload = b"".join(size % len(p) + ext + eol + p + eol for p in pieces)
        payload += b"0" + eol + draw(st.sampled_from([b"", b"Trailer: x" + eol])) + eol
    else:
        payload = body
    interim = draw(st.sampled_from([b"", b"HTTP/1.1 100 Continue" + eol + eol]))
    answer = interim + eol.join(head) + eol + eol + payload
    return answer, Response(status, expected, body), framing == "close"


NASTY = [
    b"\xc2\xb2", b"\xb2", b"0x", b"+", b"-", b"_", b" ", b"\t", b"\r", b"\n", b"\r\n", b"\x00",
    b"\r\n\r\n", b"\n\n", b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 99999999999999999999\r\n", b":", b";", b"HTTP/1.1 200 OK\r\n", b"\xff",
    b"0\r\n\r\n", b"ffffffff\r\n", b"\r\n 1", b"Connection: close\r\n",
]  # fmt: skip


@st.composite
def mutated_answers(draw: st.DrawFn) -> bytes:
    """A valid answer with a few edits: bytes inserted (nasty ones too), deleted, replaced."""
    data = bytearray(draw(valid_answers())[0])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["nasty", "insert", "delete", "replace", "truncate"]))
        if edit == "nasty":
            data[at:at] = draw(st.sampled_from(NASTY))
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif edit == "delete":
            del data[at : at + draw(st.integers(1, 4))]
        elif edit == "replace" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif edit == "truncate":
            del data[at:]
    return bytes(data)


ANY_ANSWER = st.one_of(
    mutated_answers(),
    st.binary(max_size=200),
    st.binary(max_size=200).map(lambda b: b"HTTP/1.1 200 OK\r\n" + b),
)
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(valid=valid_answers(), cuts=st.lists(st.integers(0, 2000), max_size=5), keep=st.booleans())
def test_valid_answers_are_read_exactly(
    stage: tuple[Stage, LocalServer],
    valid: tuple[bytes, Response, bool],
    cuts: list[int],
    keep: bool,
) -> None:
    answer, expected, must_close = valid
    assert _ask(stage, answer, cuts, close=must_close or not keep) == expected


@SETTINGS
@example(answer=b"HTTP/1.1 \xb200 OK\r\n\r\n", cuts=[], close=True)
@example(answer=b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n", cuts=[], close=False)
@given(
    answer=ANY_ANSWER,
    cuts=st.lists(st.integers(0, 300), max_size=4),
    close=st.sampled_from([True, True, True, False]),
)
def test_any_answer_is_a_response_or_a_transport_error_by_the_deadline(
    stage: tuple[Stage, LocalServer], answer: bytes, cuts: list[int], close: bool
) -> None:
    outcome = _ask(stage, answer, cuts, close)
    if isinstance(outcome, TransportError):
        assert_no_secret(outcome)
        assert "\n" not in str(outcome) and len(str(outcome)) < 400
        return
    assert isinstance(outcome, Response) and 100 <= outcome.status <= 599
    assert len(outcome.body) <= 4 * MiB
    for name, value in outcome.headers.items():
        assert name == name.lower() and name and not name.strip(TCHAR.lower())
        assert "\r" not in value and "\n" not in value and "\x00" not in value
