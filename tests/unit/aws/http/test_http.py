"""iamdb._aws.http on real sockets: deadlines that bound the whole request, keep-alive, broken
answers.

Every server is a thread of our own on 127.0.0.1 (:mod:`tests.localserver`). Waits are proven
without timing thresholds:

- where the deadline is reached during reads, the connection's clock is a :class:`StepClock`
  that moves a fixed step each time iamdb reads it: the request must end after the same
  number of reads whatever the machine's speed;
- where nothing arrives at all (the wait is one blocking call), the real clock is used and the
  server counts its poll intervals until the request has returned: at most the deadline's
  worth of intervals plus one. A slow machine only makes the server count fewer.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.tls import make_tls
from iamdb._aws.http import HttpConnection, Response, TransportError
from iamdb.errors import IamDbError
from tests.fakes import FakeClock
from tests.localserver import (
    LocalServer,
    answering,
    read_request,
    response,
    tls_context,
)

HEADERS = {"host": "127.0.0.1", "content-type": "application/json"}
POLL = 0.25  # the ticking servers' poll interval (s)
BUDGET = 0.5  # time left when the request starts (s)
MiB = 1024 * 1024


def connection(server: LocalServer, clock: Callable[[], float] = time.monotonic, **env: str) -> Any:
    scheme = "https" if server.tls else "http"
    return HttpConnection(scheme, server.host, server.port, clock=clock, environ=env)


def ok(body: bytes = b"{}") -> Callable[[Any], bytes]:
    return lambda _request: response(200, body)


class StepClock:
    """A clock that moves ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.now = 1000.0
        self.step = step
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        self.now += self.step
        return self.now


class Ticks:
    """A handler part that polls until the test says the request returned (or a cap)."""

    def __init__(self, cap: int = 80) -> None:
        self.count = 0
        self.cap = cap
        self.returned = threading.Event()

    def run(self) -> None:
        while self.count < self.cap and not self.returned.wait(POLL):
            self.count += 1

    def bound(self, budget: float) -> int:
        """The ticks a request that ended by its deadline leaves: its budget, plus one poll."""
        return int(budget / POLL) + 1


def _timed_out(conn: Any, ticks: Ticks, body: bytes = b"{}") -> TransportError:
    try:
        with pytest.raises(TransportError) as info:
            conn.request("POST", "/", HEADERS, body, time.monotonic() + BUDGET)
    finally:
        ticks.returned.set()
        conn.close()
    return info.value


# --- the deadline bounds the whole request ------------------------------------------------


def test_a_server_that_never_answers_ends_the_request_by_its_deadline() -> None:
    ticks = Ticks()

    def silent(conn: socket.socket, server: LocalServer) -> None:
        assert read_request(conn) is not None
        ticks.run()

    with LocalServer(silent) as server:
        error = _timed_out(connection(server), ticks)
    assert "timed out" in str(error) and error.sent
    assert isinstance(error, IamDbError)
    assert ticks.count <= ticks.bound(BUDGET)


def test_a_server_that_dribbles_is_cut_off_by_the_deadline_not_per_read() -> None:
    sent = []

    def dribble(conn: socket.socket, server: LocalServer) -> None:
        assert read_request(conn) is not None
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100:
            if server.stopping.is_set():
                return
            conn.sendall(bytes([byte]))
            sent.append(byte)
            time.sleep(0.1)

    clock = StepClock(step=0.5)
    with LocalServer(dribble) as server:
        conn = connection(server, clock)
        start = clock.now
        with pytest.raises(TransportError) as info:
            conn.request("POST", "/", HEADERS, b"{}", start + 5.0)
        conn.close()
    assert "in time" in str(info.value) and info.value.sent
    # 5 s of deadline at 0.5 s per read of the clock, whatever real time passed: the request
    # gave up on the read that found the deadline reached, and says so
    assert "(5.00 s spent" in str(info.value)
    assert 0 < len(sent) < 100  # cut off before the server ran out of bytes to dribble


