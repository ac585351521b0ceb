"""What iamdb takes from its surroundings, as one injectable object.

Every time-based decision (token age, permits, backoff, deadlines, credential expiry) reads
the clock and sleeps through one :class:`Runtime`, and every setting comes from its
``environ``: tests and the fleet simulation hand iamdb a runtime of their own instead of
patching modules.

The random source of backoff jitter is the operating system's (:data:`ENTROPY`), not the
``random`` module's state: Lambda SnapStart restores many environments from one snapshot, and
a state captured in it would make them all retry in lockstep (AWS's SnapStart uniqueness
guidance: generate entropy after restore). A draw costs about a microsecond, once per retry.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

ENTROPY = random.SystemRandom()
"""Random numbers from the operating system (``os.urandom``), the same after a SnapStart restore
in no two environments."""


@dataclass(frozen=True)
class Runtime:
    """Environment, clock (epoch seconds), sleep and random source (uniform in [0, 1))."""

    environ: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False)
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    random: Callable[[], float] = ENTROPY.random

    def uniform(self, low: float, high: float) -> float:
        """A random number in ``[low, high)``."""
        return low + (high - low) * self.random()


PROCESS = Runtime()
"""The real process: ``os.environ`` (read live), ``time.time``, ``time.sleep``, :data:`ENTROPY`."""
