"""Connecting by the deadline to a name with several addresses, and requests HTTP cannot carry.

A VPC interface endpoint's name resolves to one address per zone; when some of them do not
answer, the connect must still end by the deadline (``socket.create_connection`` gave each
address the whole time left). The name is resolved through ``socket.getaddrinfo``, the one
seam (no resolver stub exists here); black holes are loopback listeners whose one-slot accept
queue is full, so the kernel drops further SYNs and a connect waits until its timeout.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from iamdb._aws.http import HttpConnection, TransportError
from iamdb.errors import ConfigError
from tests.integration.kept_alive import kept_alive
from tests.localserver import LocalServer, answering, response

TOKEN = "IQoJb3JpZ2luX2VjEPLAIN-SESSION-TOKEN-abcdef0123456789"
HEADERS = {"host": "endpoint.test", "x-amz-security-token": TOKEN}
SLACK = 1.0  # generous: how long past its deadline a request may end on a slow machine


@pytest.fixture
def black_holes() -> Iterator[list[tuple[str, int]]]:
    """Three loopback addresses that never complete a TCP handshake."""
    opened: list[socket.socket] = []
    addresses = []
    for n in (2, 3, 4):
        listener = socket.socket()
        listener.bind((f"127.0.0.{n}", 0))
        listener.listen(0)
        filler = socket.create_connection(listener.getsockname(), timeout=5)  # the one slot
        opened += [listener, filler]
        addresses.append(listener.getsockname())
    yield addresses
    for sock in opened:
        sock.close()


def resolving(monkeypatch: pytest.MonkeyPatch, addresses: list[tuple[str, int]]) -> None:
    """``endpoint.test`` resolves to ``addresses``, in that order."""

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        assert host == "endpoint.test"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", a) for a in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def _connection() -> HttpConnection:
    return HttpConnection("http", "endpoint.test", 80, clock=time.monotonic, environ={})


def test_unreachable_addresses_share_the_deadline(
    monkeypatch: pytest.MonkeyPatch, black_holes: list[tuple[str, int]]
) -> None:
    """Each of three black holes had the whole second: 3 s against a 1 s deadline."""
    resolving(monkeypatch, black_holes)
    conn = _connection()
    start = time.monotonic()
    with pytest.raises(TransportError) as info:
        conn.request("POST", "/", HEADERS, b"{}", start + 1.0)
    assert time.monotonic() - start < 1.0 + SLACK
    assert "cannot connect to endpoint.test:80 (3 addresses): timed out" in str(info.value)
    assert not info.value.sent


def test_a_live_address_after_unreachable_ones_is_reached_in_time(
    monkeypatch: pytest.MonkeyPatch, black_holes: list[tuple[str, int]]
) -> None:
    with LocalServer(answering(lambda _: response(200, b"third"))) as server:
        resolving(monkeypatch, [*black_holes[:2], (server.host, server.port)])
        conn = _connection()
        start = time.monotonic()
        assert conn.request("POST", "/", HEADERS, b"", start + 1.5).body == b"third"
        assert time.monotonic() - start < 1.5 + SLACK
        conn.close()


def test_a_refusing_address_costs_no_time(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()  # nobody listens there once the probe is closed
    with LocalServer(answering(lambda _: response(200, b"second"))) as server:
        resolving(monkeypatch, [closed, (server.host, server.port)])
        conn = _connection()
        assert conn.request("POST", "/", HEADERS, b"", time.monotonic() + 5).body == b"second"
        conn.close()


def test_a_name_that_does_not_resolve_is_a_transport_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(TransportError) as info:
        _connection().request("POST", "/", HEADERS, b"", time.monotonic() + 5)
    assert "cannot resolve the name: Name or service not known" in str(info.value)
    assert "check the endpoint" in str(info.value) and not info.value.sent


# --- requests HTTP/1.1 cannot carry -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x-amz-security-token", TOKEN + "\u20ac"),  # not Latin-1: UnicodeEncodeError before
        ("x-amz-security-token", TOKEN + "\xe9"),  # Latin-1, but not what AWS tokens are
        ("x-amz-security-token", TOKEN + "\r\nX-Injected: 1"),
        ("x-amz-security-token", TOKEN + "\x00"),
        ("x-amz-security-token", "\udcff" + TOKEN),  # a lone surrogate
        ("x amz", TOKEN),
        ("x-\u20ac", TOKEN),
    ],
)
def test_a_header_http_cannot_carry_is_refused_by_name_before_any_byte_is_sent(
    name: str, value: str
) -> None:
    with LocalServer(answering(lambda _: response(200))) as server:
        conn = HttpConnection("http", server.host, server.port, clock=time.monotonic, environ={})
        with pytest.raises(ConfigError) as info:
            conn.request("POST", "/", {"host": "h", name: value}, b"", time.monotonic() + 5)
        with pytest.raises(ConfigError):
            conn.send("POST", "/", {"host": "h", name: value}, b"", time.monotonic() + 5)
        conn.close()
    assert server.accepted == 0
    assert "header" in info.value.variable
    for path, text in kept_alive(info.value):
        assert TOKEN not in text, path
