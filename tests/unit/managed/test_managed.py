"""ManagedConnection's health logic with a fake clock and a driver over real socket pairs.

The driver here is a stand-in for psycopg/PyMySQL (unit level): each "connection" is one
end of a ``socketpair``, so the zero-timeout poll sees exactly what a dead or chatty
server would produce. The real drivers are exercised in tests/integration.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import pytest

from iamdb._config import load_sql_config
from iamdb._credentials import CredentialResolver
from iamdb._limiter import Deadline, Limits
from iamdb._login import Login
from iamdb._managed import ManagedConnection
from iamdb._runtime import Runtime
from iamdb._tokens import Token, TokenCache
from iamdb.errors import AuthError, ConnectError
from tests.fakes import FakeClock, RecordingProbe

ENV = {
    "IAMDB_PG_HOST": "mydb.c9akciq32.us-east-1.rds.amazonaws.com",
    "IAMDB_PG_USER": "app",
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
}


@dataclass
class FakeConn:
    client: socket.socket
    server: socket.socket
    closed: bool = False
    pings: int = 0


@dataclass
class FakeDriver:
    engine: str = "pg"
    conns: list[FakeConn] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    refuse: bool = False
    ping_fails: bool = False

    def connect(self, cfg: object, token: Token) -> FakeConn:
        self.tokens.append(token.value)
        if self.refuse:
            raise AuthError("refused")
        a, b = socket.socketpair()
        conn = FakeConn(a, b)
        self.conns.append(conn)
        return conn

    def fileno(self, conn: FakeConn) -> int:
        return conn.client.fileno()

    def is_closed(self, conn: FakeConn) -> bool:
        return conn.closed

    def ping(self, conn: FakeConn) -> None:
        conn.pings += 1
        if self.ping_fails:
            raise OSError("server has gone away")

    def close(self, conn: FakeConn) -> None:
        conn.closed = True
        conn.client.close()
        conn.server.close()


Setup = tuple[ManagedConnection[FakeConn], "FakeDriver", FakeClock, RecordingProbe]


@pytest.fixture
def setup() -> Setup:
    clock = FakeClock()
    driver = FakeDriver()
    tokens = TokenCache(
        resolver=CredentialResolver(Runtime(environ=ENV)), clock=clock, refresh_seconds=840
    )
    rt = Runtime(environ=ENV, clock=clock)
    probe = RecordingProbe()
    login = Login(
        load_sql_config("pg", None, ENV),
        driver,
        tokens,
        runtime=rt,
        limits=Limits(200, None, rt),
        deadline=Deadline(clock),
        retries=0,
        probe=probe,  # type: ignore[arg-type]
    )
    managed = ManagedConnection(login, runtime=rt, idle_seconds=30)
    return managed, driver, clock, probe


def test_reuses_a_healthy_connection_without_round_trips(setup: Setup) -> None:
    managed, driver, clock, _ = setup
    first = managed.get()
    assert not managed.reused
    for _ in range(5):
        clock.now += 1
        assert managed.get() is first
        assert managed.reused
    assert first.pings == 0 and len(driver.conns) == 1


def test_pings_after_idle_and_keeps_a_live_connection(setup: Setup) -> None:
    managed, _driver, clock, _ = setup
    first = managed.get()
    clock.now += 31
    assert managed.get() is first
    assert first.pings == 1


def test_idle_connection_that_fails_its_ping_is_replaced(setup: Setup) -> None:
    managed, driver, clock, _ = setup
    first = managed.get()
    driver.ping_fails = True  # e.g. a NAT forgot the flow: nothing to see on the socket
    clock.now += 31
    assert managed.get() is not first
    assert first.closed and len(driver.conns) == 2


def test_server_goodbye_is_seen_without_waiting_for_idle(setup: Setup) -> None:
    managed, driver, clock, _ = setup
    first = managed.get()
    first.server.close()  # the server hung up while we were frozen
    driver.ping_fails = True
    clock.now += 1
    assert managed.get() is not first
    assert first.closed


def test_readable_but_alive_connection_is_kept(setup: Setup) -> None:
    managed, _driver, clock, _ = setup
    first = managed.get()
    first.server.send(b"N")  # e.g. an async notice: suspect, so confirm with a round trip
    clock.now += 1
    assert managed.get() is first
    assert first.pings == 1


def test_driver_closed_state_triggers_reconnect_with_the_cached_token(setup: Setup) -> None:
    managed, driver, clock, probe = setup
    first = managed.get()
    first.closed = True
    clock.now += 1
    assert managed.get() is not first
    assert driver.tokens[0] == driver.tokens[1]  # reused token: no re-sign, no throttling cost
    assert probe["TokensSigned"] == 1


def test_reconnect_after_refresh_age_uses_a_new_token(setup: Setup) -> None:
    managed, driver, clock, probe = setup
    managed.get().closed = True
    clock.now += 841
    managed.get()
    assert driver.tokens[0] != driver.tokens[1] and probe["TokensSigned"] == 2


def test_refused_login_drops_the_token(setup: Setup) -> None:
    managed, driver, _clock, probe = setup
    driver.refuse = True
    with pytest.raises(AuthError):
        managed.get()
    with pytest.raises(AuthError):
        managed.get()
    assert probe["TokensSigned"] == 2  # signed again after a refusal
    driver.refuse = False
    assert managed.get() is driver.conns[0]


def test_close_forgets_the_connection(setup: Setup) -> None:
    managed, _driver, _clock, _ = setup
    first = managed.get()
    managed.close()
    assert first.closed
    assert managed.get() is not first


def test_errors_say_where_the_login_went(setup: Setup) -> None:
    managed, driver, _clock, _probe = setup
    host = ENV["IAMDB_PG_HOST"]
    driver.refuse = True  # a bare AuthError: the final refusal keeps what it said, adds attempts
    with pytest.raises(AuthError) as refused:
        managed.get()
    assert refused.value.attempts == 1

    def down(cfg: object, token: Token) -> FakeConn:
        raise ConnectError("unreachable")  # made where the configuration is not known

    driver.connect = down  # type: ignore[method-assign]
    with pytest.raises(ConnectError) as failed:
        managed.get()
    where = failed.value
    assert (where.engine, where.instance, where.host, where.port, where.attempts) == (
        "pg",
        "pg",
        host,
        5432,
        1,
    )
