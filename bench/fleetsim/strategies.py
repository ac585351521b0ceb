"""The strategies the fleet bench compares (see :mod:`bench.fleetsim.strategy` for the contract).

- ``legacy``: the limiter of commit 02efbb6, through its frozen copy
  (:mod:`bench.fleetsim.legacy`);
- ``main``: today's login path with the ticket queue and ``Limits`` of main f5b3399, before the
  clock-skew guard, through their frozen copy (:mod:`bench.fleetsim.baseline`);
- ``ticket``: today's login path and ticket queue (``iamdb._sql.login``, ``iamdb._sql.limits``,
  ``iamdb._sql.fleet``).

A new limiter joins by registering its own ``environment(ctx)`` here with ``@strategy(name)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.fleetsim import legacy
from bench.fleetsim.dynamodb import Boto3Client, DynamoError
from bench.fleetsim.strategy import INVOCATION_GAP, Ctx, LambdaContext, Outcome, strategy
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
        clock=ctx.clock,
        sleep=ctx.sleep,
        uniform=ctx.rng.uniform,
    )
    admission = legacy.Admission(
        legacy.ProcessLimiter(ctx.rate, clock=ctx.clock, sleep=ctx.sleep),
        fleet=fleet,
        retries=AUTH_RETRIES,
        remaining_ms=lambda: ctx.context.get_remaining_time_in_millis,
        clock=ctx.clock,
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


# -- ticket and main: the login path of today, with today's limiter or main's -------------


class _SimAws:
    """iamdb's AWS client as the fleet limiter uses it, over the model (no HTTP): answers are
    :class:`iamdb._aws.client.DynamoAnswer` and model errors :class:`iamdb._aws.client.AwsError`,
    both with the ``server_time`` their ``Date`` would carry (true virtual time, whole
    seconds)."""

    def __init__(self, ctx: Ctx) -> None:
        self._ctx = ctx

    def warm(self, service: str, deadline: float) -> None:
        pass  # the model has no connection to open

    def dynamodb(self, operation: str, payload: dict[str, Any], deadline: float) -> Any:
        from iamdb._aws.client import AwsError, DynamoAnswer

        client = self._ctx.dynamodb
        failure: DynamoError | None = None
        try:
            found = client.call(operation, payload)
        except DynamoError as exc:
            failure = exc
        if failure is not None:
            raise AwsError(
                "dynamodb",
                failure.code,
                failure.message,
                status=failure.status,
                item=failure.item,
                server_time=client.date,
            )
        answer = DynamoAnswer(found)
        answer.server_time = client.date
        return answer

    def dynamodb_send(self, operation: str, payload: dict[str, Any], deadline: float) -> None:
        def send() -> None:
            with contextlib.suppress(DynamoError):
                self._ctx.dynamodb.call(operation, payload)

        self._ctx.sim.spawn(send, self._ctx.now())


class _Probe:
    """Counts what the bench reads (fail-opens); no metrics, no subsegments."""

    def __init__(self) -> None:
        self.fail_opens = 0

    def count(self, metric: str, value: float = 1.0) -> None:
        self.fail_opens += metric == "LimiterFailOpen"

    def flush(self) -> None:
        pass

    def span(self, what: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


class _Login:
    """What the RDS model's login returns, as a 'connection' the ManagedConnection holds."""

    _pair = socket.socketpair()  # one idle socket for every environment's poll() to watch

    def __init__(self, at: float) -> None:
        self.at = at


class _RdsDriver:
    """The Driver of :class:`iamdb._sql.managed.ManagedConnection`, logging in to the RDS model."""

    engine = "pg"

    def __init__(self, ctx: Ctx) -> None:
        self._ctx = ctx

    def connect(self, cfg: object, token: Any, until: Any, **options: Any) -> _Login:
        return _Login(self._ctx.rds.connect(token.value, self._ctx.rng))

    def fileno(self, conn: _Login) -> int:
        return _Login._pair[0].fileno()

    def idle_limit(self, conn: _Login) -> int | None:
        return None

    def is_closed(self, conn: _Login) -> bool:
        return False

    def transaction(self, conn: _Login) -> str | None:
        return None

    def ping(self, conn: _Login, until: Any) -> str | None:
        return None

    def close(self, conn: _Login, wait: float = 0.0) -> bool:
        return True

    def read_only(self, conn: _Login, until: Any) -> str | None:
        return None  # the modelled cluster's writer stays where it is: no failover here

    def refused_write(self, conn: _Login) -> bool:
        return False


