"""Virtual time for the fleet simulation: simulated threads as greenlets, one running at a time.

Each simulated Lambda environment runs iamdb's real (blocking, synchronous) code in a greenlet
of its own. A :class:`Sim` runs exactly one of them at any moment: it runs until it calls
:meth:`Sim.sleep` (or ends), which switches to the one with the earliest wake-up, moving the
virtual clock to that instant. Nothing sleeps for real and nothing races, so a run is a pure
function of its inputs (seeds included): same seed, same output, every run. Ties (same instant)
go in the order the wake-ups were scheduled.

Greenlets rather than OS threads: a switch costs about a microsecond instead of tens (an OS
thread's wake-up), which is what bounds a run where hundreds of invocations wait for a slot and
try again every second or two. iamdb's locks are each held by one environment's objects, so no
greenlet ever blocks on a lock another one holds across a sleep.

:class:`RollingSecond` is the one counter of events per rolling second that the models share
(RDS's login throttle, DynamoDB's per-item capacity, and their statistics).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable

import greenlet

EPOCH = 1_800_000_000.0
"""Where virtual time starts: epoch-like seconds (year 2027), so epoch arithmetic (one-second
windows, TTLs, token dates) works as it does on a real clock."""

_Entry = tuple[float, int, "greenlet.greenlet | None", "Callable[[], None] | None"]


class SimError(RuntimeError):
    """A simulated thread raised: the run is not trustworthy (the first error is the cause)."""


class Sim:
    """A virtual clock and the scheduler of the simulated threads.

    Use: :meth:`spawn` functions at instants, then :meth:`run` until every one of them has
    returned. Inside a spawned function, :meth:`now` and :meth:`sleep` replace ``time.time``
    and ``time.sleep``.
    """

    def __init__(self, start: float = EPOCH) -> None:
        self._now = start
        # (instant, sequence, sleeping greenlet or None, function to start or None)
        self._queue: list[_Entry] = []
        self._seq = 0
        self._hub: greenlet.greenlet | None = None  # run()'s greenlet: it picks who runs next
        self._errors: list[BaseException] = []

    def now(self) -> float:
        """The virtual time, in epoch seconds."""
        return self._now

    def spawn(self, fn: Callable[[], None], at: float) -> None:
        """Start ``fn`` in a simulated thread of its own at virtual instant ``at``."""
        if at < self._now:
            raise ValueError(f"cannot start a thread in the past ({at} < {self._now})")
        self._push(at, None, fn)

    def sleep(self, seconds: float) -> None:
        """Block the calling simulated thread for ``seconds`` of virtual time."""
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        current = greenlet.getcurrent()
        if self._hub is None or current.parent is not self._hub:
            raise RuntimeError("Sim.sleep() called outside a simulated thread")
        wake = self._now + seconds
        if not self._queue or wake < self._queue[0][0]:
            self._now = wake  # this thread is next anyway: no switch needed
            return
        self._push(wake, current, None)
        self._hub.switch()  # back here when run() switches to this greenlet again

    def run(self) -> None:
        """Run every spawned thread to its end; raise SimError if one of them raised."""
        self._hub = greenlet.getcurrent()
        queue = self._queue
        try:
            while queue:
                at, _, sleeper, fn = heapq.heappop(queue)
                self._now = at
                if sleeper is None:
                    sleeper = greenlet.greenlet(self._body)
                    sleeper.switch(fn)
                else:
                    sleeper.switch()
        finally:
            self._hub = None
        if self._errors:
            first = self._errors[0]
            raise SimError(f"a simulated thread raised {type(first).__name__}: {first}") from first

    def _push(
        self,
        at: float,
        sleeper: greenlet.greenlet | None,
        fn: Callable[[], None] | None,
    ) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, sleeper, fn))

    def _body(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as exc:  # reported by run(); the others go on
            self._errors.append(exc)


class RollingSecond:
    """Instants of events, counted over the rolling second ``(t - 1, t]``.

    ``peak`` is the most events in any rolling second so far (it can only grow at an event).
    """

    def __init__(self) -> None:
        self._window: deque[float] = deque()
        self.total = 0
        self.peak = 0

    def count(self, now: float) -> int:
        """Events in ``(now - 1, now]``."""
        window = self._window
        while window and window[0] <= now - 1.0:
            window.popleft()
        return len(window)

    def add(self, now: float) -> None:
        """Record one event at ``now`` (instants must not decrease)."""
        self.count(now)
        self._window.append(now)
        self.total += 1
        self.peak = max(self.peak, len(self._window))
