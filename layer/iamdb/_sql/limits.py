"""Pace new IAM logins below RDS's per-instance limit: the permits a login waits for.

RDS refuses new IAM logins beyond a rate per DB instance (``IAMDB_CONNECT_RATE``) with an
error the client cannot tell from a bad password. :class:`Limits` hands out the permits of a
new login: first from this process's :class:`TokenBucket` for the server (shared by
every engine and named instance, so reconnect storms inside one process never exceed the
rate), then, with ``IAMDB_THROTTLE_TABLE``, a ticket from the fleet-wide queue
(:mod:`iamdb._sql.fleet`). Both pace at :data:`~iamdb._sql.pace.PACE` (90 %) of the
configured rate.

Waiting is a reservation then a ``sleep``: a caller reserves the next free instant under
the lock, then sleeps outside it until that instant; callers are served in order and never
spin. A reservation that would end after the caller's deadline is not made:
:class:`~iamdb.errors.ThrottleError` is raised at once instead. Every sleep goes through the
login's :class:`~iamdb._sql.pace.Waits` (the deadline checked again after it).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from iamdb._sql.pace import Waits, paced_rate
from iamdb.errors import ConfigError, ThrottleError

if TYPE_CHECKING:
    from iamdb._aws.client import AwsClient
    from iamdb._core.log import WarnOnce
    from iamdb._core.runtime import Runtime
    from iamdb._core.settings import Settings
    from iamdb._core.telemetry import Probe
    from iamdb._sql.fleet import FleetLimiter, Ticket


class TokenBucket:
    """One permit every ``1 / rate`` seconds, at most one banked.

    ``clock`` returns seconds (any epoch, monotonic or not: a clock that goes back is
    treated as standing still). Thread-safe.
    """

    def __init__(self, rate: float, *, clock: Callable[[], float]) -> None:
        if not rate > 0:
            raise ConfigError("IAMDB_CONNECT_RATE", f"rate must be > 0, got {rate}")
        self.rate = rate
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = 1.0
        self._updated = clock()

    def reserve(self, deadline: float = math.inf) -> float:
        """Take one permit; return the instant (clock seconds) from which it may be used.

        The instant is now when a permit is banked, else when the bucket will have refilled
        for this caller (callers queue up in order). Raises ThrottleError, and takes
        nothing, when that instant is after ``deadline``.
        """
        with self._lock:
            now = self._clock()
            if now > self._updated:
                self._tokens = min(1.0, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
            wait = 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate
            ready = max(now, self._updated) + wait
            if ready > deadline:
                raise ThrottleError(
                    f"this process's own login pace: the next permit for a new IAM login is "
                    f"{ready - now:.3f} s away at {self.rate:g} logins/s, past the deadline; "
                    "none was taken. Keep connections across invocations, or raise "
                    "IAMDB_CONNECT_RATE if the instance admits more"
                )
            self._tokens -= 1
            return ready


class Limits:
    """The permits of new IAM logins: one :class:`TokenBucket` per database server (RDS
    ``host:port``, a DSQL cluster's endpoint name) shared by the whole process, then the
    fleet's ticket queue when set.

    Waiting is ``runtime.sleep``, never past the caller's deadline.
    """

    def __init__(self, rate: float, fleet: FleetLimiter | None, runtime: Runtime) -> None:
        self.rate = rate
        self.fleet = fleet
        self._rt = runtime
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, aws: Callable[[], AwsClient], runtime: Runtime, warn: WarnOnce
    ) -> Limits:
        """The limits ``settings`` ask for: ``IAMDB_CONNECT_RATE``, and the fleet's queue on
        ``aws()`` when ``IAMDB_THROTTLE_TABLE`` is set (its endpoint checked now: ConfigError
        before any call)."""
        fleet = None
        if settings.throttle_table:
            from iamdb._aws.client import resolve_endpoint
            from iamdb._sql.fleet import FleetLimiter

            resolve_endpoint("dynamodb", runtime.environ)
            fleet = FleetLimiter(settings.throttle_table, aws(), runtime, warn)
        return cls(settings.connect_rate, fleet, runtime)

    def permit(
        self, server: str, deadline: float, probe: Probe, *, rate: float | None = None
    ) -> Ticket | None:
        """Wait for the permits of one new login to ``server`` (an :attr:`Target.key
        <iamdb._sql.tokens.Target.key>`), whose server admits ``rate`` logins per second (None:
        this limiter's own rate, ``IAMDB_CONNECT_RATE``).

        Returns the fleet ticket to :meth:`release` after the login (None without one).
        Raises ThrottleError, without waiting, when no permit comes before ``deadline``, and
        when a wait ended past it (the process was suspended).
        """
        rate = self.rate if rate is None else rate
        waits = Waits(self._rt, server, deadline)
        ready = self._bucket(server, rate).reserve(deadline)
        wait = ready - self._rt.clock()
        if wait > 0:
            waits.sleep(wait, "this process's permit")
        ticket = None
        if self.fleet is not None:
            with probe.span("fleet ticket"):
                ticket = self.fleet.acquire(server, rate, waits)
            if ticket is None:
                probe.count("LimiterFailOpen")
        probe.count("ThrottleWaitMs", 1000.0 * waits.asked)
        return ticket

    def release(self, ticket: Ticket | None) -> None:
        """After a successful login: let the fleet queue know when it is idle again."""
        if ticket is not None and self.fleet is not None:
            self.fleet.release(ticket)

    def _bucket(self, server: str, rate: float) -> TokenBucket:
        with self._lock:
            found = self._buckets.get(server)
            if found is None:
                found = TokenBucket(paced_rate(rate), clock=self._rt.clock)
                self._buckets[server] = found
            return found
