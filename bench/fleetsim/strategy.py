"""The plug-in point of the fleet simulation: a strategy is one Lambda environment's life.

A strategy is a function ``environment(ctx: Ctx) -> Outcome``, registered by name with
:func:`strategy`. The simulation calls it once per environment, in a simulated thread of its
own, at the environment's arrival: the environment is cold and wants one new IAM login before
its invocation ends. It must drive iamdb's real code (not a re-implementation) with
``ctx.clock``/``ctx.sleep`` as its clock and sleep (``ctx.clock`` is the environment's own clock,
which may be off true time by ``ctx.offset``), ``ctx.dynamodb`` as DynamoDB and
``ctx.rds.connect`` as the driver's login, and return :meth:`Outcome.success` or
:meth:`Outcome.failure`. Any other exception is a bug and stops the run.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from bench.fleetsim.dynamodb import Client
from bench.fleetsim.rds import Rds
from bench.fleetsim.sim import Sim
from iamdb._aws.credentials import Credentials
from iamdb._aws.signer import generate_db_auth_token


class LambdaContext:
    """The Lambda context's stand-in: the remaining time follows virtual time."""

    def __init__(self, sim: Sim, deadline: float, aws_request_id: str | None = None) -> None:
        self._sim = sim
        self.deadline = deadline
        self.aws_request_id = aws_request_id  # marks where an invocation starts

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - self._sim.now()) * 1000))


@dataclass(frozen=True)
class Ctx:
    """What one environment gets: virtual time, its DynamoDB view, the RDS model, its identity."""

    sim: Sim
    dynamodb: Client
    """This environment's connection to the throttle table (counts its requests)."""
    rds: Rds
    env_id: int
    host: str
    """The RDS endpoint name tokens are signed for; the port is :attr:`port`."""
    port: int
    region: str
    user: str
    table: str
    rate: float
    """The instance's limit of new IAM logins per second (``IAMDB_CONNECT_RATE``)."""
    arrival: float
    deadline: float
    """When the invocation ends: arrival + the remaining time Lambda gave it."""
    context: LambdaContext
    rng: random.Random
    """This environment's randomness (seeded: same seed, same run)."""
    credentials: Credentials
    """This environment's own role session: its tokens never equal another's."""
    offset: float = 0.0
    """How far this environment's clock is ahead of true (DynamoDB's) time, in seconds."""
    invocations: int = 1
    """Invocations that each want a new IAM login, :data:`INVOCATION_GAP` apart (the first at
    :attr:`arrival`): later ones show whether an environment recovers from a bad first one."""

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def now(self) -> float:
        """True (virtual) time: what DynamoDB, RDS and Lambda's countdown go by."""
        return self.sim.now()

    def clock(self) -> float:
        """This environment's own clock: true time plus its :attr:`offset`."""
        return self.sim.now() + self.offset

    def sleep(self, seconds: float) -> None:
        self.sim.sleep(seconds)

    def sign_token(self) -> str:
        """A new RDS IAM token signed now (iamdb's signer) with this environment's credentials."""
        return generate_db_auth_token(
            self.host,
            self.port,
            self.user,
            self.region,
            credentials=self.credentials,
            now=datetime.fromtimestamp(self.now(), timezone.utc),
        )


@dataclass(frozen=True)
class Outcome:
    """How one environment ended."""

    served: bool
    login_at: float | None
    """The auth instant of its login (None when not served)."""
    error: str | None
    """Class name of the error it got (None when served)."""
    told_at: float
    """When its call returned: logged in, or told it cannot be served (its final error)."""
    fail_opens: int
    requests: int
    """DynamoDB requests it sent (all operations); ``writes`` of them were writes."""
    writes: int
    again: tuple[str, ...] = ()
    """How each later invocation (:attr:`Ctx.invocations`) ended: ``ok``, ``LambdaTimeout``
    (logged in after that invocation ended) or the error's class name."""

    @classmethod
    def success(cls, ctx: Ctx, login_at: float, *, fail_opens: int = 0) -> Outcome:
        return cls(
            True, login_at, None, ctx.now(), fail_opens, ctx.dynamodb.requests, ctx.dynamodb.writes
        )

    @classmethod
    def failure(cls, ctx: Ctx, error: BaseException, *, fail_opens: int = 0) -> Outcome:
        return cls(
            False,
            None,
            type(error).__name__,
            ctx.now(),
            fail_opens,
            ctx.dynamodb.requests,
            ctx.dynamodb.writes,
        )


INVOCATION_GAP = 2.0
"""Seconds between the starts of an environment's invocations (:attr:`Ctx.invocations`)."""


Strategy = Callable[[Ctx], Outcome]
STRATEGIES: dict[str, Strategy] = {}
"""Registered strategies by name (see :mod:`bench.fleetsim.strategies`)."""


def strategy(name: str) -> Callable[[Strategy], Strategy]:
    """Register the decorated function as the strategy ``name``."""

    def register(fn: Strategy) -> Strategy:
        if name in STRATEGIES:
            raise ValueError(f"strategy {name!r} is already registered")
        STRATEGIES[name] = fn
        return fn

    return register
