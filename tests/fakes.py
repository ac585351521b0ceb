"""Fake time for tests: everything time-based in iamdb and devstack takes a clock (and sleep).

``FakeClock`` is epoch seconds that move only when told to; ``FakeTime`` adds a ``sleep``
that records every wait and, unless frozen, advances the clock by it.
"""

from __future__ import annotations

START = 1_700_000_000.0


class FakeClock:
    """A ``clock()`` callable: epoch seconds that move only when told to."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def clock(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeTime(FakeClock):
    """``clock`` plus a ``sleep`` that records each wait (and advances unless ``frozen``)."""

    def __init__(self, now: float = START, *, frozen: bool = False) -> None:
        super().__init__(now)
        self.frozen = frozen
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        assert seconds > 0, "never asked to sleep for nothing"
        self.sleeps.append(seconds)
        if not self.frozen:
            self.now += seconds
