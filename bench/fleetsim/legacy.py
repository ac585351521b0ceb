"""FROZEN COPY of iamdb's fleet-limiter path at commit 02efbb6, for comparison. Not maintained.

iamdb's limiter at that commit (``layer/iamdb/_fleet.py``, ``_limiter.py``, ``_retry.py``) was
replaced; the fleet simulation measures the old one through this copy so that its rows stay
comparable.
The logic below is those modules' code at 02efbb6, unchanged: ``FleetLimiter``,
``TokenBucket``, ``ProcessLimiter``, ``Admission``, ``run_with_retries``,
``DecorrelatedJitter``. Only what ties them to the rest of iamdb was cut, so the copy stands
alone: the boto3 client is always passed in (no ``shared_client``, no boto3 import, no
redaction filter); the fail-open warning is dropped (still counted in ``fail_opens``); the
``SqlConfig`` and ``Probe`` arguments are the two small protocols below; docstrings are
shortened (the originals are in git). Do not fix bugs here: the point is to measure them.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from iamdb.errors import AuthError, ConfigError, ThrottleError

T = TypeVar("T")

PACE = 0.9
DEADLINE_MARGIN = 0.5
TTL_SECONDS = 300
LEAD = (0.05, 0.3)
LATE = 0.05
MAX_LEAD = 0.5
_NAMES = {"#c": "count", "#x": "expires_at"}
THROTTLING_HINT = (
    "IAM login throttling is one possible cause: RDS counts throttled IAM logins in the "
    "CloudWatch metric IamDbAuthConnectionFailureThrottling of the DB instance (non-zero at "
    "that time means throttling: lower IAMDB_CONNECT_RATE or set IAMDB_THROTTLE_TABLE; zero "
    "means look at the other causes)."
)


class Target(Protocol):
    """What Admission read from ``SqlConfig``."""

    @property
    def signing_host(self) -> str: ...
    @property
    def signing_port(self) -> int: ...
    @property
    def connect_timeout(self) -> float: ...


class Probe(Protocol):
    def count(self, metric: str, value: float = 1.0) -> None: ...


def paced_rate(rate: float) -> float:
    return rate * PACE


class FleetLimiter:
    """Fleet-wide pacing of new IAM logins through one DynamoDB table (02efbb6)."""

    def __init__(
        self,
        table: str,
        *,
        client: Any,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        uniform: Callable[[float, float], float] = random.uniform,
        cooldown_seconds: float = 30.0,
    ) -> None:
        self.table = table
        self._clock = clock
        self._sleep = sleep
        self._uniform = uniform
        self._client = client
        self._cooldown = cooldown_seconds
        self._skip_until = 0.0
        self.fail_opens = 0
        self.full_windows = 0
        self.late_slots = 0
        self._latency = 0.0

    def acquire(self, endpoint: str, rate: float, deadline: float = math.inf) -> float | None:
        now = self._clock()
        if now < self._skip_until:
            self.fail_opens += 1
            return None
        slots = max(1, math.floor(paced_rate(rate)))
        spacing = 1.0 / slots
        window = math.floor(now)
        while True:
            first = max(0, math.ceil(round((now + self._latency - window) / spacing, 9)))
            if first >= slots:
                window, first = window + 1 + (first - slots) // slots, 0
                continue
            if window + first * spacing > deadline:
                raise _too_late(endpoint, rate, window + first * spacing - now)
            sent = self._clock()
            try:
                slot = self._reserve(endpoint, window, first, slots)
            except Exception as exc:
                self._fail_open(exc, now)
                return None
            now = self._clock()
            self._latency = min(max(0.0, now - sent), MAX_LEAD)
            if slot is not None:
                at = window + slot * spacing
                if now <= at + LATE:
                    return self._wait_for(endpoint, rate, at, deadline)
                self.late_slots += 1
                window = max(window, math.floor(now))
                continue
            self.full_windows += 1
            window += 1
            self._pause_before(window, spacing, deadline)
            now = self._clock()

    def _pause_before(self, window: int, spacing: float, deadline: float) -> None:
        now = self._clock()
        target = window - self._uniform(*LEAD)
        pause = target - now if now < target else self._uniform(0.0, spacing)
        pause = min(pause, deadline - now)
        if pause > 0:
            self._sleep(pause)

    def _wait_for(self, endpoint: str, rate: float, at: float, deadline: float) -> float:
        if at > deadline:
            raise _too_late(endpoint, rate, at - self._clock())
        wait = at - self._clock()
        if wait > 0:
            self._sleep(wait)
        return at

    def _reserve(self, endpoint: str, window: int, first: int, slots: int) -> int | None:
        client = self._client
        key = {"pk": {"S": f"{endpoint}#{window}"}}
        expires = {"N": str(window + TTL_SECONDS)}
        try:
            out = client.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression="SET #c = if_not_exists(#c, :first) + :one, #x = :exp",
                ConditionExpression="attribute_not_exists(#c) OR (#c >= :first AND #c < :slots)",
                ExpressionAttributeNames=_NAMES,
                ExpressionAttributeValues={
                    ":first": {"N": str(first)},
                    ":one": {"N": "1"},
                    ":slots": {"N": str(slots)},
                    ":exp": expires,
                },
                ReturnValues="UPDATED_NEW",
            )
            return int(out["Attributes"]["count"]["N"]) - 1
        except Exception as exc:
            if not _condition_failed(exc):
                raise
        if first == 0:
            return None
        try:
            client.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression="SET #c = :next, #x = :exp",
                ConditionExpression="#c < :first",
                ExpressionAttributeNames=_NAMES,
                ExpressionAttributeValues={
                    ":first": {"N": str(first)},
                    ":next": {"N": str(first + 1)},
                    ":exp": expires,
                },
            )
            return first
        except Exception as exc:
            if not _condition_failed(exc):
                raise
        return None

    def _fail_open(self, exc: Exception, now: float) -> None:
        self.fail_opens += 1
        self._skip_until = now + self._cooldown


def _too_late(endpoint: str, rate: float, wait: float) -> ThrottleError:
    return ThrottleError(
        f"no fleet-wide permit for a new IAM login to {endpoint} before the deadline: the next "
        f"free slot is {wait:.2f} s away at {rate:g} logins/s for the whole fleet"
    )


def _error_code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def _condition_failed(exc: Exception) -> bool:
    return _error_code(exc) == "ConditionalCheckFailedException"


class TokenBucket:
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

    def bucket(self, endpoint: str) -> TokenBucket:
        with self._lock:
            found = self._buckets.get(endpoint)
            if found is None:
                found = TokenBucket(paced_rate(self.rate), self.burst, clock=self._clock)
                self._buckets[endpoint] = found
            return found

    def acquire(self, endpoint: str, deadline: float = math.inf) -> float:
        ready = self.bucket(endpoint).reserve(deadline)
        wait = ready - self._clock()
        if wait > 0:
            self.waited += wait
            self._sleep(wait)
            return wait
        return 0.0


class DecorrelatedJitter:
    def __init__(
        self,
        base: float = 0.1,
        cap: float = 2.0,
        *,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if not 0 < base <= cap:
            raise ValueError(f"expected 0 < base <= cap, got base={base}, cap={cap}")
        self.base = base
        self.cap = cap
        self._uniform = uniform
        self._previous = base

    def next_delay(self) -> float:
        delay = min(self.cap, max(self.base, self._uniform(self.base, self._previous * 3)))
        self._previous = delay
        return delay


def run_with_retries(
    attempt: Callable[[], T],
    *,
    retries: int,
    deadline: float,
    backoff: DecorrelatedJitter,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    started = clock()
    tries = 0
    while True:
        tries += 1
        try:
            return attempt()
        except AuthError as exc:
            delay = backoff.next_delay()
            if tries > retries or clock() + delay > deadline:
                raise _final(exc, tries, clock() - started) from exc
        sleep(delay)


def _final(exc: AuthError, tries: int, elapsed: float) -> AuthError:
    attempts = "1 attempt" if tries == 1 else f"{tries} attempts over {elapsed:.1f} s"
    return AuthError(f"{str(exc).rstrip()} ({attempts}.) {THROTTLING_HINT}")


class Admission:
    """Deadline, permits (process, then fleet) and bounded retry of one new login (02efbb6)."""

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

    def deadline(self, cfg: Target) -> float:
        now = self._clock()
        remaining = self._remaining_ms()
        if remaining is not None:
            left = float(remaining()) / 1000.0
            if left > 0:
                return now + max(0.0, left - DEADLINE_MARGIN)
        return now + self._bound_factor * cfg.connect_timeout

    def permit(self, cfg: Target, deadline: float, probe: Probe) -> None:
        start = self._clock()
        endpoint = f"{cfg.signing_host.lower()}:{cfg.signing_port}"
        self.limiter.acquire(endpoint, deadline)
        failed_open = False
        if self.fleet is not None:
            failed_open = self.fleet.acquire(endpoint, self.limiter.rate, deadline) is None
        probe.count("ThrottleWaitMs", 1000.0 * max(0.0, self._clock() - start))
        if failed_open:
            probe.count("LimiterFailOpen")

    def login(self, cfg: Target, attempt: Callable[[Callable[[], None]], T], probe: Probe) -> T:
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