def test_a_server_that_never_completes_tls_ends_the_request_by_its_deadline(
    tls_files: Any,
) -> None:
    ticks = Ticks()

    def no_handshake(conn: socket.socket, server: LocalServer) -> None:
        ticks.run()  # the ClientHello stays unanswered

    with LocalServer(no_handshake) as server:
        conn = HttpConnection(
            "https",
            "localhost",
            server.port,
            clock=time.monotonic,
            environ={"AWS_CA_BUNDLE": str(tls_files.ca)},
        )
        error = _timed_out(conn, ticks)
    assert "TLS" in str(error) and "timed out" in str(error)
    assert not error.sent
    assert ticks.count <= ticks.bound(BUDGET)


def test_a_server_that_never_reads_ends_the_send_by_its_deadline() -> None:
    ticks = Ticks()

    def deaf(conn: socket.socket, server: LocalServer) -> None:
        ticks.run()

    with LocalServer(deaf) as server:
        error = _timed_out(connection(server), ticks, body=b"x" * (64 * MiB))
    assert "sending" in str(error) and error.sent
    assert ticks.count <= ticks.bound(BUDGET)


def test_no_time_left_means_no_connection_at_all() -> None:
    clock = FakeClock()
    with LocalServer(answering(ok())) as server:
        conn = connection(server, clock)
        with pytest.raises(TransportError) as info:
            conn.request("POST", "/", HEADERS, b"{}", clock.now)
        assert not info.value.sent
        assert server.accepted == 0


def test_connection_refused_is_a_transport_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nobody listens there
    conn = HttpConnection("http", "127.0.0.1", port, clock=time.monotonic, environ={})
    with pytest.raises(TransportError) as info:
        conn.request("POST", "/", HEADERS, b"{}", time.monotonic() + 5)
    assert "cannot connect" in str(info.value) and not info.value.sent


# --- keep-alive ---------------------------------------------------------------------------


def test_one_tcp_connection_serves_many_requests() -> None:
    with LocalServer(answering(lambda r: response(200, r.body))) as server:
        conn = connection(server)
        for i in range(5):
            answer = conn.request("POST", "/", HEADERS, b"%d" % i, time.monotonic() + 5)
            assert answer == Response(200, {"content-length": "1"}, b"%d" % i)
        conn.close()
    assert server.accepted == 1
    assert [r.body for r in server.captured] == [b"0", b"1", b"2", b"3", b"4"]


def test_threads_share_the_one_connection_safely() -> None:
    with LocalServer(answering(lambda r: response(200, r.body))) as server:
        conn = connection(server)
        results: list[bytes] = []

        def worker(n: int) -> None:
            for i in range(10):
                body = b"%d-%d" % (n, i)
                answer = conn.request("POST", "/", HEADERS, body, time.monotonic() + 10)
                assert answer.body == body
                results.append(body)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        conn.close()
    assert len(results) == 60 and server.accepted == 1


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_a_connection_the_server_closed_while_idle_is_reopened(tls: bool, tls_files: Any) -> None:
    closed = threading.Event()

    def once(conn: socket.socket, server: LocalServer) -> None:
        answering(ok(b"%d" % server.accepted), keep_alive=False)(conn, server)
        if isinstance(conn, ssl.SSLSocket):
            conn.settimeout(0.2)  # send close_notify; the client's own is not awaited
            with contextlib.suppress(OSError):
                conn.unwrap()
        conn.close()  # no "Connection: close": the client learns it only from the socket
        closed.set()

    context = tls_context(tls_files) if tls else None
    with LocalServer(once, tls=context, host="127.0.0.1") as server:
        conn = connection(server, AWS_CA_BUNDLE=str(tls_files.ca))
        assert conn.request("POST", "/", HEADERS, b"", time.monotonic() + 5).body == b"1"
        assert closed.wait(5)
        assert conn.request("POST", "/", HEADERS, b"", time.monotonic() + 5).body == b"2"
        conn.close()
    assert server.accepted == 2


