"""The clock check: what the ``Date`` of DynamoDB's answers proves about this process's clock.

``server`` is DynamoDB's time (whole seconds in the ``Date``, as HTTP carries it); the
process's clock is ``server + error``. Each answer is sent at one instant and received
``trip`` seconds later.
"""

from __future__ import annotations

import math

import pytest

from iamdb._sql.skew import SKEW_SECONDS, ClockCheck


class Clocks:
    """DynamoDB's time and a process clock ``error`` seconds off it; the warnings it got."""

    def __init__(self, error: float, server: float = 1_800_000_000.25) -> None:
        self.server, self.error = server, error
        self.warned: list[tuple[float, float]] = []
        self.check = ClockCheck(lambda: self.server + self.error, self._warn)  # type: ignore[arg-type]

    def _warn(self, key: str, message: str, low: float, high: float, side: str) -> None:
        """Stands in for WarnOnce (every call kept): the bounds, as this clock minus DynamoDB's."""
        self.warned.append((low, high) if side == "ahead of" else (-high, -low))

    def answer(self, trip: float = 0.01, at: float = 0.5) -> None:
        """One round trip, DynamoDB stamping its Date ``at`` (0-1) of the way through it."""
        sent = self.server + self.error
        stamped = math.floor(self.server + at * trip)
        self.server += trip
        self.check.observe(sent, self.server + self.error, stamped)

    def phase(self, fraction: float) -> None:
        """Move DynamoDB's time to ``fraction`` past its next whole second."""
        self.server = math.floor(self.server) + 1 + fraction


def test_before_any_answer_the_clock_is_trusted() -> None:
    c = Clocks(error=10.0)
    assert c.check.now() == c.server + 10 and c.check.latest() == c.server + 10
    c.check.observe(c.server, c.server, None)  # an answer without a Date says nothing
    assert c.check.offset() == 0.0 and not c.warned


def test_one_answer_bounds_the_error_to_a_second_and_the_trip() -> None:
    c = Clocks(error=0.0)
    c.answer(trip=0.02)
    assert c.check.offset() == 0.0 and not c.warned  # within the tolerance: trusted
    # The latest DynamoDB's time can be is at most a second and the trip ahead of it.
    assert c.server <= c.check.latest() <= c.server + 1.02


@pytest.mark.parametrize("error", [10.0, -10.0, 3600.0, -3600.0, 2.1, -2.1])
def test_an_error_beyond_the_tolerance_is_proven_by_one_answer_and_corrected(error: float) -> None:
    c = Clocks(error)
    c.answer()
    assert abs(c.check.now() - c.server) <= 0.5 + 0.01  # the midpoint of what it knows
    assert c.check.latest() >= c.server
    ((low, high),) = c.warned
    assert low < error <= high and high - low <= 1.01
    for _ in range(5):
        c.answer()
    assert len(c.warned) == 1  # one warning per process


@pytest.mark.parametrize("error", [0.0, 0.5, -0.5, 0.99, -0.99])
def test_an_error_within_the_tolerance_is_never_corrected(error: float) -> None:
    c = Clocks(error)
    for fraction in (0.0, 0.25, 0.5, 0.75, 0.9, 0.1):
        c.phase(fraction)
        c.answer()
    assert c.check.offset() == 0.0 and not c.warned


def test_answers_at_different_phases_narrow_the_interval() -> None:
    c = Clocks(error=1.4)
    c.phase(0.3)
    c.answer(trip=0.001)  # (0.7, 1.7]: not beyond the tolerance as a whole
    assert c.check.offset() == 0.0
    c.phase(0.65)
    c.answer(trip=0.001)  # (1.05, 2.05]: together (1.05, 1.7], beyond it
    assert 1.05 < c.check.offset() < 1.7 and len(c.warned) == 1
    assert abs(c.check.now() - c.server) < 0.35


def test_a_stepped_clock_starts_the_check_again() -> None:
    c = Clocks(error=10.0)
    c.answer()
    assert c.check.offset() > SKEW_SECONDS
    c.error = 0.0  # NTP stepped the clock right: the old interval is disjoint from the new
    c.answer()
    assert c.check.offset() == 0.0 and c.check.latest() <= c.server + 1.01
