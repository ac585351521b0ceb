"""Decorrelated-jitter backoff and the bounded retry of refused logins, with fake time."""

from __future__ import annotations

import random

import pytest

from iamdb.errors import AuthError, ConnectError, ThrottleError
from iamdb.retry import DecorrelatedJitter, run_with_retries
from tests.fakes import FakeTime


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


def run(attempt: object, t: FakeTime, *, retries: int = 3, deadline: float = 1e12) -> object:
    backoff = DecorrelatedJitter(0.1, 2.0, uniform=lambda low, high: high)
    return run_with_retries(
        attempt,  # type: ignore[arg-type]
        retries=retries,
        deadline=deadline,
        backoff=backoff,
        clock=t.clock,
        sleep=t.sleep,
    )


class Refusals:
    """An attempt that is refused ``times`` times, then succeeds."""

    def __init__(self, times: int) -> None:
        self.times = times
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.times:
            raise AuthError("pg: the server refused the IAM login of user 'app'.")
        return "connection"


def test_success_needs_no_sleep() -> None:
    t = FakeTime()
    assert run(Refusals(0), t) == "connection"
    assert t.sleeps == []


def test_refusals_are_retried_with_backoff() -> None:
    t, attempt = FakeTime(), Refusals(2)
    assert run(attempt, t) == "connection"
    assert attempt.calls == 3
    assert t.sleeps == pytest.approx([0.3, 0.9])


def test_gives_up_after_the_configured_retries_and_says_how_to_spot_throttling() -> None:
    t, attempt = FakeTime(), Refusals(99)
    with pytest.raises(AuthError) as caught:
        run(attempt, t, retries=3)
    assert attempt.calls == 4 and len(t.sleeps) == 3
    message = str(caught.value)
    assert "4 attempts" in message
    assert "throttling is one possible cause" in message
    assert "IamDbAuthConnectionFailureThrottling" in message
    assert "refused the IAM login of user 'app'" in message


def test_zero_retries_means_one_attempt_with_the_same_hint() -> None:
    t, attempt = FakeTime(), Refusals(99)
    with pytest.raises(AuthError, match="IamDbAuthConnectionFailureThrottling") as caught:
        run(attempt, t, retries=0)
    assert attempt.calls == 1 and t.sleeps == []
    assert "1 attempt" in str(caught.value)


def test_never_sleeps_past_the_deadline() -> None:
    t, attempt = FakeTime(), Refusals(99)
    # Backoff 0.3 then 0.9: the second retry would end after the deadline, so it never starts.
    with pytest.raises(AuthError, match="2 attempts"):
        run(attempt, t, retries=5, deadline=t.now + 1.0)
    assert attempt.calls == 2
    assert t.sleeps == pytest.approx([0.3])


@pytest.mark.parametrize("error", [ConnectError("timeout"), ThrottleError("no permit")])
def test_other_errors_are_not_retried(error: Exception) -> None:
    t = FakeTime()
    calls = []

    def attempt() -> None:
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        run(attempt, t)
    assert len(calls) == 1 and t.sleeps == []