@strategy("ticket")
def ticket_environment(ctx: Ctx) -> Outcome:
    """One cold environment's ``get_pg()`` logins through today's login path and limiter.

    The real login loop (``iamdb._sql.login.Login``), ``Limits`` (the per-process bucket, then the
    fleet's ticket queue ``FleetLimiter``), ``TokenCache``, ``Deadline`` from the Lambda
    context and the default retries, on a Runtime of the environment's clock and RNG;
    DynamoDB is the model (through :class:`_SimAws`), the database the RDS model.
    """
    from iamdb._sql.fleet import FleetLimiter
    from iamdb._sql.limits import Limits

    return _environment(ctx, FleetLimiter, Limits)


@strategy("main")
def main_environment(ctx: Ctx) -> Outcome:
    """As ``ticket``, with the fleet limiter and ``Limits`` of main f5b3399 (the baseline)."""
    from bench.fleetsim import baseline

    return _environment(ctx, baseline.FleetLimiter, baseline.Limits)


def _environment(ctx: Ctx, fleet_type: Any, limits_type: Any) -> Outcome:
    from iamdb._aws.chain import CredentialResolver
    from iamdb._aws.tokens import TokenCache
    from iamdb._core.invocation import Deadline
    from iamdb._core.log import WarnOnce
    from iamdb._core.runtime import Runtime
    from iamdb._sql.config import load_sql_config
    from iamdb._sql.login import Login

    env = {
        "IAMDB_PG_HOST": ctx.host,
        "IAMDB_PG_PORT": str(ctx.port),
        "IAMDB_PG_USER": ctx.user,
        "IAMDB_PG_REGION": ctx.region,
        "AWS_ACCESS_KEY_ID": ctx.credentials.access_key,
        "AWS_SECRET_ACCESS_KEY": ctx.credentials.secret_key,
        "AWS_SESSION_TOKEN": ctx.credentials.token or "",
    }
    rt = Runtime(environ=env, clock=ctx.clock, sleep=ctx.sleep, random=ctx.rng.random)
    fleet = fleet_type(ctx.table, _SimAws(ctx), rt, WarnOnce())
    deadline = Deadline(ctx.clock)
    deadline.set_context(ctx.context.get_remaining_time_in_millis)
    probe = _Probe()
    cfg = load_sql_config("pg", None, env)
    tokens = TokenCache(resolver=CredentialResolver(Runtime(environ=env)), clock=ctx.clock)
    login = Login(
        cfg,
        _RdsDriver(ctx),
        tokens,
        runtime=rt,
        limits=limits_type(ctx.rate, fleet, rt),
        deadline=deadline,
        retries=AUTH_RETRIES,
        probe=probe,  # type: ignore[arg-type]
    )
    try:
        answer = login.connect()
    except IamDbError as exc:
        outcome = Outcome.failure(ctx, exc, fail_opens=probe.fail_opens)
    else:
        outcome = Outcome.success(ctx, answer.at, fail_opens=probe.fail_opens)
    again = []
    for k in range(1, ctx.invocations):  # the same process, later invocations: new logins
        begins = ctx.arrival + k * INVOCATION_GAP
        if ctx.now() < begins:
            ctx.sleep(begins - ctx.now())
        context = LambdaContext(ctx.sim, ctx.now() + (ctx.deadline - ctx.arrival))
        deadline.set_context(context.get_remaining_time_in_millis)
        tokens.invalidate(cfg.target)  # a new token: a login the server counts
        try:
            answer = login.connect()
        except IamDbError as exc:
            again.append(type(exc).__name__)
        else:
            again.append("ok" if answer.at <= context.deadline else "LambdaTimeout")
    return dataclasses.replace(outcome, again=tuple(again)) if again else outcome
