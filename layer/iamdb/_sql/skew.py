"""This process's clock against DynamoDB's: the fleet queue's clock check.

The fleet's ticket queue (:mod:`iamdb._sql.fleet`) holds instants that every environment reads and
writes on its own clock; an environment whose clock is wrong would write the queue in its own
wrong future or past. Every DynamoDB answer carries an HTTP ``Date`` (whole seconds), stamped
by the server between the request's send and its answer's receipt. For a request sent at ``s``
and answered at ``r`` (this process's clock) with ``Date`` ``D``, this clock's error ``e``
(this clock minus DynamoDB's) lies in ``(s - D - 1, r - D]``: one second wide plus the round
trip. :class:`ClockCheck` intersects these intervals over every answer (their sub-second
phases differ, so it narrows); an interval disjoint from the last one means the clock was
stepped (NTP), and the check starts again from the new one.

The error is *proven* beyond :data:`SKEW_SECONDS` when the whole interval lies beyond it. Only
then does the limiter use a corrected clock (this clock minus the interval's midpoint: within
half the interval's width of DynamoDB's, 0.5 s plus half a round trip after one answer), and
the process logs one warning. Below that the clock is trusted: Lambda's hosts keep theirs
within a millisecond or so through Amazon Time Sync; the check is for broken clocks.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from iamdb._core.log import WarnOnce

SKEW_SECONDS = 1.0
"""Clock error tolerated unproven: beyond it, once the ``Date`` of DynamoDB's answers proves it,
the fleet limiter goes by DynamoDB's time and other environments treat what this process wrote
before it knew as written from the future."""


class ClockCheck:
    """What the ``Date`` of DynamoDB's answers says about this process's clock. Thread-safe."""

    def __init__(self, clock: Callable[[], float], warn_once: WarnOnce) -> None:
        self._clock = clock
        self._warn_once = warn_once
        self._lock = threading.Lock()
        self._low = -math.inf  # this clock minus DynamoDB's lies in (low, high]
        self._high = math.inf
        self._offset = 0.0  # subtracted from this clock: 0 unless the error is proven

    def observe(self, sent: float, received: float, server_time: float | None) -> None:
        """Learn from one answer: sent and received on this clock, ``Date`` in epoch seconds."""
        if server_time is None or not math.isfinite(server_time):
            return
        low, high = sent - server_time - 1.0, received - server_time
        with self._lock:
            if low >= self._high or high <= self._low:  # the clock was stepped: start again
                self._low, self._high = low, high
            else:
                self._low, self._high = max(self._low, low), min(self._high, high)
            proven = self._low > SKEW_SECONDS or self._high < -SKEW_SECONDS
            first = proven and self._offset == 0.0
            self._offset = (self._low + self._high) / 2 if proven else 0.0
            bounds = self._low, self._high
        if first:
            self._warn(*bounds)

    def _warn(self, low: float, high: float) -> None:
        ahead = low > 0
        self._warn_once(
            "clock-skew",
            "iamdb: this process's clock is %.1f to %.1f s %s DynamoDB's (the Date of its "
            "answers says so): the fleet limiter paces new IAM logins on DynamoDB's time "
            "instead. Fix the clock (NTP); AWS refuses requests signed more than 5 minutes off",
            low if ahead else -high,
            high if ahead else -low,
            "ahead of" if ahead else "behind",
        )

    def now(self) -> float:
        """DynamoDB's time as best known: this clock, corrected once its error is proven."""
        return self._clock() - self._offset

    def offset(self) -> float:
        """What :meth:`now` subtracts from this clock (seconds; 0 unless proven)."""
        return self._offset

    def earliest(self) -> float:
        """The earliest DynamoDB's time can be now, once the error is proven (this clock
        minus the most error it can have); until then this clock, trusted."""
        return self._clock() - (self._high if self._offset else 0.0)

    def latest(self) -> float:
        """The latest DynamoDB's time can be now: this clock minus the least error it can have
        (this clock itself until an answer tells)."""
        low = self._low
        return self._clock() - (low if math.isfinite(low) else 0.0)
