"""The strategies the fleet bench compares (see :mod:`bench.fleetsim.strategy` for the contract).

- ``legacy``: today's limiter, through the frozen copy of commit 02efbb6
  (:mod:`bench.fleetsim.legacy`).

A new limiter joins by registering its own ``environment(ctx)`` here with ``@strategy(name)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.fleetsim import legacy
from bench.fleetsim.dynamodb import Boto3Client
from bench.fleetsim.strategy import Ctx, Outcome, strategy
from iamdb.errors import IamDbError

CONNECT_TIMEOUT = 5  # IAMDB_PG_CONNECT_TIMEOUT's default
AUTH_RETRIES = 3  # IAMDB_AUTH_RETRIES's default


@dataclass(frozen=True)
class _Target:
    """The part of ``SqlConfig`` the legacy Admission reads."""

    signing_host: str
    signing_port: int
    connect_timeout: float = CONNECT_TIMEOUT


class _NoMetrics:
    """The probe Admission reports to: the bench reads the limiter's own counters instead."""

    def count(self, metric: str, value: float = 1.0) -> None:
        pass


@strategy("legacy")
def legacy_environment(ctx: Ctx) -> Outcome:
    """One cold environment's first login through the 02efbb6 path.

    As the registry built it then: a ProcessLimiter at ``ctx.rate``, a FleetLimiter on the
    table (the boto3 client being the model, already created), ``Admission`` with the default
    retries and the Lambda context's remaining time, and ``ManagedConnection._login`` as the
    attempt: sign a token, take the permits (a cold environment's token, and the one re-signed
    after a refusal, is always new to the server), connect.
    """
    fleet = legacy.FleetLimiter(
        ctx.table,
        client=Boto3Client(ctx.dynamodb),
        clock=ctx.now,
        sleep=ctx.sleep,
        uniform=ctx.rng.uniform,
    )
    admission = legacy.Admission(
        legacy.ProcessLimiter(ctx.rate, clock=ctx.now, sleep=ctx.sleep),
        fleet=fleet,
        retries=AUTH_RETRIES,
        remaining_ms=lambda: ctx.context.get_remaining_time_in_millis,
        clock=ctx.now,
        sleep=ctx.sleep,
        backoff=lambda: legacy.DecorrelatedJitter(uniform=ctx.rng.uniform),
    )

    def attempt(permit: Callable[[], None]) -> float:
        token = ctx.sign_token()
        permit()
        return ctx.rds.connect(token, ctx.rng)

    try:
        login_at = admission.login(_Target(ctx.host, ctx.port), attempt, _NoMetrics())
    except IamDbError as exc:
        return Outcome.failure(ctx, exc, fail_opens=fleet.fail_opens)
    return Outcome.success(ctx, login_at, fail_opens=fleet.fail_opens)