def _one_answer_per_connection(how: str) -> Callable[[socket.socket, LocalServer], None]:
    """A server that answers the first request of each connection, then reads the next and
    closes (or resets) the connection without answering: the idle-close race, every time."""

    def handle(conn: socket.socket, server: LocalServer) -> None:
        request = read_request(conn)
        assert request is not None
        server.captured.append(request)
        conn.sendall(response(200, b"answer %d" % len(server.captured)))
        request = read_request(conn)
        if request is None:
            return
        server.captured.append(request)  # it reached the server, which may have acted on it
        if how == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    return handle


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_post_that_reached_the_server_is_not_sent_again(how: str) -> None:
    """A conditional UpdateItem that took a slot must not take a second one: the request went
    out on a kept-alive connection and the server closed it unanswered, so the caller gets a
    TransportError that says it was sent, and decides."""
    with LocalServer(_one_answer_per_connection(how)) as server:
        conn = connection(server)
        outcomes = []
        for _ in range(3):
            try:
                outcomes.append(conn.request("POST", "/", HEADERS, b"", time.monotonic() + 5).body)
            except TransportError as exc:
                assert exc.sent
                outcomes.append(b"error")
        conn.close()
    assert outcomes == [b"answer 1", b"error", b"answer 3"]
    assert len(server.captured) == 3 and server.accepted == 2  # one server request per call


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_get_on_a_connection_closed_under_it_is_sent_again_once(how: str) -> None:
    """GET (the container credentials) is idempotent: sending it twice is harmless."""
    with LocalServer(_one_answer_per_connection(how)) as server:
        conn = connection(server)
        bodies = [conn.request("GET", "/", HEADERS, b"", time.monotonic() + 5).body for _ in "abc"]
        conn.close()
    assert bodies == [b"answer 1", b"answer 3", b"answer 5"]
    assert len(server.captured) == 5 and server.accepted == 3


def test_a_fresh_connection_that_fails_is_not_retried() -> None:
    def drop(conn: socket.socket, server: LocalServer) -> None:
        read_request(conn)

    with LocalServer(drop) as server:
        conn = connection(server)
        with pytest.raises(TransportError) as info:
            conn.request("POST", "/", HEADERS, b"", time.monotonic() + 5)
        conn.close()
    assert "closed the connection" in str(info.value)
    assert server.accepted == 1


def test_an_unasked_answer_on_an_idle_connection_is_not_taken_for_the_next() -> None:
    def chatty(conn: socket.socket, server: LocalServer) -> None:
        assert read_request(conn) is not None
        conn.sendall(response(200, b"asked") + response(200, b"unasked"))
        read_request(conn)

    with LocalServer(chatty) as server:
        conn = connection(server)
        assert conn.request("POST", "/", HEADERS, b"", time.monotonic() + 5).body == b"asked"
        time.sleep(0)  # the unasked answer is already in the socket buffer (one sendall)
        assert conn.request("POST", "/", HEADERS, b"", time.monotonic() + 5).body == b"asked"
        conn.close()
    assert server.accepted == 2


# --- answers ---------------------------------------------------------------------------------


def _chunked(chunks: list[bytes], trailer: bytes = b"") -> bytes:
    body = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks)
    return body + b"0\r\n" + trailer + b"\r\n"


def test_chunked_answers_are_read_and_the_connection_stays_usable() -> None:
    chunks = [b"Wiki", b"pedia ", b"in\r\n\r\nchunks.", b"x" * 70000]

    def chunked(conn: socket.socket, server: LocalServer) -> None:
        while read_request(conn) is not None:
            head = response(200, headers=[("Transfer-Encoding", "chunked")], length=False)
            data = head + _chunked(chunks, b"X-Trailer: yes\r\n")
            for i in range(0, len(data), 7):  # boundaries anywhere
                conn.sendall(data[i : i + 7])

    with LocalServer(chunked) as server:
        conn = connection(server)
        for _ in range(2):
            answer = conn.request("POST", "/", HEADERS, b"", time.monotonic() + 10)
            assert answer.body == b"".join(chunks)
        conn.close()
    assert server.accepted == 1


def test_interim_1xx_answers_are_skipped() -> None:
    """RFC 9110 15.2: a client must parse 1xx answers before the final one, asked for or not."""
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nX-A: 1\r\n\r\n"
    with LocalServer(answering(lambda _: interim + response(200, b"final"))) as server:
        conn = connection(server)
        for _ in range(2):
            answer = conn.request("POST", "/", HEADERS, b"", time.monotonic() + 5)
            assert (answer.status, answer.body) == (200, b"final")
        conn.close()
    assert server.accepted == 1


