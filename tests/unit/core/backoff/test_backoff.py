"""Decorrelated-jitter backoff and the message that ends a login's retries.

The retry loop itself is the ManagedConnection's (tests/unit/sql/limits/test_limits.py).
"""

from __future__ import annotations

import random

import pytest

from iamdb._core.backoff import DecorrelatedJitter, final_error
from iamdb._sql.refusals import THROTTLING_HINT
from iamdb.errors import AuthError, ConnectError, ThrottleError, TooManyConnectionsError


def test_each_delay_is_drawn_between_base_and_three_times_the_previous() -> None:
    draws: list[tuple[float, float]] = []

    def highest(low: float, high: float) -> float:
        draws.append((low, high))
        return high

    backoff = DecorrelatedJitter(0.1, 2.0, uniform=highest)
    delays = [backoff.next_delay() for _ in range(5)]
    assert delays == pytest.approx([0.3, 0.9, 2.0, 2.0, 2.0])  # capped at 2
    assert [low for low, _ in draws] == pytest.approx([0.1] * 5)
    assert [high for _, high in draws] == pytest.approx([0.3, 0.9, 2.7, 6.0, 6.0])


def test_delays_stay_within_base_and_cap() -> None:
    rng = random.Random(7)
    backoff = DecorrelatedJitter(0.05, 1.0, uniform=rng.uniform)
    delays = [backoff.next_delay() for _ in range(1000)]
    assert min(delays) >= 0.05 and max(delays) <= 1.0
    below_cap = [d for d in delays if d < 1.0]
    assert len(set(below_cap)) == len(below_cap) > 100  # jitter: no two retries in lockstep


def test_rejects_a_base_above_the_cap() -> None:
    with pytest.raises(ValueError):
        DecorrelatedJitter(3.0, 2.0)


def test_the_final_refusal_says_how_many_attempts_and_how_to_spot_throttling() -> None:
    refusal = "pg: the server refused the IAM login of user 'app'."
    final = final_error(AuthError(refusal), 4, 2.34, THROTTLING_HINT)
    message = str(final)
    assert type(final) is AuthError and message.startswith(refusal)
    assert "4 attempts over 2.34 s" in message
    assert "throttling is one possible cause" in message
    assert "IamDbAuthConnectionFailureThrottling" in message
    assert "(1 attempt over 0.00 s.)" in str(final_error(AuthError(refusal), 1, 0.0))


def test_a_connect_failure_states_the_real_time_spent() -> None:
    failure = "pg: could not connect to db:5432 as 'app': connection refused."
    final = final_error(ConnectError(failure), 5, 2.5)
    assert type(final) is ConnectError
    assert str(final) == f"{failure} (5 attempts over 2.50 s.)"


def test_a_refusal_for_the_rate_stays_a_throttle_error_with_its_own_hint() -> None:
    refusal = "dsql: the cluster refused a new connection: rate exceeded."
    final = final_error(ThrottleError(refusal), 2, 0.3, hint="")
    assert type(final) is ThrottleError
    assert str(final) == f"{refusal} (2 attempts over 0.30 s.)"


def test_the_final_refusal_keeps_where_the_login_went_and_counts_attempts() -> None:
    refusal = AuthError("refused", engine="pg", instance="pg:reporting", host="db", port=5432)
    final = final_error(refusal, 3, 1.5)
    assert type(final) is AuthError
    assert (final.engine, final.instance, final.host, final.port, final.attempts) == (
        "pg",
        "pg:reporting",
        "db",
        5432,
        3,
    )


def test_the_final_error_keeps_what_its_kind_carries() -> None:
    full = TooManyConnectionsError("no slot", sqlstate="08004", errno=1040, engine="mysql", port=1)
    final = final_error(full, 7, 2.0, hint="What the idle limit does.")
    assert type(final) is TooManyConnectionsError and final._transient
    assert (final.sqlstate, final.errno, final.engine, final.port, final.attempts) == (
        "08004", 1040, "mysql", 1, 7,
    )  # fmt: skip
    assert str(final) == "no slot (7 attempts over 2.00 s.) What the idle limit does."
