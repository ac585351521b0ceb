"""The per-process IAM login limiter, admission (deadline, permits, retry) and its settings.

FakeTime is fake throughout: the clock is a number, and ``sleep`` advances it and records how
long each caller waited.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from iamdb.config import load_settings, load_sql_config
from iamdb.credentials import CredentialResolver
from iamdb.errors import AuthError, ConfigError, ThrottleError
from iamdb.limiter import PACE, Admission, ProcessLimiter, TokenBucket, paced_rate
from iamdb.managed import ManagedConnection
from iamdb.registry import Registry
from iamdb.retry import DecorrelatedJitter
from iamdb.tokens import Token, TokenCache
from tests.fakes import FakeTime

ENV = {
    "IAMDB_PG_HOST": "mydb.c9akciq32.us-east-1.rds.amazonaws.com",
    "IAMDB_PG_USER": "app",
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
}
EP = "mydb.c9akciq32.us-east-1.rds.amazonaws.com:5432"


# -- token bucket ----------------------------------------------------------------------


def test_bucket_paces_at_the_rate_after_the_burst() -> None:
    t = FakeTime()
    bucket = TokenBucket(10, 3, clock=t.clock)
    ready = [bucket.reserve() - t.now for _ in range(6)]
    assert ready == pytest.approx([0, 0, 0, 0.1, 0.2, 0.3])


def test_bucket_refills_with_time_but_never_beyond_the_burst() -> None:
    t = FakeTime()
    bucket = TokenBucket(10, 2, clock=t.clock)
    bucket.reserve(), bucket.reserve()
    t.now += 0.05  # half a token back
    assert bucket.reserve() - t.now == pytest.approx(0.05)
    t.now += 3600  # idle for an hour: at most `burst` logins at once
    ready = [bucket.reserve() - t.now for _ in range(3)]
    assert ready == pytest.approx([0, 0, 0.1])


def test_bucket_refuses_a_reservation_beyond_the_deadline_and_keeps_the_token() -> None:
    t = FakeTime()
    bucket = TokenBucket(4, clock=t.clock)
    assert bucket.reserve(deadline=t.now) == t.now
    with pytest.raises(ThrottleError, match=r"0\.250 s away at 4 logins/s"):
        bucket.reserve(deadline=t.now + 0.2)
    # The refused caller took nothing: the next one still gets the slot 0.25 s ahead.
    assert bucket.reserve(deadline=t.now + 0.25) == pytest.approx(t.now + 0.25)


def test_bucket_treats_a_clock_going_back_as_standing_still() -> None:
    t = FakeTime()
    bucket = TokenBucket(10, clock=t.clock)
    first = bucket.reserve()
    t.now -= 5
    assert bucket.reserve() == pytest.approx(first + 0.1)


def test_bucket_rejects_nonsense() -> None:
    with pytest.raises(ConfigError):
        TokenBucket(0, clock=lambda: 0.0)


def test_concurrent_callers_get_distinct_instants_in_order() -> None:
    t = FakeTime()  # frozen: every thread reserves at the same instant
    bucket = TokenBucket(100, clock=t.clock)
    got: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(25):
            ready = bucket.reserve()
            with lock:
                got.append(round(ready - t.now, 6))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(got) == [round(i / 100, 6) for i in range(200)]


# -- process limiter -------------------------------------------------------------------


def test_limiter_waits_with_sleep_at_the_paced_rate() -> None:
    t = FakeTime()
    limiter = ProcessLimiter(10, clock=t.clock, sleep=t.sleep)
    waits = [limiter.acquire(EP) for _ in range(4)]
    spacing = 1 / paced_rate(10)
    assert waits == pytest.approx([0, spacing, spacing, spacing], abs=1e-6)
    assert t.sleeps == pytest.approx([spacing] * 3, abs=1e-6)
    assert limiter.waited == pytest.approx(3 * spacing, abs=1e-6)
    assert paced_rate(10) == pytest.approx(10 * PACE) and PACE < 1


def test_limiter_keeps_one_bucket_per_endpoint() -> None:
    t = FakeTime()
    limiter = ProcessLimiter(10, clock=t.clock, sleep=t.sleep)
    assert limiter.acquire(EP) == 0
    assert limiter.acquire("other.c9akciq32.us-east-1.rds.amazonaws.com:5432") == 0
    assert limiter.bucket(EP) is limiter.bucket(EP)
    assert limiter.acquire(EP) > 0


def test_limiter_raises_instead_of_waiting_past_the_deadline() -> None:
    t = FakeTime()
    limiter = ProcessLimiter(1, clock=t.clock, sleep=t.sleep)
    limiter.acquire(EP)
    with pytest.raises(ThrottleError):
        limiter.acquire(EP, deadline=t.now + 0.5)
    assert t.sleeps == []


# -- admission through a ManagedConnection ---------------------------------------------


@dataclass
class FakeDriver:
    """Stands in for psycopg: each connection is one end of a socketpair."""

    engine: str = "pg"
    tokens: list[str] = field(default_factory=list)
    refusals: int = 0
    pairs: list[tuple[socket.socket, socket.socket]] = field(default_factory=list)

    def connect(self, cfg: object, token: Token) -> socket.socket:
        self.tokens.append(token.value)
        if self.refusals > 0:
            self.refusals -= 1
            raise AuthError("pg: the server refused the IAM login of user 'app'.")
        pair = socket.socketpair()
        self.pairs.append(pair)
        return pair[0]

    def fileno(self, conn: socket.socket) -> int:
        return conn.fileno()

    def is_closed(self, conn: socket.socket) -> bool:
        return conn.fileno() == -1

    def ping(self, conn: socket.socket) -> None:
        pass

    def close(self, conn: socket.socket) -> None:
        conn.close()

    def cleanup(self) -> None:
        for a, b in self.pairs:
            a.close(), b.close()


class CountingLimiter(ProcessLimiter):
    def __init__(self, t: FakeTime, rate: float = 10) -> None:
        super().__init__(rate, clock=t.clock, sleep=t.sleep)
        self.permits = 0

    def acquire(self, endpoint: str, deadline: float = float("inf")) -> float:
        self.permits += 1
        return super().acquire(endpoint, deadline)


def managed(
    t: FakeTime, driver: FakeDriver, admission: Admission
) -> ManagedConnection[socket.socket]:
    tokens = TokenCache(resolver=CredentialResolver(ENV), clock=t.clock)
    return ManagedConnection(
        load_sql_config("pg", None, ENV),
        driver,
        tokens,
        clock=t.clock,
        idle_seconds=30,
        admission=admission,
    )


def admission(t: FakeTime, limiter: ProcessLimiter, **kw: object) -> Admission:
    return Admission(
        limiter,
        clock=t.clock,
        sleep=t.sleep,
        backoff=lambda: DecorrelatedJitter(0.1, 2.0, uniform=lambda low, high: high),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def driver() -> FakeDriver:
    d = FakeDriver()
    yield d  # type: ignore[misc]
    d.cleanup()


def test_new_login_takes_a_permit_but_reusing_a_token_costs_none(driver: FakeDriver) -> None:
    t = FakeTime()
    limiter = CountingLimiter(t)
    m = managed(t, driver, admission(t, limiter))
    first = m.get()
    assert limiter.permits == 1
    t.now += 1
    assert m.get() is first and limiter.permits == 1  # reused connection
    first.close()
    t.now += 1
    m.get()  # reconnect with the cached token: the server does not count it
    assert limiter.permits == 1 and driver.tokens[0] == driver.tokens[1]
    m.get().close()
    t.now += 900  # token too old: a new one is signed, and that login needs a permit
    m.get()
    assert limiter.permits == 2 and driver.tokens[2] != driver.tokens[1]


def test_refused_logins_are_retried_each_with_a_fresh_permit(driver: FakeDriver) -> None:
    t = FakeTime()
    limiter = CountingLimiter(t)
    driver.refusals = 2
    m = managed(t, driver, admission(t, limiter, retries=3))
    m.get()
    assert len(driver.tokens) == 3 and limiter.permits == 3
    assert m._tokens.signed_count == 3  # each retry signed anew (the refused token dropped)
    assert t.sleeps == pytest.approx([0.3, 0.9])  # backoff; the permits were free by then


def test_the_last_refusal_says_throttling_may_be_the_cause(driver: FakeDriver) -> None:
    t = FakeTime()
    driver.refusals = 99
    m = managed(t, driver, admission(t, CountingLimiter(t), retries=2))
    with pytest.raises(AuthError, match=r"3 attempts.*IamDbAuthConnectionFailureThrottling"):
        m.get()
    assert len(driver.tokens) == 3


def test_lambda_deadline_stops_waiting_half_a_second_early(driver: FakeDriver) -> None:
    t = FakeTime()
    cfg = load_sql_config("pg", None, ENV)
    remaining = {"ms": 3000.0}
    a = admission(t, ProcessLimiter(10), remaining_ms=lambda: lambda: remaining["ms"])
    assert a.deadline(cfg) == pytest.approx(t.now + 2.5)
    remaining["ms"] = 200  # less than the margin: no waiting at all
    assert a.deadline(cfg) == pytest.approx(t.now)
    remaining["ms"] = 0  # a finished invocation's context: ignored
    assert a.deadline(cfg) == pytest.approx(t.now + 2 * cfg.connect_timeout)
    assert admission(t, ProcessLimiter(10)).deadline(cfg) == t.now + 2 * cfg.connect_timeout


def test_no_permit_before_the_deadline_raises_throttle_error(driver: FakeDriver) -> None:
    t = FakeTime()
    limiter = CountingLimiter(t, rate=0.1)  # one login every ~11 s
    m = managed(t, driver, admission(t, limiter, remaining_ms=lambda: lambda: 4000.0))
    m.get().close()
    m._tokens.clear()  # the next login needs a new token, hence a permit
    with pytest.raises(ThrottleError):
        m.get()
    assert t.sleeps == [] and len(driver.tokens) == 1


# -- settings and the registry ---------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "rate"),
    [
        ({}, 200.0),
        ({"IAMDB_DB_INSTANCE_CLASS": "db.t2.micro"}, 10.0),
        ({"IAMDB_DB_INSTANCE_CLASS": "DB.T2.MICRO"}, 10.0),
        ({"IAMDB_DB_INSTANCE_CLASS": "db.r6g.large"}, 200.0),
        ({"IAMDB_DB_INSTANCE_CLASS": "db.t2.micro", "IAMDB_CONNECT_RATE": "50"}, 50.0),
        ({"IAMDB_CONNECT_RATE": "0.5"}, 0.5),
    ],
)
def test_connect_rate(env: dict[str, str], rate: float) -> None:
    assert load_settings(env).connect_rate == rate


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"IAMDB_CONNECT_RATE": "0"}, "IAMDB_CONNECT_RATE"),
        ({"IAMDB_CONNECT_RATE": "-3"}, "IAMDB_CONNECT_RATE"),
        ({"IAMDB_CONNECT_RATE": "fast"}, "IAMDB_CONNECT_RATE"),
        ({"IAMDB_AUTH_RETRIES": "-1"}, "IAMDB_AUTH_RETRIES"),
        ({"IAMDB_AUTH_RETRIES": "2.5"}, "IAMDB_AUTH_RETRIES"),
        ({"IAMDB_THROTTLE_TABLE": "a b"}, "IAMDB_THROTTLE_TABLE"),
        ({"IAMDB_THROTTLE_TABLE": "x"}, "IAMDB_THROTTLE_TABLE"),
    ],
)
def test_bad_limiter_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert caught.value.variable == variable


def test_throttle_table_and_retries() -> None:
    s = load_settings({})
    assert s.throttle_table is None and s.auth_retries == 3
    s = load_settings({"IAMDB_THROTTLE_TABLE": "iamdb-throttle", "IAMDB_AUTH_RETRIES": "0"})
    assert s.throttle_table == "iamdb-throttle" and s.auth_retries == 0
    assert load_settings({"IAMDB_THROTTLE_TABLE": " "}).throttle_table is None


def test_registry_shares_one_limiter_and_builds_the_fleet_limiter_only_when_asked() -> None:
    r = Registry(environ=ENV)
    assert r.admission is r.admission and r.admission.fleet is None
    assert r.admission.limiter.rate == 200.0 and r.admission.retries == 3
    r2 = Registry(environ={**ENV, "IAMDB_THROTTLE_TABLE": "iamdb-throttle"})
    fleet = r2.admission.fleet
    assert fleet is not None and fleet.table == "iamdb-throttle"


def test_registry_lambda_context() -> None:
    t = FakeTime()
    r = Registry(environ=ENV, clock=t.clock)
    cfg = r.config("pg")
    r.set_lambda_context(SimpleNamespace(get_remaining_time_in_millis=lambda: 10_000))
    assert r.admission.deadline(cfg) == pytest.approx(t.now + 9.5)
    r.set_lambda_context(None)
    assert r.admission.deadline(cfg) == pytest.approx(t.now + 10)  # 2 x connect timeout 5
    with pytest.raises(ConfigError, match="context"):
        r.set_lambda_context(object())
