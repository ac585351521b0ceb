"""ManagedConnection's logic with a fake clock and a driver over real socket pairs.

The driver (tests.fakes.SocketDriver) stands in for psycopg/PyMySQL at unit level: each
"connection" is one end of a ``socketpair``, so the zero-timeout poll sees exactly what a dead
or chatty server would produce. The real drivers are exercised in tests/integration, and the
Lambda lifecycle with real processes in tests/integration/test_lifecycle*.py.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator

import pytest

from iamdb._core.invocation import TRACE_VAR, Invocation
from iamdb._core.runtime import Runtime
from iamdb._sql.config import load_sql_config
from iamdb._sql.managed import ManagedConnection
from iamdb.errors import AuthError, ConnectError
from tests.fakes import FakeTime, RecordingProbe, SocketDriver, managed_connection

ENV = {
    "IAMDB_PG_HOST": "mydb.c9akciq32.us-east-1.rds.amazonaws.com",
    "IAMDB_PG_USER": "app",
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
}


class Setup:
    """One ManagedConnection over a SocketDriver, its fake time, probe and environment."""

    def __init__(self, retries: int = 0) -> None:
        self.t = FakeTime()
        self.env = dict(ENV)  # _X_AMZN_TRACE_ID set here plays Lambda's runtime
        self.driver = SocketDriver()
        self.probe = RecordingProbe()
        rt = Runtime(environ=self.env, clock=self.t.clock, sleep=self.t.sleep, random=lambda: 1.0)
        self.invocation = Invocation(self.env, self.t.clock)
        self.managed: ManagedConnection[socket.socket] = managed_connection(
            self.driver,
            load_sql_config("pg", None, ENV),
            rt,
            retries=retries,
            probe=self.probe,
            invocation=self.invocation,
        )

    def invoke(self, trace: str) -> None:
        """A new invocation begins (Lambda's runtime sets a new trace id)."""
        self.env[TRACE_VAR] = trace


@pytest.fixture
def s() -> Iterator[Setup]:
    setup = Setup()
    yield setup
    setup.driver.cleanup()


def test_reuses_a_healthy_connection_without_round_trips(s: Setup) -> None:
    first = s.managed.get()
    assert not s.managed.reused
    for _ in range(5):
        s.t.now += 1
        assert s.managed.get() is first
        assert s.managed.reused
    assert s.driver.pings == 0 and len(s.driver.pairs) == 1


def test_pings_after_idle_and_keeps_a_live_connection(s: Setup) -> None:
    first = s.managed.get()
    s.t.now += 31
    assert s.managed.get() is first
    assert s.driver.pings == 1


def test_idle_connection_that_fails_its_ping_is_replaced(s: Setup) -> None:
    first = s.managed.get()
    s.driver.ping_fails = True  # e.g. a NAT forgot the flow: nothing to see on the socket
    s.t.now += 31
    assert s.managed.get() is not first
    assert first.fileno() == -1 and len(s.driver.pairs) == 2
    assert s.probe["Reconnects"] == 1


def test_server_goodbye_is_seen_without_waiting_for_idle(s: Setup) -> None:
    first = s.managed.get()
    s.driver.server(first).close()  # the server hung up while we were frozen
    s.driver.ping_fails = True
    s.t.now += 1
    assert s.managed.get() is not first
    assert first.fileno() == -1


def test_readable_but_alive_connection_is_kept(s: Setup) -> None:
    first = s.managed.get()
    s.driver.server(first).send(b"N")  # e.g. an async notice: suspect, so confirm
    s.t.now += 1
    assert s.managed.get() is first
    assert s.driver.pings == 1


def test_the_ping_and_the_new_login_share_one_deadline(s: Setup) -> None:
    """With a Lambda context, both end 0.5 s before the invocation does."""
    s.managed.deadline.set_context(lambda: 3000.0)
    first = s.managed.get()
    s.driver.ping_fails = True
    s.t.now += 31
    s.managed.get()
    assert s.driver.deadlines[-1] == s.t.now + 2.5
    first.close()


def test_driver_closed_state_triggers_reconnect_with_the_cached_token(s: Setup) -> None:
    first = s.managed.get()
    first.close()
    s.t.now += 1
    assert s.managed.get() is not first
    assert s.driver.tokens[0] == s.driver.tokens[1]  # reused token: no re-sign, no throttling
    assert s.probe["TokensSigned"] == 1


def test_reconnect_after_refresh_age_uses_a_new_token(s: Setup) -> None:
    s.managed.get().close()
    s.t.now += 841
    s.managed.get()
    assert s.driver.tokens[0] != s.driver.tokens[1] and s.probe["TokensSigned"] == 2


def test_refused_login_drops_the_token(s: Setup) -> None:
    s.driver.refusals = [AuthError("refused"), AuthError("refused")]
    with pytest.raises(AuthError):
        s.managed.get()
    with pytest.raises(AuthError):
        s.managed.get()
    assert s.probe["TokensSigned"] == 2  # signed again after a refusal
    assert s.managed.get() is s.driver.pairs[0][0]


def test_close_forgets_the_connection(s: Setup) -> None:
    first = s.managed.get()
    s.managed.close()
    assert first.fileno() == -1
    assert s.managed.get() is not first


def test_a_failed_reconnect_counts_no_reconnect(s: Setup) -> None:
    """``iamdb.info()`` reports what happened: nothing was replaced."""
    first = s.managed.get()
    first.close()
    s.driver.refusals = [AuthError("refused")] * 100  # the accepted token: tried to the deadline
    with pytest.raises(AuthError):
        s.managed.get()
    assert s.probe["Reconnects"] == 0 and not s.managed.connected


def test_errors_say_where_the_login_went_and_how_long_it_took(s: Setup) -> None:
    host = ENV["IAMDB_PG_HOST"]
    s.driver.refusals = [AuthError("refused")]  # bare: the final error adds attempts and time
    with pytest.raises(AuthError) as refused:
        s.managed.get()
    assert refused.value.attempts == 1
    assert "(1 attempt over 0.00 s.)" in str(refused.value)
    s.driver.refusals = [ConnectError("unreachable")]  # made where the configuration is unknown
    with pytest.raises(ConnectError) as failed:
        s.managed.get()
    where = failed.value
    assert (where.engine, where.instance, where.host, where.port, where.attempts) == (
        "pg",
        "pg",
        host,
        5432,
        1,
    )


# -- failed connects are tried again while the deadline allows --------------------------------


def transient(message: str = "connection refused") -> ConnectError:
    failure = ConnectError(f"pg: could not connect: {message}")
    failure._transient = True
    return failure


def test_a_refused_connect_is_tried_again_with_backoff_until_it_succeeds(s: Setup) -> None:
    """The server is down at thaw and back a moment later: the invocation is served."""
    s.driver.refusals = [transient(), transient(), transient()]
    conn = s.managed.get()
    assert conn is s.driver.pairs[0][0]
    assert len(s.t.sleeps) == 3 and all(0.1 <= d <= 2.0 for d in s.t.sleeps)
    assert s.probe["ConnectRetries"] == 3


def test_a_refused_connect_ends_at_the_deadline_with_the_time_spent(s: Setup) -> None:
    s.managed.deadline.set_context(lambda: 6000.0)
    started = s.t.now
    s.driver.refusals = [transient() for _ in range(100)]
    with pytest.raises(ConnectError) as info:
        s.managed.get()
    spent = s.t.now - started
    assert spent <= 5.5  # the deadline: 6 s less the 0.5 s margin
    assert f"attempts over {spent:.2f} s" in str(info.value)
    assert info.value.attempts == len(s.driver.tokens)


def test_a_connect_failure_that_would_repeat_is_not_tried_again(s: Setup) -> None:
    s.driver.refusals = [ConnectError("certificate verify failed"), ConnectError("again")]
    with pytest.raises(ConnectError, match="certificate"):
        s.managed.get()
    assert s.t.sleeps == [] and len(s.driver.tokens) == 1


# -- what an earlier invocation left ----------------------------------------------------------


def test_a_transaction_left_by_an_earlier_invocation_is_rolled_back_by_replacing(
    s: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    s.invoke("Root=1-a")
    first = s.managed.get()
    s.driver.transactions[first.fileno()] = "INTRANS"  # the handler raised before COMMIT
    s.t.now += 5
    s.invoke("Root=1-b")
    with caplog.at_level(logging.WARNING, logger="iamdb"):
        second = s.managed.get()
    assert second is not first and first.fileno() == -1  # closed: the server rolls back
    assert s.probe["TransactionsRolledBack"] == 1 and s.probe["Reconnects"] == 0
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert record.getMessage().startswith("pg: an invocation left a transaction open")
    assert "INTRANS" in record.getMessage()
    assert s.driver.tokens[0] == s.driver.tokens[1]  # the accepted token: no new IAM login cost


def test_a_failed_transaction_is_not_handed_on_either(s: Setup) -> None:
    s.invoke("Root=1-a")
    first = s.managed.get()
    s.driver.transactions[first.fileno()] = "INERROR"
    s.invoke("Root=1-b")
    assert s.managed.get() is not first


def test_the_same_invocation_keeps_its_transaction(s: Setup) -> None:
    """A handler that began a transaction and calls get_pg() again is never cut off."""
    s.invoke("Root=1-a")
    first = s.managed.get()
    s.driver.transactions[first.fileno()] = "INTRANS"
    s.t.now += 60  # even after the idle limit: the ping sees a connection in use
    assert s.managed.get() is first and s.probe["TransactionsRolledBack"] == 0


def test_without_a_known_invocation_a_transaction_is_never_touched(s: Setup) -> None:
    first = s.managed.get()  # no context, no trace id: a script or a container
    s.driver.transactions[first.fileno()] = "INTRANS"
    s.t.now += 5
    assert s.managed.get() is first


class Context:
    """A Lambda context on the fake clock: ``seconds`` of the invocation remain from now."""

    def __init__(self, s: Setup, request_id: str, seconds: float) -> None:
        self.aws_request_id = request_id
        self._ends, self._clock = s.t.now + seconds, s.t.clock

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._ends - self._clock()) * 1000))


