"""The per-process IAM login limiter, the login loop (deadline, permits, retry), its settings.

FakeTime is fake throughout: the clock is a number, and ``sleep`` advances it and records how
long each caller waited.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from iamdb._core.invocation import Deadline
from iamdb._core.settings import load_settings
from iamdb._registry import Registry
from iamdb._sql.config import load_sql_config
from iamdb._sql.limits import Limits, TokenBucket
from iamdb._sql.managed import ManagedConnection
from iamdb._sql.pace import PACE, paced_rate
from iamdb.errors import AuthError, ConfigError, ThrottleError
from tests.fakes import FakeTime, RecordingProbe, SocketDriver, managed_connection, runtime

ENV = {
    "IAMDB_PG_HOST": "mydb.c9akciq32.us-east-1.rds.amazonaws.com",
    "IAMDB_PG_USER": "app",
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
}
EP = "mydb.c9akciq32.us-east-1.rds.amazonaws.com:5432"


# -- token bucket ----------------------------------------------------------------------


def test_bucket_paces_at_the_rate() -> None:
    t = FakeTime()
    bucket = TokenBucket(10, clock=t.clock)
    ready = [bucket.reserve() - t.now for _ in range(4)]
    assert ready == pytest.approx([0, 0.1, 0.2, 0.3])


def test_bucket_refills_with_time_but_never_beyond_one_permit() -> None:
    t = FakeTime()
    bucket = TokenBucket(10, clock=t.clock)
    bucket.reserve()
    t.now += 0.05  # half a permit back
    assert bucket.reserve() - t.now == pytest.approx(0.05)
    t.now += 3600  # idle for an hour: still one login at once, then the pace
    ready = [bucket.reserve() - t.now for _ in range(2)]
    assert ready == pytest.approx([0, 0.1])


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


# -- process limits ---------------------------------------------------------------------


def limits(t: FakeTime, rate: float = 10) -> Limits:
    return Limits(rate, None, runtime(ENV, t))


def test_limits_wait_with_sleep_at_the_paced_rate() -> None:
    t = FakeTime()
    lim, probe = limits(t), RecordingProbe()
    tickets = [lim.permit(EP, t.now + 10, probe) for _ in range(4)]
    spacing = 1 / paced_rate(10)
    assert tickets == [None] * 4  # no fleet limiter: no ticket
    assert t.sleeps == pytest.approx([spacing] * 3, abs=1e-6)
    assert probe.points["ThrottleWaitMs"] == pytest.approx([0] + [1000 * spacing] * 3, abs=1e-3)
    assert paced_rate(10) == pytest.approx(10 * PACE) and PACE < 1


def test_limits_keep_one_bucket_per_endpoint() -> None:
    t = FakeTime()
    lim, probe = limits(t), RecordingProbe()
    lim.permit(EP, t.now + 10, probe)
    lim.permit("other.c9akciq32.us-east-1.rds.amazonaws.com:5432", t.now + 10, probe)
    assert t.sleeps == []
    lim.permit(EP, t.now + 10, probe)
    assert len(t.sleeps) == 1


def test_limits_raise_instead_of_waiting_past_the_deadline() -> None:
    t = FakeTime()
    lim, probe = limits(t, rate=1), RecordingProbe()
    lim.permit(EP, t.now + 10, probe)
    with pytest.raises(ThrottleError):
        lim.permit(EP, t.now + 0.5, probe)
    assert t.sleeps == []


# -- the login loop of a ManagedConnection -----------------------------------------------


class CountingLimits(Limits):
    def __init__(self, t: FakeTime, rate: float = 10) -> None:
        super().__init__(rate, None, runtime(ENV, t))
        self.permits = 0
        self.asked: list[tuple[str, float | None]] = []  # (endpoint key, rate) of each permit

    def permit(  # type: ignore[override]
        self, endpoint: str, deadline: float, probe: object, *, rate: float | None = None
    ) -> None:
        self.permits += 1
        self.asked.append((endpoint, rate))
        return super().permit(endpoint, deadline, probe, rate=rate)  # type: ignore[arg-type]


def managed(
    t: FakeTime,
    driver: SocketDriver,
    lim: Limits,
    *,
    retries: int = 3,
    deadline: Deadline | None = None,
    probe: RecordingProbe | None = None,
) -> ManagedConnection[socket.socket]:
    return managed_connection(
        driver,
        load_sql_config("pg", None, ENV),
        runtime(ENV, t),
        limits=lim,
        retries=retries,
        probe=probe,
        deadline=deadline,
    )


@pytest.fixture
def driver() -> Iterator[SocketDriver]:
    d = SocketDriver()
    yield d
    d.cleanup()


def refusals(n: int) -> list[Exception]:
    return [AuthError("pg: the server refused the IAM login of user 'app'.") for _ in range(n)]


def test_new_login_takes_a_permit_but_reusing_a_token_costs_none(driver: SocketDriver) -> None:
    t = FakeTime()
    lim = CountingLimits(t)
    m = managed(t, driver, lim)
    first = m.get()
    assert lim.permits == 1
    t.now += 1
    assert m.get() is first and lim.permits == 1  # reused connection
    first.close()
    t.now += 1
    m.get()  # reconnect with the cached token: the server does not count it
    assert lim.permits == 1 and driver.tokens[0] == driver.tokens[1]
    m.get().close()
    t.now += 900  # token too old: a new one is signed, and that login needs a permit
    m.get()
    assert lim.permits == 2 and driver.tokens[2] != driver.tokens[1]


def test_refused_logins_are_retried_each_with_a_fresh_permit(driver: SocketDriver) -> None:
    t = FakeTime()
    lim, probe = CountingLimits(t), RecordingProbe()
    driver.refusals = refusals(2)
    m = managed(t, driver, lim, retries=3, probe=probe)
    m.get()
    assert len(driver.tokens) == 3 and lim.permits == 3
    assert probe["TokensSigned"] == 3  # each retry signed anew (the refused token dropped)
    assert probe["AuthFailures"] == 2 and probe["AuthRetries"] == 2
    assert probe["ConnectionsOpened"] == 1
    assert t.sleeps == pytest.approx([0.3, 0.9])  # backoff; the permits were free by then


def test_the_last_refusal_says_throttling_may_be_the_cause(driver: SocketDriver) -> None:
    t = FakeTime()
    driver.refusals = refusals(99)
    m = managed(t, driver, CountingLimits(t), retries=2)
    with pytest.raises(AuthError, match=r"3 attempts.*IamDbAuthConnectionFailureThrottling") as e:
        m.get()
    assert len(driver.tokens) == 3
    assert e.value.__context__ is None and e.value.__cause__ is None  # nothing kept alive


def test_lambda_deadline_stops_waiting_half_a_second_early() -> None:
    t = FakeTime()
    remaining = {"ms": 3000.0}
    d = Deadline(t.clock)
    d.set_context(lambda: remaining["ms"])
    assert d.at(5) == pytest.approx(t.now + 2.5)
    remaining["ms"] = 200  # less than the margin: no waiting at all
    assert d.at(5) == pytest.approx(t.now)
    remaining["ms"] = 0  # a finished invocation's context: ignored
    assert d.at(5) == pytest.approx(t.now + 10)
    assert Deadline(t.clock).at(5) == t.now + 10


def test_no_permit_before_the_deadline_raises_throttle_error(driver: SocketDriver) -> None:
    t = FakeTime()
    d = Deadline(t.clock)
    d.set_context(lambda: 4000.0)
    m = managed(t, driver, CountingLimits(t, rate=0.1), deadline=d)  # one login every ~11 s
    m.get().close()
    m.login._tokens.clear()  # the next login needs a new token, hence a permit
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
    r = Registry(runtime=runtime(ENV))
    assert r.limits is r.limits and r.limits.fleet is None and r.limits.rate == 200.0
    env = {**ENV, "IAMDB_THROTTLE_TABLE": "iamdb-throttle", "AWS_REGION": "us-east-1"}
    fleet = Registry(runtime=runtime(env)).limits.fleet
    assert fleet is not None and fleet.table == "iamdb-throttle"


def test_registry_refuses_a_fleet_endpoint_it_cannot_use_before_any_call() -> None:
    env = {**ENV, "IAMDB_THROTTLE_TABLE": "iamdb-throttle", "AWS_REGION": "us-east-1"}
    bad = {**env, "AWS_ENDPOINT_URL_DYNAMODB": "ftp://dynamo"}
    with pytest.raises(ConfigError) as caught:
        Registry(runtime=runtime(bad)).limits  # noqa: B018
    assert caught.value.variable == "AWS_ENDPOINT_URL_DYNAMODB"
    no_region = {k: v for k, v in env.items() if k != "AWS_REGION"}
    with pytest.raises(ConfigError) as caught:
        Registry(runtime=runtime(no_region)).limits  # noqa: B018
    assert caught.value.variable == "AWS_REGION"


def test_registry_lambda_context() -> None:
    t = FakeTime()
    r = Registry(runtime=runtime(ENV, t))
    cfg = r.config("pg")
    r.set_lambda_context(SimpleNamespace(get_remaining_time_in_millis=lambda: 10_000))
    assert r.deadline.at(cfg.connect_timeout) == pytest.approx(t.now + 9.5)
    r.set_lambda_context(None)
    assert r.deadline.at(cfg.connect_timeout) == pytest.approx(t.now + 10)  # 2 x timeout 5
    with pytest.raises(ConfigError, match="context"):
        r.set_lambda_context(object())
