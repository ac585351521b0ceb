"""Pace new IAM logins below RDS's per-instance limit, within one process.

RDS refuses new IAM logins beyond a rate per DB instance (``IAMDB_CONNECT_RATE``) with an
error the client cannot tell from a bad password. Every engine and named instance of a
process that signs for the same endpoint shares one :class:`TokenBucket` (through the
:class:`ProcessLimiter` of the registry), so reconnect storms inside one process never
exceed it. Across processes the fleet limiter (:mod:`iamdb.fleet`) does the same job.

Both pace at :data:`PACE` (90 %) of the configured rate: a permit is taken a few
milliseconds before the server counts the login (TCP, TLS, the login packet), and that
delay varies, so logins spaced at exactly the limit could arrive closer together.

Waiting is a reservation then a ``sleep``: a caller reserves the next free instant under
the lock, then sleeps outside it until that instant; callers are served in order and never
spin. A reservation that would end after the caller's deadline is not made:
:class:`~iamdb.errors.ThrottleError` is raised at once instead.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from iamdb.errors import ConfigError, ThrottleError
from iamdb.retry import DecorrelatedJitter, run_with_retries

if TYPE_CHECKING:
    from iamdb.config import SqlConfig
    from iamdb.fleet import FleetLimiter
    from iamdb.telemetry import Probe

T = TypeVar("T")

PACE = 0.9
"""Fraction of the configured rate iamdb actually uses (headroom for network jitter)."""

DEADLINE_MARGIN = 0.5
"""Seconds before the invocation's end at which iamdb stops waiting for permits."""


def paced_rate(rate: float) -> float:
    """The rate iamdb paces at for a configured limit of ``rate`` logins per second."""
    return rate * PACE


class TokenBucket:
    """A token bucket: ``rate`` permits per second, at most ``burst`` at once.

    ``clock`` returns seconds (any epoch, monotonic or not: a clock that goes back is
    treated as standing still). Thread-safe.
    """

    def __init__(self, rate: float, burst: float = 1.0, *, clock: Callable[[], float]) -> None:
        if not rate > 0 or not burst >= 1:
            raise ConfigError("IAMDB_CONNECT_RATE", f"rate must be > 0 and burst >= 1, got {rate}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = burst
        self._updated = clock()

    def reserve(self, deadline: float = math.inf) -> float:
        """Take one permit; return the instant (clock seconds) from which it may be used.

        The instant is now when a token is available, else when the bucket will have
        refilled for this caller (callers queue up in order). Raises ThrottleError, and
        takes nothing, when that instant is after ``deadline``.
        """
        with self._lock:
            now = self._clock()
            if now > self._updated:
                self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
            wait = 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate
            ready = max(now, self._updated) + wait
            if ready > deadline:
                raise ThrottleError(
                    f"no permit for a new IAM login before the deadline: the next one is "
                    f"{ready - now:.3f} s away at {self.rate:g} logins/s"
                )
            self._tokens -= 1
            return ready


class ProcessLimiter:
    """One :class:`TokenBucket` per signing endpoint (``host:port``), shared process-wide.

    ``sleep`` is how waiting happens (injectable for tests); it is never called with a
    non-positive duration.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        burst: float = 1.0,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}
        self.waited = 0.0
        """Total seconds callers were made to wait (metrics, tests)."""

    def bucket(self, endpoint: str) -> TokenBucket:
        """The bucket of ``endpoint``, created on first use."""
        with self._lock:
            found = self._buckets.get(endpoint)
            if found is None:
                found = TokenBucket(paced_rate(self.rate), self.burst, clock=self._clock)
                self._buckets[endpoint] = found
            return found

    def acquire(self, endpoint: str, deadline: float = math.inf) -> float:
        """Wait for a permit to log in to ``endpoint``; return the seconds waited.

        Raises ThrottleError, without waiting, when no permit is free before ``deadline``.
        """
        ready = self.bucket(endpoint).reserve(deadline)
        wait = ready - self._clock()
        if wait > 0:
            self.waited += wait
            self._sleep(wait)
            return wait
        return 0.0


class Admission:
    """Everything a new IAM login goes through: deadline, permits, bounded retry.

    Before each login attempt with a new token (the first and every retry) a permit is
    taken from the process limiter and, when ``fleet`` is set, from the fleet-wide
    limiter. A refused login (:class:`~iamdb.errors.AuthError`, which may be throttling)
    is retried up to ``retries`` times with decorrelated-jitter backoff, never past the
    deadline.

    The deadline is the invocation's end minus :data:`DEADLINE_MARGIN` when
    ``remaining_ms`` (a Lambda context's ``get_remaining_time_in_millis``) is known and
    positive, else ``bound_factor`` x the instance's connect timeout from now.
    """

    def __init__(
        self,
        limiter: ProcessLimiter,
        *,
        fleet: FleetLimiter | None = None,
        retries: int = 3,
        remaining_ms: Callable[[], Callable[[], float] | None] = lambda: None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        backoff: Callable[[], DecorrelatedJitter] = DecorrelatedJitter,
        bound_factor: float = 2.0,
    ) -> None:
        self.limiter = limiter
        self.fleet = fleet
        self.retries = retries
        self._remaining_ms = remaining_ms
        self._clock = clock
        self._sleep = sleep
        self._backoff = backoff
        self._bound_factor = bound_factor

    def deadline(self, cfg: SqlConfig) -> float:
        """Clock instant after which no permit is waited for and no retry is started."""
        now = self._clock()
        remaining = self._remaining_ms()
        if remaining is not None:
            left = float(remaining()) / 1000.0
            if left > 0:  # a context whose time is up belongs to a finished invocation
                return now + max(0.0, left - DEADLINE_MARGIN)
        return now + self._bound_factor * cfg.connect_timeout

    def permit(self, cfg: SqlConfig, deadline: float, probe: Probe) -> None:
        """Wait for the permits of one new login to ``cfg``'s signing endpoint."""
        start = self._clock()
        endpoint = f"{cfg.signing_host.lower()}:{cfg.signing_port}"
        self.limiter.acquire(endpoint, deadline)
        failed_open = False
        if self.fleet is not None:
            failed_open = self.fleet.acquire(endpoint, self.limiter.rate, deadline) is None
        probe.count("ThrottleWaitMs", 1000.0 * max(0.0, self._clock() - start))
        if failed_open:
            probe.count("LimiterFailOpen")

    def login(
        self,
        cfg: SqlConfig,
        attempt: Callable[[Callable[[], None]], T],
        probe: Probe,
    ) -> T:
        """Run ``attempt`` (one login), retrying refusals as configured.

        ``attempt`` receives the function that waits for this login's permits; it calls it
        unless the login reuses a token the server already accepted (those are not counted).
        ``probe`` counts the waits, retries and fleet fail-opens (metrics).
        """
        deadline = self.deadline(cfg)
        tries = 0

        def once() -> T:
            nonlocal tries
            tries += 1
            if tries > 1:
                probe.count("AuthRetries")
            return attempt(lambda: self.permit(cfg, deadline, probe))

        return run_with_retries(
            once,
            retries=self.retries,
            deadline=deadline,
            backoff=self._backoff(),
            clock=self._clock,
            sleep=self._sleep,
        )