def test_the_request_id_of_the_context_tells_invocations_apart(s: Setup) -> None:
    s.invocation.set_context(Context(s, "req-1", 10))
    first = s.managed.get()
    s.driver.transactions[first.fileno()] = "INTRANS"
    assert s.managed.get() is first
    s.invocation.set_context(Context(s, "req-2", 10))
    assert s.managed.get() is not first


def test_a_context_whose_time_is_up_is_not_the_current_invocation(s: Setup) -> None:
    s.invocation.set_context(Context(s, "req-1", 1))
    assert s.invocation.current() == "req-1"
    s.t.now += 2
    assert s.invocation.current() is None
    s.invoke("Root=1-c")
    assert s.invocation.current() == "Root=1-c"


# -- threads ----------------------------------------------------------------------------------


def test_a_get_waiting_for_another_threads_login_ends_by_the_deadline() -> None:
    setup = Setup()
    setup.managed.deadline.set_context(lambda: 600.0)  # 0.1 s to wait, past the margin
    setup.managed._lock.acquire()  # another thread is logging in, slowly
    try:
        with pytest.raises(ConnectError, match="another thread's login did not end"):
            setup.managed.get()
    finally:
        setup.managed._lock.release()
        setup.driver.cleanup()


def test_close_leaves_a_connection_another_thread_uses() -> None:
    setup = Setup()
    first = setup.managed.get()
    in_use = threading.Event()

    def busy_close(conn: socket.socket, wait: float = 0.0) -> bool:
        in_use.set()
        return False  # the driver saw a statement running on it

    setup.driver.close = busy_close  # type: ignore[method-assign]
    setup.managed.close(wait=0.01)
    assert in_use.is_set() and first.fileno() != -1 and not setup.managed.connected
    setup.driver.cleanup()