def test_an_answer_without_length_is_read_to_the_close() -> None:
    def to_close(conn: socket.socket, server: LocalServer) -> None:
        read_request(conn)
        conn.sendall(response(200, b"until the end", length=False))

    with LocalServer(to_close) as server:
        conn = connection(server)
        answer = conn.request("POST", "/", HEADERS, b"", time.monotonic() + 5)
        assert answer.body == b"until the end"
        conn.close()


def test_send_then_request_drains_the_first_answer() -> None:
    def numbered(request: Any) -> bytes:
        status = 500 if request.body == b"first" else 200
        return response(status, b"answer to " + request.body, [("Content-Type", "text/plain")])

    with LocalServer(answering(numbered)) as server:
        conn = connection(server)
        conn.send("POST", "/", HEADERS, b"first", time.monotonic() + 5)
        answer = conn.request("POST", "/", HEADERS, b"second", time.monotonic() + 5)
        assert answer.status == 200 and answer.body == b"answer to second"
        conn.send("POST", "/", HEADERS, b"third", time.monotonic() + 5)
        conn.send("POST", "/", HEADERS, b"fourth", time.monotonic() + 5)
        answer = conn.request("POST", "/", HEADERS, b"fifth", time.monotonic() + 5)
        assert answer.body == b"answer to fifth"
        conn.close()
    assert server.accepted == 1
    assert [r.body for r in server.captured] == [b"first", b"second", b"third", b"fourth", b"fifth"]


def test_send_whose_answer_never_comes_does_not_break_the_next_request() -> None:
    def forgets_the_first(conn: socket.socket, server: LocalServer) -> None:
        if server.accepted == 1:
            read_request(conn)  # sent and forgotten: no answer, connection closed
            return
        answering(ok(b"fine"))(conn, server)

    with LocalServer(forgets_the_first) as server:
        conn = connection(server)
        conn.send("POST", "/", HEADERS, b"fire and forget", time.monotonic() + 5)
        answer = conn.request("POST", "/", HEADERS, b"", time.monotonic() + 5)
        assert answer.body == b"fine"
        conn.close()


@pytest.mark.parametrize(
    "partial",
    [
        b"HTTP/1.1 200 OK\r\nContent-Le",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n",
    ],
    ids=["in-head", "in-body", "in-chunk", "between-chunks"],
)
def test_a_connection_dropped_mid_answer_is_a_transport_error(partial: bytes) -> None:
    def drops(conn: socket.socket, server: LocalServer) -> None:
        if server.accepted == 1:
            read_request(conn)
            conn.sendall(partial)
            return
        answering(ok(b"recovered"))(conn, server)

    with LocalServer(drops) as server:
        conn = connection(server)
        with pytest.raises(TransportError) as info:
            conn.request("POST", "/", HEADERS, b"", time.monotonic() + 5)
        assert "mid-answer" in str(info.value) and info.value.sent
        answer = conn.request("POST", "/", HEADERS, b"", time.monotonic() + 5)
        assert answer.body == b"recovered"  # the broken connection was not kept
        conn.close()
    assert server.accepted == 2


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (4 * MiB + 1), "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", "Content-Length"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"100000\r\n"
            + b"x" * MiB
            + b"\r\n" * 1
            + (b"100000\r\n" + b"x" * MiB + b"\r\n") * 4,
            "too large",
        ),
        (b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * (4 * MiB + 10), "too large"),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"h" * (70 * 1024), "header too long"),
    ],
    ids=["content-length", "huge-content-length", "chunked", "to-close", "head"],
)
def test_an_answer_over_4_mib_is_refused(answer: bytes, why: str) -> None:
    def big(conn: socket.socket, server: LocalServer) -> None:
        read_request(conn)
        conn.sendall(answer)
        server.stopping.wait(5)  # keep the connection open: a refusal must not wait for it

    with LocalServer(big) as server:
        conn = connection(server)
        with pytest.raises(TransportError) as info:
            conn.request("POST", "/", HEADERS, b"", time.monotonic() + 5)
        conn.close()
    assert why in str(info.value)


