"""Fakes for tests: time, a recording probe, runtimes.

Everything time-based in iamdb and devstack takes a clock (and sleep). ``FakeClock`` is epoch
seconds that move only when told to; ``FakeTime`` adds a ``sleep`` that records every wait
and, unless frozen, advances the clock by it. ``RecordingProbe`` records the metrics a
connection counts; ``runtime()`` builds an iamdb Runtime from these.
"""

from __future__ import annotations

import contextlib

from iamdb._runtime import Runtime
from iamdb._telemetry import Telemetry

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


class RecordingProbe:
    """Stands in for :class:`iamdb._telemetry.Probe`: records every count, opens no subsegment."""

    def __init__(self) -> None:
        self.counts: dict[str, float] = {}
        self.points: dict[str, list[float]] = {}

    def count(self, metric: str, value: float = 1.0) -> None:
        self.counts[metric] = self.counts.get(metric, 0.0) + value
        self.points.setdefault(metric, []).append(value)

    def flush(self) -> None:
        pass

    def span(self, what: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def __getitem__(self, metric: str) -> float:
        return self.counts.get(metric, 0.0)


def runtime(environ: dict[str, str], t: FakeTime | None = None, *, random: float = 1.0) -> Runtime:
    """A Runtime over ``environ`` with ``t``'s clock and sleep (random fixed at ``random``)."""
    if t is None:
        return Runtime(environ=environ, random=lambda: random)
    return Runtime(environ=environ, clock=t.clock, sleep=t.sleep, random=lambda: random)


class RecordingTelemetry(Telemetry):
    """Telemetry that keeps what each flush would print, for tests: ``totals()`` sums it."""

    def __init__(self) -> None:
        super().__init__("IamDbTests")
        self.emitted: list[tuple[dict[str, str], dict[str, list[float]]]] = []

    def emit(self, dimensions: dict[str, str], values: dict[str, list[float]]) -> None:
        self.emitted.append((dict(dimensions), values))

    def totals(self, engine: str | None = None) -> dict[str, float]:
        out: dict[str, float] = {}
        for dims, values in self.emitted:
            if engine is None or dims["engine"] == engine:
                for metric, points in values.items():
                    out[metric] = out.get(metric, 0.0) + sum(points)
        return out
