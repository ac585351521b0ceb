"""iamdb's one backoff (decorrelated jitter), and the error that ends a run of attempts.

Refused SQL logins (a throttled IAM login looks like a bad password), transient connect
failures and throttled AWS calls all back off the same way; the last failure is reported
with how many attempts were made over how long.

Decorrelated jitter (each delay drawn between ``base`` and three times the previous one,
capped) spreads a fleet's retries out instead of synchronising them, as plain exponential
backoff does. The random source is injectable; nothing here sleeps or spins.
"""

from __future__ import annotations

from collections.abc import Callable

from iamdb._core.runtime import ENTROPY
from iamdb.errors import AuthError, ConnectError, ThrottleError


class DecorrelatedJitter:
    """Backoff delays: ``min(cap, uniform(base, 3 * previous))``, starting from ``base``."""

    def __init__(
        self,
        base: float = 0.1,
        cap: float = 2.0,
        *,
        uniform: Callable[[float, float], float] = ENTROPY.uniform,
    ) -> None:
        if not 0 < base <= cap:
            raise ValueError(f"expected 0 < base <= cap, got base={base}, cap={cap}")
        self.base = base
        self.cap = cap
        self._uniform = uniform
        self._previous = base

    def next_delay(self) -> float:
        """The next delay in seconds (always within ``[base, cap]``)."""
        delay = min(self.cap, max(self.base, self._uniform(self.base, self._previous * 3)))
        self._previous = delay
        return delay


def final_error(
    failure: AuthError | ThrottleError | ConnectError, tries: int, elapsed: float, hint: str = ""
) -> AuthError | ThrottleError | ConnectError:
    """The error that ends a login's attempts, of the last failure's kind and place: its message,
    how many attempts over how long (also as ``attempts``), and ``hint`` (for a refusal: how to
    tell RDS throttling from a misconfiguration, :data:`iamdb._sql.refusals.THROTTLING_HINT`)."""
    attempts = "1 attempt" if tries == 1 else f"{tries} attempts"
    final = type(failure)(
        f"{str(failure).rstrip()} ({attempts} over {elapsed:.2f} s.) {hint}".rstrip()
    )
    final.__dict__.update(vars(failure))  # where, and what a subclass carries (a SQLSTATE)
    final.attempts = tries
    return final