def test_an_answer_of_exactly_4_mib_is_accepted() -> None:
    body = b"y" * (4 * MiB)
    with LocalServer(answering(ok(body))) as server:
        conn = connection(server)
        assert conn.request("POST", "/", HEADERS, b"", time.monotonic() + 10).body == body
        conn.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 OK 200\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 2000,
    ],
)
def test_garbage_answers_are_transport_errors(answer: bytes) -> None:
    def garbage(conn: socket.socket, server: LocalServer) -> None:
        read_request(conn)
        conn.sendall(answer)
        server.stopping.wait(5)

    with LocalServer(garbage) as server:
        conn = connection(server)
        with pytest.raises(TransportError) as info:
            conn.request("POST", "/", HEADERS, b"", time.monotonic() + 5)
        conn.close()
    assert "broken answer" in str(info.value)


# --- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_tls(tmp_path_factory.mktemp("tls"), ["localhost"], ["127.0.0.1"])


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_tls(tmp_path_factory.mktemp("other"), ["localhost"], ["127.0.0.1"])


@pytest.fixture
def tls_server(tls_files: Any) -> Iterator[LocalServer]:
    with LocalServer(answering(ok(b"secure")), tls=tls_context(tls_files)) as server:
        yield server


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_tls_with_the_ca_from_aws_ca_bundle(
    tls_server: LocalServer, tls_files: Any, host: str
) -> None:
    conn = HttpConnection(
        "https",
        host,
        tls_server.port,
        clock=time.monotonic,
        environ={"AWS_CA_BUNDLE": str(tls_files.ca)},
    )
    for _ in range(3):
        assert conn.request("POST", "/", HEADERS, b"", time.monotonic() + 5).body == b"secure"
    conn.close()
    assert tls_server.accepted == 1


def test_a_warmed_tls_connection_is_used_by_the_next_request(tls_files: Any) -> None:
    """TLS 1.3 servers send session tickets after the handshake: readable bytes on an idle
    connection that are no answer and no close; the warmed connection must stay."""
    handshakes = threading.Semaphore(0)

    def serve(conn: socket.socket, server: LocalServer) -> None:
        handshakes.release()  # the handshake (and the server's tickets) are done
        answering(ok(b"warm"))(conn, server)

    with LocalServer(serve, tls=tls_context(tls_files)) as server:
        conn = HttpConnection(
            "https",
            "localhost",
            server.port,
            clock=time.monotonic,
            environ={"AWS_CA_BUNDLE": str(tls_files.ca)},
        )
        conn.open(time.monotonic() + 5)
        assert handshakes.acquire(timeout=5)
        assert conn.request("POST", "/", HEADERS, b"", time.monotonic() + 5).body == b"warm"
        conn.close()
    assert server.accepted == 1


@pytest.mark.parametrize("ca", ["other", "system"])
def test_tls_with_a_wrong_ca_is_refused(tls_server: LocalServer, other_ca: Any, ca: str) -> None:
    env = {"AWS_CA_BUNDLE": str(other_ca.ca)} if ca == "other" else {}
    conn = HttpConnection("https", "localhost", tls_server.port, clock=time.monotonic, environ=env)
    with pytest.raises(TransportError) as info:
        conn.request("POST", "/", HEADERS, b"", time.monotonic() + 5)
    assert "TLS" in str(info.value) and "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    assert not info.value.sent
    assert tls_server.captured == []


def test_tls_to_a_name_the_certificate_does_not_hold_is_refused(
    tmp_path: Path, tls_files: Any
) -> None:
    elsewhere = make_tls(tmp_path, ["db.example.internal"])
    with LocalServer(answering(ok()), tls=tls_context(elsewhere)) as server:
        conn = HttpConnection(
            "https",
            "localhost",
            server.port,
            clock=time.monotonic,
            environ={"AWS_CA_BUNDLE": str(elsewhere.ca)},
        )
        with pytest.raises(TransportError) as info:
            conn.request("POST", "/", HEADERS, b"", time.monotonic() + 5)
    assert "TLS" in str(info.value) and not info.value.sent
    assert server.captured == []
