"""Assumed-role leases on a fake clock: shared per role, renewed ahead, kept through an STS
outage while long enough, never handed out too short; and the role settings behind them."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from iamdb._aws.leases import RETRY_SECONDS, Leases
from iamdb._aws.roles import RENEW_AHEAD_SECONDS, Role, load_role, shortest_session
from iamdb.errors import AuthError, ConfigError, ConnectError
from tests.fakes import FakeTime, ScriptedSts, runtime, sts_error

ARN = "arn:aws:iam::210987654321:role/DataAccess"
ROLE = Role(ARN, None, 3600, "IAMDB_PG_ROLE_ARN")
ENV = {"AWS_REGION": "us-east-1"}
NEEDED = 960.0  # an RDS token's 900 s and the 60 s margin


def leases(fake: ScriptedSts, t: FakeTime) -> Leases:
    return Leases(lambda: fake, runtime(dict(ENV), t, random=0.5))  # type: ignore[arg-type,return-value]


def test_one_assume_role_serves_every_instance_of_the_role() -> None:
    t = FakeTime()
    fake = ScriptedSts(t.now + 3600)
    cache = leases(fake, t)
    calls: list[str] = []
    first = cache.get(ROLE, needed=NEEDED, deadline=t.now + 5, on_assume=lambda: calls.append("x"))
    other = Role(ARN, None, 3600, "IAMDB_MYSQL_TENANT_ROLE_ARN")  # same role, another instance
    assert cache.get(other, needed=NEEDED, deadline=t.now + 5) is first
    assert len(fake.calls) == 1 and calls == ["x"]
    assert fake.calls[0]["RoleArn"] == ARN and fake.calls[0]["DurationSeconds"] == "3600"
    assert cache.current(ROLE) is first


def test_another_session_length_or_external_id_is_another_lease() -> None:
    t = FakeTime()
    fake = ScriptedSts(t.now + 3600, t.now + 7200, t.now + 3600)
    cache = leases(fake, t)
    a = cache.get(ROLE, needed=NEEDED, deadline=t.now + 5)
    b = cache.get(Role(ARN, None, 7200, "X_ROLE_ARN"), needed=NEEDED, deadline=t.now + 5)
    c = cache.get(Role(ARN, "tenant-7", 3600, "Y_ROLE_ARN"), needed=NEEDED, deadline=t.now + 5)
    assert len({a.credentials.access_key, b.credentials.access_key, c.credentials.access_key}) == 3
    assert fake.calls[2]["ExternalId"] == "tenant-7"


def test_renewed_ahead_so_no_token_outlives_its_credentials() -> None:
    t = FakeTime()
    start = t.now
    fake = ScriptedSts(start + 3600, start + 3600 + 2400, start + 3600 + 4800)
    cache = leases(fake, t)
    keys = []
    for _ in range(120):  # two hours, a login every minute
        lease = cache.get(ROLE, needed=NEEDED, deadline=t.now + 5)
        assert lease.left(t.now) >= NEEDED  # a 900 s token signed now expires before them
        keys.append(lease.credentials.access_key)
        t.advance(60)
    renewed_at = [i for i in range(1, len(keys)) if keys[i] != keys[i - 1]]
    # due once fewer than 960 + 300 s remain: after 2,340 s of a 3,600 s session
    assert renewed_at == [40, 80] and len(fake.calls) == 3
    assert 3600 - 40 * 60 < NEEDED + RENEW_AHEAD_SECONDS <= 3600 - 39 * 60


def test_a_failed_renewal_keeps_the_lease_while_long_enough_then_raises() -> None:
    t = FakeTime()
    start = t.now
    fake = ScriptedSts(start + 3600, *[sts_error("ServiceUnavailable", 503)] * 200)
    cache = leases(fake, t)
    first = cache.get(ROLE, needed=NEEDED, deadline=t.now + 5)
    t.now = start + 3600 - NEEDED - 100  # inside the renewal window
    assert cache.get(ROLE, needed=NEEDED, deadline=t.now + 1) is first
    tried = len(fake.calls)
    t.advance(RETRY_SECONDS / 2)
    assert cache.get(ROLE, needed=NEEDED, deadline=t.now + 1) is first
    assert len(fake.calls) == tried  # STS not asked again before RETRY_SECONDS
    t.now = start + 3600 - NEEDED + 1  # now too short for a token
    with pytest.raises(ConnectError) as info:
        cache.get(ROLE, needed=NEEDED, deadline=t.now + 1)
    assert ARN in str(info.value)


def test_refused_assume_role_is_an_auth_error_naming_the_role_account_and_variable() -> None:
    t = FakeTime()
    role = Role(ARN, "abc", 3600, "IAMDB_DSQL_TENANT_ROLE_ARN")
    with pytest.raises(AuthError) as info:
        leases(ScriptedSts(sts_error("AccessDenied", 403)), t).get(
            role, needed=NEEDED, deadline=t.now + 5
        )
    message = str(info.value)
    assert ARN in message and "account 210987654321" in message
    assert "IAMDB_DSQL_TENANT_EXTERNAL_ID" in message and "trust policy" in message


def test_credentials_shorter_than_the_token_are_refused() -> None:
    t = FakeTime()
    with pytest.raises(AuthError) as info:
        leases(ScriptedSts(t.now + 900), t).get(ROLE, needed=NEEDED, deadline=t.now + 5)
    assert "expire in 900 s" in str(info.value) and "IAMDB_PG_SESSION_SECONDS" in str(info.value)


def test_threads_wanting_one_role_assume_it_once() -> None:
    class SlowSts(ScriptedSts):
        def sts(self, params: Any, deadline: float) -> Any:
            time.sleep(0.05)
            return super().sts(params, deadline)

    fake = SlowSts(time.time() + 3600)
    cache = Leases(lambda: fake, runtime(dict(ENV)))  # type: ignore[arg-type,return-value]
    got: list[Any] = []
    threads = [
        threading.Thread(
            target=lambda: got.append(cache.get(ROLE, needed=NEEDED, deadline=time.time() + 5))
        )
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(fake.calls) == 1 and len({id(lease) for lease in got}) == 1


# -- the settings ----------------------------------------------------------------------------


def test_role_settings_read_and_checked_once_for_every_engine() -> None:
    env = {
        **ENV,
        "P_ROLE_ARN": ARN,
        "P_EXTERNAL_ID": "tenant-7",
        "P_SESSION_SECONDS": "7200",
    }
    role = load_role(env, "P_")
    assert role == Role(ARN, "tenant-7", 7200) and role.setting == "P_ROLE_ARN"
    assert role.account == "210987654321" and role.external_id_setting == "P_EXTERNAL_ID"
    assert "tenant-7" not in repr(role)
    assert load_role(ENV, "P_") is None


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"P_ROLE_ARN": "arn:aws:iam::1234:role/x"}, "P_ROLE_ARN"),
        ({"P_ROLE_ARN": "arn:aws:iam::123456789012:user/x"}, "P_ROLE_ARN"),
        ({"P_EXTERNAL_ID": "abc"}, "P_EXTERNAL_ID"),
        ({"P_ROLE_ARN": ARN, "P_EXTERNAL_ID": "bad id!"}, "P_EXTERNAL_ID"),
        ({"P_ROLE_ARN": ARN, "P_SESSION_SECONDS": "899"}, "P_SESSION_SECONDS"),
        ({"P_ROLE_ARN": ARN, "P_SESSION_SECONDS": "43201"}, "P_SESSION_SECONDS"),
        ({"P_ROLE_ARN": ARN, "AWS_REGION": ""}, "AWS_REGION"),
    ],
)
def test_role_setting_mistakes_are_config_errors(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_role({**ENV, **env}, "P_")
    assert info.value.variable == variable


def test_the_shortest_session_outlives_a_token_and_leaves_room_to_renew() -> None:
    assert shortest_session(900) == 1500
    assert shortest_session(3600) == 4200
