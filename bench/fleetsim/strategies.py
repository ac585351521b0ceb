"""The strategies the fleet bench compares (see :mod:`bench.fleetsim.strategy` for the contract).

- ``legacy``: the limiter of commit 02efbb6, through its frozen copy
  (:mod:`bench.fleetsim.legacy`);
- ``ticket``: today's login path and ticket queue (``iamdb._managed``, ``iamdb._fleet``).

A new limiter joins by registering its own ``environment(ctx)`` here with ``@strategy(name)``.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.fleetsim import legacy
from bench.fleetsim.dynamodb import Boto3Client, DynamoError
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


# -- ticket: today's limiter ---------------------------------------------------------------


class _SimAws:
    """iamdb's AWS client as the fleet limiter uses it, over the model (no HTTP): model
    errors become :class:`iamdb._aws.AwsError`, as the wire's decoder makes them."""

    def __init__(self, ctx: Ctx) -> None:
        self._ctx = ctx

    def warm(self, service: str, deadline: float) -> None:
        pass  # the model has no connection to open

    def dynamodb(self, operation: str, payload: dict[str, Any], deadline: float) -> Any:
        from iamdb._aws import AwsError

        try:
            return self._ctx.dynamodb.call(operation, payload)
        except DynamoError as exc:
            raise AwsError(
                "dynamodb", exc.code, exc.message, status=exc.status, item=exc.item
            ) from None

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
    """The Driver of :class:`iamdb._managed.ManagedConnection`, logging in to the RDS model."""

    engine = "pg"

    def __init__(self, ctx: Ctx) -> None:
        self._ctx = ctx

    def connect(self, cfg: object, token: Any) -> _Login:
        return _Login(self._ctx.rds.connect(token.value, self._ctx.rng))

    def fileno(self, conn: _Login) -> int:
        return _Login._pair[0].fileno()

    def is_closed(self, conn: _Login) -> bool:
        return False

    def ping(self, conn: _Login) -> None:
        pass

    def close(self, conn: _Login) -> None:
        pass


@strategy("ticket")
def ticket_environment(ctx: Ctx) -> Outcome:
    """One cold environment's first ``get_pg()`` through today's login path.

    The real login loop (``iamdb._login.Login``), ``Limits`` (the per-process bucket, then the
    fleet's ticket queue ``FleetLimiter``), ``TokenCache``, ``Deadline`` from the Lambda
    context and the default retries, on a Runtime of virtual time and the environment's RNG;
    DynamoDB is the model (through :class:`_SimAws`), the database the RDS model.
    """
    from iamdb._config import load_sql_config
    from iamdb._credentials import CredentialResolver
    from iamdb._fleet import FleetLimiter
    from iamdb._limiter import Deadline, Limits
    from iamdb._log import WarnOnce
    from iamdb._login import Login
    from iamdb._runtime import Runtime
    from iamdb._tokens import TokenCache

    env = {
        "IAMDB_PG_HOST": ctx.host,
        "IAMDB_PG_PORT": str(ctx.port),
        "IAMDB_PG_USER": ctx.user,
        "IAMDB_PG_REGION": ctx.region,
        "AWS_ACCESS_KEY_ID": ctx.credentials.access_key,
        "AWS_SECRET_ACCESS_KEY": ctx.credentials.secret_key,
        "AWS_SESSION_TOKEN": ctx.credentials.token or "",
    }
    rt = Runtime(environ=env, clock=ctx.now, sleep=ctx.sleep, random=ctx.rng.random)
    fleet = FleetLimiter(ctx.table, _SimAws(ctx), rt, WarnOnce())  # type: ignore[arg-type]
    deadline = Deadline(ctx.now)
    deadline.set_context(ctx.context.get_remaining_time_in_millis)
    probe = _Probe()
    login = Login(
        load_sql_config("pg", None, env),
        _RdsDriver(ctx),
        TokenCache(resolver=CredentialResolver(Runtime(environ=env)), clock=ctx.now),
        runtime=rt,
        limits=Limits(ctx.rate, fleet, rt),
        deadline=deadline,
        retries=AUTH_RETRIES,
        probe=probe,  # type: ignore[arg-type]
    )
    try:
        answer = login.connect()
    except IamDbError as exc:
        return Outcome.failure(ctx, exc, fail_opens=probe.fail_opens)
    return Outcome.success(ctx, answer.at, fail_opens=probe.fail_opens)
