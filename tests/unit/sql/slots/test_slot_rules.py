"""Connection slots at unit level: the idle limit's setting and arithmetic, and the login's wait
for a slot, on a fake clock with tests.fakes.SocketDriver (real socket pairs). The drivers'
classification and the servers' behaviour are tested against devstack
(tests/integration/test_slots*.py)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest

from iamdb._core.invocation import Deadline, Invocation
from iamdb._core.runtime import Runtime
from iamdb._sql.config import load_sql_config
from iamdb._sql.managed import ManagedConnection
from iamdb._sql.slots import IdleLimit, IdleSetting, load_idle
from iamdb.errors import ConfigError, ConnectError, TooManyConnectionsError
from tests.fakes import FakeTime, RecordingProbe, SocketDriver, managed_connection

HOST = "mydb.c9akciq32.us-east-1.rds.amazonaws.com"
PROXY = "app.proxy-c9akciq32xyz.us-east-1.rds.amazonaws.com"
LAMBDA = {"AWS_LAMBDA_FUNCTION_NAME": "orders"}
ENV = {
    "IAMDB_PG_HOST": HOST,
    "IAMDB_PG_USER": "app",
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    **LAMBDA,
}


def idle(value: str | None = None, engine: str = "pg", hosts: tuple[str, str] = (HOST, HOST),
         env: dict[str, str] = LAMBDA) -> IdleSetting:  # fmt: skip
    given = {} if value is None else {"IAMDB_PG_IDLE_SESSION_TIMEOUT": value}
    return load_idle({**env, **given}, "IAMDB_PG_", engine, hosts)


# -- the setting --------------------------------------------------------------------------------


def test_auto_in_lambda_follows_the_function_timeout() -> None:
    assert idle() == IdleSetting("IAMDB_PG_IDLE_SESSION_TIMEOUT")
    assert idle("AUTO") == idle()


def test_fixed_seconds_and_off() -> None:
    assert idle("120").seconds == 120
    assert idle("off").off == "IAMDB_PG_IDLE_SESSION_TIMEOUT=off"
    assert idle("0").off == "IAMDB_PG_IDLE_SESSION_TIMEOUT=0"


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"env": {}}, "not in Lambda"),
        ({"hosts": (PROXY, PROXY)}, "RDS Proxy"),
        ({"hosts": ("db.internal.example", PROXY)}, "RDS Proxy"),  # a CNAME, signed for the proxy
        ({"hosts": (PROXY.upper() + ".", PROXY)}, "RDS Proxy"),
        ({"engine": "dsql"}, "Aurora DSQL"),
    ],
)
def test_auto_is_off_where_there_is_nothing_to_free_or_it_would_pin(
    kwargs: dict[str, object], why: str
) -> None:
    off = idle(**kwargs).off  # type: ignore[arg-type]
    assert off is not None and why in off


@pytest.mark.parametrize("value", ["-5", "1.5", "86401", "forever", "\u0665"])  # Arabic 5
def test_a_bad_value_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        idle(value)
    assert raised.value.variable == "IAMDB_PG_IDLE_SESSION_TIMEOUT"


def test_dsql_takes_no_limit_of_its_own() -> None:
    with pytest.raises(ConfigError, match="after an hour"):
        idle("60", engine="dsql")
    assert idle("off", engine="dsql").off is not None


def test_an_instance_reads_its_own_variable() -> None:
    env = {**ENV, "IAMDB_PG_REPORTS_HOST": HOST, "IAMDB_PG_REPORTS_USER": "r",
           "IAMDB_PG_REPORTS_IDLE_SESSION_TIMEOUT": "90"}  # fmt: skip
    assert load_sql_config("pg", "reports", env).idle.seconds == 90
    assert load_sql_config("pg", None, env).idle.seconds is None


# -- the limit ----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def limit(setting: IdleSetting | None = None) -> tuple[IdleLimit, Deadline, Clock]:
    clock = Clock()
    deadline = Deadline(clock)
    return IdleLimit(setting or idle(), deadline, "pg"), deadline, clock


def context(clock: Clock, seconds: float) -> object:
    ends = clock.now + seconds
    return lambda: max(0.0, (ends - clock.now) * 1000)


def test_before_any_context_the_limit_covers_lambdas_longest_timeout() -> None:
    idle_limit, _, _ = limit()
    assert idle_limit.timeout() == 900 and idle_limit.for_new() == 960


@pytest.mark.parametrize(
    ("left", "timeout", "new"),
    [(29.8, 30, 60), (2.0, 2, 4), (1.2, 2, 4), (899.9, 900, 960), (120.0, 120, 180)],
)
def test_the_limit_is_the_learned_timeout_plus_a_margin(
    left: float, timeout: int, new: int
) -> None:
    idle_limit, deadline, clock = limit()
    deadline.set_context(context(clock, left))  # type: ignore[arg-type]
    assert idle_limit.timeout() == timeout and idle_limit.for_new() == new


def test_the_longest_context_seen_counts() -> None:
    idle_limit, deadline, clock = limit()
    deadline.set_context(context(clock, 25.0))  # type: ignore[arg-type]
    deadline.set_context(context(clock, 10.0))  # type: ignore[arg-type]  # called late
    assert idle_limit.timeout() == 25


def test_a_fixed_limit_and_off() -> None:
    assert limit(idle("45"))[0].for_new() == 45
    assert limit(idle("off"))[0].for_new() is None


def test_a_connection_may_sit_idle_as_long_as_the_invocation_still_fits() -> None:
    idle_limit, deadline, clock = limit()
    deadline.set_context(context(clock, 30.0))  # type: ignore[arg-type]
    assert idle_limit.quiet(60, deadline.left()) == pytest.approx(60 - 30 - 1)
    clock.now += 20  # later in the same invocation: less of it to cover
    assert idle_limit.quiet(60, deadline.left()) == pytest.approx(60 - 10 - 1)
    assert idle_limit.quiet(60, None) == 60 - 30 - 1  # unknown: the function's timeout
    assert idle_limit.quiet(None, 10.0) == float("inf")
    assert idle_limit.misfit(60, 30.0) is None and idle_limit.misfit(None, 30.0) is None


def test_a_limit_too_short_for_the_invocation_is_replaced() -> None:
    idle_limit, deadline, clock = limit()
    deadline.set_context(context(clock, 30.0))  # type: ignore[arg-type]
    deadline.set_context(context(clock, 100.0))  # type: ignore[arg-type]  # a longer one now
    assert idle_limit.for_new() == 160
    assert "shorter than the invocation" in (idle_limit.misfit(60, 100.0) or "")
    assert idle_limit.misfit(60, 30.0) is None  # this invocation fits it
    assert idle_limit.quiet(60, 100.0) < 0  # kept (in use): confirmed at every get


def test_a_limit_made_before_the_timeout_was_known_is_replaced() -> None:
    idle_limit, deadline, clock = limit()
    made = idle_limit.for_new()
    deadline.set_context(context(clock, 10.0))  # type: ignore[arg-type]
    assert made == 960 and idle_limit.for_new() == 20
    assert "far longer than the function needs (20 s)" in (idle_limit.misfit(made, 10.0) or "")
    assert idle_limit.misfit(30, 10.0) is None  # not twice as long: kept


def test_a_fixed_limit_shorter_than_the_invocation_is_confirmed_not_replaced() -> None:
    idle_limit, deadline, clock = limit(idle("10"))
    deadline.set_context(context(clock, 30.0))  # type: ignore[arg-type]
    assert idle_limit.misfit(10, 30.0) is None
    assert idle_limit.quiet(10, 30.0) < 0  # a round trip at every get restarts its clock


# -- the login's wait for a slot ----------------------------------------------------------------


class Setup:
    """A ManagedConnection over a SocketDriver in Lambda (a context of ``seconds``)."""

    def __init__(self, env: dict[str, str] = ENV) -> None:
        self.t = FakeTime()
        self.driver = SocketDriver()
        self.probe = RecordingProbe()
        rt = Runtime(environ=env, clock=self.t.clock, sleep=self.t.sleep, random=lambda: 0.5)
        self.invocation = Invocation(env, self.t.clock)
        self.managed: ManagedConnection[socket.socket] = managed_connection(
            self.driver, load_sql_config("pg", None, env), rt, probe=self.probe,
            invocation=self.invocation,
        )  # fmt: skip

    def context(self, seconds: float, request: str = "r1") -> None:
        t, ends = self.t, self.t.now + seconds

        class Context:
            aws_request_id = request

            def get_remaining_time_in_millis(self) -> float:
                return max(0.0, (ends - t.now) * 1000)

        self.invocation.set_context(Context())


@pytest.fixture
def s() -> Iterator[Setup]:
    setup = Setup()
    yield setup
    setup.driver.cleanup()


def full(detail: str = "remaining connection slots are reserved") -> TooManyConnectionsError:
    return TooManyConnectionsError(f"pg: no connection slot free ({detail})", sqlstate="53300")


def test_a_full_server_is_waited_out_and_counted(s: Setup) -> None:
    s.context(30.0)
    s.driver.refusals = [full(), full(), full()]
    s.managed.get()
    assert len(s.driver.tokens) == 4 and len(s.t.sleeps) == 3
    assert s.probe["SlotWaits"] == 1 and s.probe["SlotWaitMs"] == pytest.approx(
        1000 * sum(s.t.sleeps)
    )
    assert s.probe["ConnectRetries"] == 0 and s.probe["AuthRetries"] == 0
    # each attempt took the permits of a new login: the token was never accepted before
    assert len(s.probe.points["ThrottleWaitMs"]) == 4


def test_a_known_token_is_not_paced_while_waiting_for_a_slot(s: Setup) -> None:
    s.context(30.0)
    first = s.managed.get()
    s.driver.server(first).close()  # the server closed it (its idle limit)
    s.driver.ping_fails = True
    s.driver.refusals = [full(), full()]
    s.context(30.0, "r2")
    assert s.managed.get() is not first
    assert len(s.probe.points["ThrottleWaitMs"]) == 1  # the first login only: same token
    assert s.probe["Reconnects"] == 1 and s.probe["SlotWaits"] == 1


def test_no_slot_before_the_deadline_is_the_clear_error(s: Setup) -> None:
    s.context(5.0)
    s.driver.refusals = [full() for _ in range(1000)]
    with pytest.raises(TooManyConnectionsError) as raised:
        s.managed.get()
    err = raised.value
    assert err.sqlstate == "53300" and err.errno is None
    assert err.attempts == len(s.driver.tokens) > 2
    assert s.t.now - 1_700_000_000.0 <= 4.5  # by the deadline: the invocation's end - 0.5 s
    message = str(err)
    assert message.startswith("pg: no connection slot free")
    assert f"({err.attempts} attempts over" in message
    assert "IAMDB_PG_IDLE_SESSION_TIMEOUT" in message and "5 s" in message  # what it does now
    assert s.probe["SlotWaits"] == 1 and s.probe["ConnectFailures"] == 0


def test_an_attempt_cut_short_by_the_deadline_while_waiting_still_says_no_slot(s: Setup) -> None:
    """The last attempt of a wait timed out (a loaded server): the full server is the cause."""
    s.context(5.0)
    timed_out = ConnectError("pg: could not connect: timeout expired")
    timed_out._transient = True
    s.driver.refusals = [*(full() for _ in range(3)), *(timed_out for _ in range(1000))]
    with pytest.raises(TooManyConnectionsError) as raised:
        s.managed.get()
    assert raised.value.attempts == len(s.driver.tokens) > 3
    assert str(raised.value).startswith("pg: no connection slot free")
    bad_certificate = ConnectError("pg: certificate verify failed")  # a cause of its own
    s.driver.refusals = [full(), bad_certificate]
    s.context(5.0, "r2")
    with pytest.raises(ConnectError) as other:
        s.managed.get()
    assert type(other.value) is ConnectError and "certificate" in str(other.value)


def test_a_server_without_idle_session_timeout_is_asked_again_at_once_without_it(
    s: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    s.context(30.0)
    unknown = 'FATAL:  unrecognized configuration parameter "idle_session_timeout"'
    s.driver.refusals = [ConnectError(f"pg: could not connect: {unknown}")]
    with caplog.at_level(logging.WARNING, logger="iamdb"):
        conn = s.managed.get()
    assert s.driver.idle_limits == [60, None]
    assert all(sleep < 0.01 for sleep in s.t.sleeps)  # no backoff: only the permit's pace
    assert s.managed.idle_limit is None and s.managed.login.idle.for_new() is None
    warnings = [r for r in caplog.records if "idle_session_timeout" in r.getMessage()]
    assert len(warnings) == 1 and "pg:" in warnings[0].getMessage()
    s.driver.server(conn).close()
    s.driver.ping_fails = True
    s.managed.get()  # the next login asks for no limit
    assert s.driver.idle_limits == [60, None, None]


def test_a_limit_refused_when_none_was_asked_for_is_an_ordinary_failure(s: Setup) -> None:
    odd = ConnectError('pg: could not connect: "idle_session_timeout" is odd')
    assert not s.managed.login.idle.refuses(odd, None)


# -- the managed connection and the idle limit --------------------------------------------------


def test_connections_carry_the_limit_of_their_login(s: Setup) -> None:
    s.managed.get()  # at init: no context yet
    assert s.managed.idle_limit == 960
    s.context(2.0)
    s.managed.get()  # a new invocation: the limit made before the timeout was known is set anew
    assert s.managed.idle_limit == 4 and len(s.driver.pairs) == 1 and s.driver.pings == 1
    assert s.probe["Reconnects"] == 0


def test_a_connection_close_to_its_idle_limit_is_confirmed_first(s: Setup) -> None:
    s.context(2.0)  # limit 4 s: 2 s of invocation + 1 s of guard leave 1 s of quiet
    first = s.managed.get()
    s.t.advance(0.5)
    s.context(2.0, "r2")
    assert s.managed.get() is first and s.driver.pings == 0
    s.t.advance(1.5)
    s.context(2.0, "r3")
    assert s.managed.get() is first and s.driver.pings == 1  # the ping restarts its clock
