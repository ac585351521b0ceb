"""The idle limit between invocations: what ``ManagedConnection.park`` leaves when a handler
wrapped by ``iamdb.lambda_handler`` returns, and how the next invocation's first get sets the
long limit again, on a fake clock with tests.fakes.SocketDriver (real socket pairs). The real
servers: tests/integration/test_slots_between.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from iamdb._sql.slots import load_idle
from iamdb.errors import ConfigError
from tests.unit.sql.slots.test_slot_rules import ENV, LAMBDA, Setup

# The function's timeout in these tests: 100 s, so 160 s idle while an invocation runs (100 s and
# 60 s more) and the default 60 s between invocations.
TIMEOUT = 100.0


@pytest.fixture
def s() -> Iterator[Setup]:
    setup = Setup()
    yield setup
    setup.driver.cleanup()


def between(value: str | None, limit: str | None = None) -> int | None:
    env = dict(LAMBDA)
    if value is not None:
        env["IAMDB_PG_IDLE_BETWEEN_INVOCATIONS"] = value
    if limit is not None:
        env["IAMDB_PG_IDLE_SESSION_TIMEOUT"] = limit
    return load_idle(env, "IAMDB_PG_", "pg", ("h", "h")).between


def test_the_setting() -> None:
    assert between(None) == 60
    assert between("15") == 15 and between("OFF") is None and between("0") is None
    assert between("15", limit="120") == 15  # with a fixed limit too
    for bad in ("-1", "1.5", "86401", "soon"):
        with pytest.raises(ConfigError) as raised:
            between(bad)
        assert raised.value.variable == "IAMDB_PG_IDLE_BETWEEN_INVOCATIONS"


def test_the_limit_between_invocations_is_shorter_or_none(s: Setup) -> None:
    s.context(TIMEOUT)
    assert s.managed.login.idle.between() == 60
    s2 = Setup({**ENV, "IAMDB_PG_IDLE_SESSION_TIMEOUT": "30"})  # already shorter: left as is
    assert s2.managed.login.idle.between() is None
    s3 = Setup({**ENV, "IAMDB_PG_IDLE_SESSION_TIMEOUT": "off"})  # no limit at all
    assert s3.managed.login.idle.between() is None


def test_a_parked_connection_gets_its_long_limit_back_in_one_round_trip(s: Setup) -> None:
    s.context(TIMEOUT)
    conn = s.managed.get()
    assert s.managed.idle_limit == 160
    s.t.advance(2.0)
    s.managed.park()
    assert s.managed.idle_limit == 60 and s.driver.pings == 1
    s.t.advance(30.0)  # frozen, less than the limit between invocations
    s.context(TIMEOUT, "r2")
    assert s.managed.get() is conn
    assert s.managed.idle_limit == 160 and s.driver.pings == 2  # set again: nothing more
    assert s.managed.get() is conn and s.driver.pings == 2  # the same invocation: no I/O
    assert len(s.driver.pairs) == 1 and s.probe["Reconnects"] == 0


def test_a_parked_connection_the_server_closed_is_replaced(s: Setup) -> None:
    s.context(TIMEOUT)
    conn = s.managed.get()
    s.managed.park()
    s.t.advance(61.0)
    s.driver.server(conn).close()  # the server's goodbye after 60 s idle
    s.driver.ping_fails = True  # what a SET on a closed session gets
    s.context(TIMEOUT, "r2")
    again = s.managed.get()
    assert again is not conn and s.managed.idle_limit == 160
    assert s.probe["Reconnects"] == 1 and len(s.driver.tokens) == 2


def test_a_transaction_left_open_is_rolled_back_when_the_handler_returns(
    s: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    s.context(TIMEOUT)
    conn = s.managed.get()
    s.driver.transactions[conn.fileno()] = "INTRANS"
    with caplog.at_level(logging.WARNING, logger="iamdb"):
        s.managed.park()
    assert conn.fileno() == -1 and not s.managed.connected  # closed: the server rolls back
    assert s.probe["TransactionsRolledBack"] == 1 and s.driver.pings == 0
    assert "left a transaction open" in caplog.records[0].getMessage()


def test_a_connection_a_thread_of_the_handler_still_uses_keeps_its_limit(s: Setup) -> None:
    """Between invocations: left as it is. At the next invocation's start: replaced (the old
    one is left to that thread), never handed out with the short limit."""
    s.context(TIMEOUT)
    conn = s.managed.get()
    s.driver.in_use.add(conn.fileno())
    s.managed.park()
    assert s.managed.connected and s.managed.idle_limit == 160
    s.driver.limits[conn.fileno()] = 60  # as if parked before the thread took it
    s.context(TIMEOUT, "r2")
    assert s.managed.get() is not conn and s.managed.idle_limit == 160


def test_a_failed_set_closes_the_connection(s: Setup) -> None:
    s.context(TIMEOUT)
    conn = s.managed.get()
    s.driver.ping_fails = True
    s.managed.park()
    assert conn.fileno() == -1 and not s.managed.connected


@pytest.mark.parametrize(
    "how",
    ["off", "no connection", "no time left", "no context", "in use"],
)
def test_nothing_is_parked_when(s: Setup, how: str) -> None:
    if how == "off":
        s = Setup({**ENV, "IAMDB_PG_IDLE_BETWEEN_INVOCATIONS": "off"})
    s.context(TIMEOUT)
    if how != "no connection":
        s.managed.get()
    if how == "no time left":
        s.t.advance(TIMEOUT)
    if how == "no context":
        s.invocation.clear()
    if how == "in use":  # another thread's get holds it
        assert s.managed._lock.acquire()
    s.managed.park()
    if how == "in use":
        s.managed._lock.release()
    assert s.driver.pings == 0
    assert s.managed.idle_limit == (None if how == "no connection" else 160)
