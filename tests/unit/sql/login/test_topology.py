"""Logins when the writer moves, and tokens signed with an assumed role, on a fake clock.

The driver is tests.fakes.SocketDriver: it answers the writer check from a script and refuses
logins from a queue, so every branch of the login's steps runs without a server; the real
drivers and servers (a writer that moves, a role in another account) are in
tests/integration/test_topology_*.py.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from iamdb._aws.chain import CredentialResolver
from iamdb._aws.leases import Leases
from iamdb._aws.tokens import TokenCache
from iamdb._core.invocation import Invocation
from iamdb._core.runtime import Runtime
from iamdb._sql.config import load_sql_config
from iamdb._sql.limits import Limits
from iamdb._sql.login import MOVED_SECONDS, MOVING_CAP
from iamdb._sql.managed import ManagedConnection
from iamdb._sql.writer import MOVED_HINT
from iamdb.errors import AuthError, ConnectError
from tests.fakes import FakeTime, RecordingProbe, ScriptedSts, SocketDriver, managed_connection

CLUSTER = "orders.cluster-c9akciq32.us-east-1.rds.amazonaws.com"
ROLE = "arn:aws:iam::210987654321:role/DataAccess"
ENV = {
    "IAMDB_PG_HOST": CLUSTER,
    "IAMDB_PG_USER": "app",
    "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
}
READ_ONLY = "transaction_read_only = on"


class CountingLimits(Limits):
    """The process limiter, counting the permits it gave."""

    permits = 0

    def permit(self, server: str, deadline: float, probe: Any, *, rate: Any = None) -> None:
        self.permits += 1
        return super().permit(server, deadline, probe, rate=rate)


class Setup:
    def __init__(self, **env: str) -> None:
        self.t = FakeTime()
        self.env = {**ENV, **env}
        self.driver = SocketDriver()
        self.probe = RecordingProbe()
        rt = Runtime(environ=self.env, clock=self.t.clock, sleep=self.t.sleep, random=lambda: 1.0)
        self.limits = CountingLimits(200, None, rt)
        self.cfg = load_sql_config("pg", None, self.env)
        self.managed: ManagedConnection[socket.socket] = managed_connection(
            self.driver, self.cfg, rt, probe=self.probe, limits=self.limits, retries=3
        )


@pytest.fixture
def s() -> Iterator[Setup]:
    setup = Setup()
    yield setup
    setup.driver.cleanup()


def test_a_read_only_server_is_left_and_the_login_tried_again_until_the_writer(s: Setup) -> None:
    assert s.cfg.writer
    s.driver.read_only_answers = [READ_ONLY, READ_ONLY, None]
    conn = s.managed.get()
    assert len(s.driver.pairs) == 3 and conn is s.driver.pairs[2][0]
    assert [a.fileno() for a, _ in s.driver.pairs[:2]] == [-1, -1]  # closed at once
    assert s.probe["ConnectRetries"] == 2 and s.probe["TokensSigned"] == 1
    assert len(s.t.sleeps) == 2
    # the server behind the name is changing: every attempt after a read-only one is paced
    assert s.limits.permits == 3


def test_while_the_writer_moves_no_pause_is_longer_than_the_moving_cap(s: Setup) -> None:
    # random=1.0 takes each backoff's longest pause: 0.1, 0.3, 0.9, ... without the cap
    s.driver.read_only_answers = [READ_ONLY] * 8 + [None]
    s.managed.get()
    assert len(s.t.sleeps) == 8 and max(s.t.sleeps) == MOVING_CAP
    first = s.managed.get()
    first.close()  # a failover: the accepted token is refused by the server behind the name
    s.driver.refusals = [AuthError("refused")] * 6
    s.t.sleeps.clear()
    s.managed.get()
    assert len(s.t.sleeps) == 6 and max(s.t.sleeps) == MOVING_CAP


def test_a_writer_that_does_not_come_back_in_time_is_a_clear_error(s: Setup) -> None:
    s.driver.read_only_answers = [READ_ONLY] * 1000
    with pytest.raises(ConnectError) as info:
        s.managed.get()
    message = str(info.value)
    assert "does not take writes (transaction_read_only = on)" in message
    assert "IAMDB_PG_WRITER" in message and "deadline" in message
    assert info.value.attempts is not None and info.value.attempts > 3
    assert f"({info.value.attempts} attempts over " in message
    assert s.t.now - 1_700_000_000.0 <= 10.0  # two connect timeouts: no Lambda context
    assert not s.managed.connected


def test_a_last_attempt_the_deadline_cut_short_does_not_hide_the_read_only_server(
    s: Setup,
) -> None:
    """The writer moves; the last attempt's connect times out at the deadline (a loaded server):
    the error still says the server does not take writes, which is the cause."""
    s.driver.read_only_answers = [READ_ONLY] * 1000
    timed_out = ConnectError("pg: could not connect: timeout expired")
    timed_out._transient = True
    real_connect = s.driver.connect

    def connect(*args: Any, **kwargs: Any) -> socket.socket:
        if len(s.driver.pairs) >= 3:  # from the fourth attempt on, every connect times out
            raise timed_out
        return real_connect(*args, **kwargs)

    s.driver.connect = connect  # type: ignore[method-assign]
    with pytest.raises(ConnectError) as info:
        s.managed.get()
    message = str(info.value)
    assert "does not take writes (transaction_read_only = on)" in message
    assert "timeout expired" not in message


def test_no_check_for_an_instance_not_meant_to_take_writes() -> None:
    s = Setup(IAMDB_PG_WRITER="false")
    s.driver.read_only_answers = [READ_ONLY]
    assert s.managed.get() is s.driver.pairs[0][0]
    assert s.driver.read_only_answers == [READ_ONLY]  # never asked
    s.driver.cleanup()


def test_a_connection_that_found_the_server_read_only_is_replaced_at_the_next_get(
    s: Setup,
) -> None:
    first = s.managed.get()
    s.driver.refused_writes.add(id(first))
    second = s.managed.get()
    assert second is not first and first.fileno() == -1
    assert s.probe["Reconnects"] == 1
    assert s.managed.get() is second


def test_a_refusal_of_the_accepted_token_is_retried_with_the_same_token(s: Setup) -> None:
    first = s.managed.get()
    first.close()  # the cluster failed over: the connection died
    s.driver.refusals = [AuthError("refused")] * 4  # more than IAMDB_AUTH_RETRIES
    s.managed.get()
    assert len(set(s.driver.tokens)) == 1 and s.probe["TokensSigned"] == 1
    assert s.probe["AuthFailures"] == 4 and s.probe["AuthRetries"] == 4
    assert s.limits.permits == 1 + 4  # the server behind the name may count it as new


def test_refusals_of_the_accepted_token_end_after_the_moved_window(s: Setup) -> None:
    first = s.managed.get()
    first.close()
    s.driver.refusals = [AuthError("refused")] * 1000
    far = s.t.now + 600  # a Lambda context with ten minutes left: the window ends it, not this

    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return int((far - s.t.now) * 1000)

    s.managed.deadline = _deadline_with(s, Context())
    with pytest.raises(AuthError) as info:
        s.managed.get()
    spent = s.t.sleeps
    assert MOVED_SECONDS <= sum(spent) <= MOVED_SECONDS + 2.5
    assert MOVED_HINT in str(info.value)


def test_a_refusal_of_a_new_token_is_retried_only_iamdb_auth_retries_times(s: Setup) -> None:
    s.driver.refusals = [AuthError("refused")] * 10
    with pytest.raises(AuthError) as info:
        s.managed.get()
    assert info.value.attempts == 4 and s.probe["TokensSigned"] == 4  # signed anew each time
    assert MOVED_HINT not in str(info.value)


def _deadline_with(s: Setup, context: Any) -> Any:
    invocation = Invocation(s.env, s.t.clock)
    invocation.set_context(context)
    return invocation.deadline


# -- tokens signed with an assumed role -------------------------------------------------------


def test_a_role_s_tokens_carry_its_credentials_and_follow_its_lease() -> None:
    t = FakeTime()
    start = t.now
    env = {**ENV, "IAMDB_PG_ROLE_ARN": ROLE, "IAMDB_PG_SESSION_SECONDS": "7200"}
    env |= {
        "IAMDB_DSQL_HOST": "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws",
        "IAMDB_DSQL_ROLE_ARN": ROLE,
        "IAMDB_DSQL_SESSION_SECONDS": "7200",
        "IAMDB_DSQL_TOKEN_EXPIRES_SECONDS": "3600",
    }
    rt = Runtime(environ=env, clock=t.clock, sleep=t.sleep, random=lambda: 0.5)
    sts = ScriptedSts(start + 7200, start + 3300 + 7200)
    leases = Leases(lambda: sts, rt)  # type: ignore[arg-type,return-value]
    cache = TokenCache(resolver=CredentialResolver(rt), clock=t.clock, leases=lambda: leases)
    pg, dsql = load_sql_config("pg", None, env).target, load_sql_config("dsql", None, env).target
    own = load_sql_config("pg", None, ENV).target

    t.now = start + 3000
    first = cache.get(pg)
    assert first.access_key == "ASIAKEY1" and "X-Amz-Security-Token=token-1" in first.value
    assert cache.get(own).access_key == "AKIDEXAMPLE"  # same server, the execution role's token
    assert cache.get(pg) is first
    t.now = start + 3300  # DSQL's 3,600 s tokens need 3,960 s left: the shared lease is renewed
    assert cache.get(dsql).access_key == "ASIAKEY2" and len(sts.calls) == 2
    t.now = start + 3350  # the RDS token is 350 s old, but its credentials changed: re-signed
    second = cache.get(pg)
    assert second is not first and second.access_key == "ASIAKEY2"
