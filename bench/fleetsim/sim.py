"""Virtual time for the fleet simulation: real threads, one running at a time.

Each simulated Lambda environment runs iamdb's real (blocking, synchronous) code in a thread
of its own. A :class:`Sim` lets exactly one of those threads run at any moment: a thread runs
until it calls :meth:`Sim.sleep` (or ends), which hands the baton to the thread with the
earliest wake-up, moving the virtual clock to that instant. Nothing sleeps for real and no two
threads race, so a run is a pure function of its inputs (seeds included): same seed, same
output, every run. Ties (same instant) go in the order the wake-ups were scheduled.

:class:`RollingSecond` is the one counter of events per rolling second that the models share
(RDS's login throttle, DynamoDB's per-item capacity, and their statistics).
"""

from __future__ import annotations

import _thread
import heapq
import threading
from collections import deque
from collections.abc import Callable

EPOCH = 1_800_000_000.0
"""Where virtual time starts: epoch-like seconds (year 2027), so epoch arithmetic (one-second
windows, TTLs, token dates) works as it does on a real clock."""

_STACK_BYTES = 1 << 20  # 1 MiB per simulated thread: thousands of them stay cheap
_Entry = tuple[float, int, "_thread.LockType | None", "Callable[[], None] | None"]


class SimError(RuntimeError):
    """A simulated thread raised: the run is not trustworthy (the first error is the cause)."""


class Sim:
    """A virtual clock and the scheduler of the simulated threads.

    Use: :meth:`spawn` functions at instants, then :meth:`run` (from an ordinary thread) until
    every one of them has returned. Inside a spawned function, :meth:`now` and :meth:`sleep`
    replace ``time.time`` and ``time.sleep``.
    """

    def __init__(self, start: float = EPOCH) -> None:
        self._now = start
        # (instant, sequence, gate of a sleeping thread or None, function to start or None)
        self._queue: list[_Entry] = []
        self._seq = 0
        self._local = threading.local()
        self._idle = _thread.allocate_lock()  # released when nothing is left to run
        self._threads: list[threading.Thread] = []
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
        gate: _thread.LockType | None = getattr(self._local, "gate", None)
        if gate is None:
            raise RuntimeError("Sim.sleep() called outside a simulated thread")
        wake = self._now + seconds
        if not self._queue or wake < self._queue[0][0]:
            self._now = wake  # this thread is next anyway: no hand-over needed
            return
        self._push(wake, gate, None)
        self._hand_over()
        gate.acquire()  # until _hand_over() in another thread releases it

    def run(self) -> None:
        """Run every spawned thread to its end; raise SimError if one of them raised."""
        if not self._queue:
            return
        self._idle.acquire()
        previous = threading.stack_size(_STACK_BYTES)
        try:
            self._hand_over()
            self._idle.acquire()
        finally:
            threading.stack_size(previous)
            self._idle.release()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        if self._errors:
            first = self._errors[0]
            raise SimError(f"a simulated thread raised {type(first).__name__}: {first}") from first

    def _push(
        self,
        at: float,
        gate: _thread.LockType | None,
        fn: Callable[[], None] | None,
    ) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, gate, fn))

    def _hand_over(self) -> None:
        """Wake the earliest waiting thread (or start the earliest spawned function)."""
        if not self._queue:
            self._idle.release()
            return
        at, _, gate, fn = heapq.heappop(self._queue)
        self._now = at
        if gate is not None:
            gate.release()
            return
        assert fn is not None
        thread = threading.Thread(target=self._body, args=(fn,), daemon=True)
        self._threads.append(thread)
        thread.start()

    def _body(self, fn: Callable[[], None]) -> None:
        gate = _thread.allocate_lock()
        gate.acquire()
        self._local.gate = gate
        try:
            fn()
        except BaseException as exc:  # reported by run(); the other threads go on
            self._errors.append(exc)
        finally:
            self._hand_over()


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
