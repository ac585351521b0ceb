"""Run one scenario with one strategy, and what a row of the bench reports about it.

A scenario is N cold environments of one function, all wanting their first IAM login to one RDS
instance limited to R new logins per second, arriving at one instant (``spread`` 0) or
uniformly at random over ``spread`` seconds, each with ``remaining`` seconds of invocation left
(the Lambda context's remaining time at arrival). Environment ``i`` of a scenario gets the same
arrival, credentials and random stream whatever the strategy, so strategies face the same fleet.
"""

from __future__ import annotations

import functools
import random
import statistics
import string
from collections import Counter
from dataclasses import dataclass

from bench.fleetsim import strategies  # noqa: F401  (registers the strategies)
from bench.fleetsim.dynamodb import Client, Table
from bench.fleetsim.rds import Rds
from bench.fleetsim.sim import EPOCH, Sim
from bench.fleetsim.strategy import STRATEGIES, Ctx, LambdaContext, Outcome, Strategy
from iamdb._aws.credentials import Credentials

HOST = "prod.cluster-c0ffee000000.us-east-1.rds.amazonaws.com"
PORT = 5432
REGION = "us-east-1"
USER = "app"
TABLE = "iamdb-throttle"
PACE = 0.9  # the optimum paces at 90 % of R, as iamdb does
DEADLINE_MARGIN = 0.5  # seconds before the invocation's end iamdb stops waiting for a permit


@dataclass(frozen=True)
class Scenario:
    n: int
    spread: float
    rate: float
    remaining: float
    offset: float = 0.0
    """Clock offset (seconds, + ahead) of one environment, the skewed one; 0: none."""
    skewed: float = 0.0
    """Where the skewed environment comes in arrival order (0 first, 0.5 halfway)."""
    corrupt: str = ""
    """The queue item found at the start: ``n`` or ``f`` a year ahead, ``s``: ``n`` a string."""

    @property
    def arrival(self) -> str:
        return "t=0" if not self.spread else f"over {self.spread:g} s"

    @property
    def fault(self) -> str:
        if self.corrupt:
            return {"n": "n a year ahead", "f": "f a year ahead", "s": "n a string"}[self.corrupt]
        if not self.offset:
            return "-"
        where = "first" if self.skewed == 0 else f"at {self.skewed:.0%} of arrivals"
        ahead = f"{abs(self.offset):g} s" if abs(self.offset) < 3600 else "1 h"
        return f"1 env {ahead} {'fast' if self.offset > 0 else 'slow'}, {where}"

    @property
    def name(self) -> str:
        name = f"N={self.n} {self.arrival} R={self.rate:g} D={self.remaining:g}s"
        return name if self.fault == "-" else f"{name} {self.fault}"


SCENARIOS = [
    *(Scenario(n, 0.0, r, d) for n in (60, 600, 3000) for r in (10, 200) for d in (10, 30)),
    *(Scenario(1000, 10.0, r, d) for r in (10, 200) for d in (10, 30)),
]

SKEWED_INVOCATIONS = 5
"""Invocations of the skewed environment (each a new login): does it recover?"""
YEAR_US = 365 * 86400 * 1_000_000


@dataclass(frozen=True)
class Env:
    arrival: float
    deadline: float  # when its invocation ends
    outcome: Outcome

    @property
    def served(self) -> bool:
        """Logged in before its invocation ended (a later login is a timed-out invocation)."""
        return self.outcome.served and (self.outcome.login_at or 0.0) <= self.deadline


@dataclass(frozen=True)
class Run:
    scenario: Scenario
    strategy: str
    start: float
    envs: list[Env]
    table: Table
    rds: Rds
    skewed: int | None = None
    """Index in :attr:`envs` of the environment whose clock is off (None: none is)."""


def simulate(scenario: Scenario, strategy: str, seed: int = 1) -> Run:
    """Run every environment of ``scenario`` through ``strategy`` in virtual time."""
    environment = STRATEGIES[strategy]
    master = random.Random(f"{seed}:{scenario.name}")
    start = EPOCH + master.random()  # a burst starts anywhere within a second
    arrivals = sorted(start + master.uniform(0.0, scenario.spread) for _ in range(scenario.n))
    sim = Sim(start)
    table = Table(TABLE)
    if scenario.corrupt:
        _corrupt(table, scenario.corrupt, start)
    rds = Rds(sim, scenario.rate, user=USER)
    outcomes: dict[int, Outcome] = {}
    skewed = round(scenario.skewed * (scenario.n - 1)) if scenario.offset else None
    for env_id, arrival in enumerate(arrivals):
        rng = random.Random(f"{seed}:{scenario.name}:{env_id}")
        deadline = arrival + scenario.remaining
        ctx = Ctx(
            sim=sim,
            dynamodb=Client(table, sim, rng),
            rds=rds,
            env_id=env_id,
            host=HOST,
            port=PORT,
            region=REGION,
            user=USER,
            table=TABLE,
            rate=scenario.rate,
            arrival=arrival,
            deadline=deadline,
            context=LambdaContext(sim, deadline),
            rng=rng,
            credentials=_role_session(rng),
            offset=scenario.offset if env_id == skewed else 0.0,
            invocations=SKEWED_INVOCATIONS if env_id == skewed else 1,
        )
        sim.spawn(functools.partial(_live, environment, ctx, outcomes), arrival)
    sim.run()
    envs = [Env(a, a + scenario.remaining, outcomes[i]) for i, a in enumerate(arrivals)]
    return Run(scenario, strategy, start, envs, table, rds, skewed)


def _corrupt(table: Table, what: str, start: float) -> None:
    """The queue item as no legitimate limiter writes it: ``n`` or ``f`` a year ahead, or
    ``n`` a string (written by hand, another tool, a bug)."""
    ahead = {"N": str(int(start * 1_000_000) + YEAR_US)}
    value = {"s": {"S": "garbage"}}.get(what, ahead)
    item = {"pk": {"S": f"q#{HOST}:{PORT}"}, "n" if what == "s" else what: value}
    table.call("PutItem", {"TableName": TABLE, "Item": item}, start)


def _live(environment: Strategy, ctx: Ctx, outcomes: dict[int, Outcome]) -> None:
    outcomes[ctx.env_id] = environment(ctx)


def _role_session(rng: random.Random) -> Credentials:
    """Credentials of an environment's own role session (``ASIA...`` key, session token)."""
    upper = string.ascii_uppercase + string.digits
    mixed = string.ascii_letters + string.digits + "+/"
    return Credentials(
        "ASIA" + "".join(rng.choices(upper, k=16)),
        "".join(rng.choices(mixed, k=40)),
        "".join(rng.choices(mixed, k=200)),
    )


def optimum(scenario: Scenario, arrivals: list[float]) -> list[float]:
    """The login instants of the best any limiter could do: what 0.9 R serves in time.

    Exactly: the largest set of environments that can be given login instants at least
    ``1 / (0.9 R)`` apart, each instant within ``[arrival, arrival + remaining - 0.5]``
    (the 0.5 s being iamdb's deadline margin: it takes no permit later than that), logging in
    the moment its permit is granted (no DynamoDB or login latency). Every environment has the
    same ``remaining``, so deadlines come in arrival order, and then serving in arrival order,
    each as early as possible and skipping one that cannot make its deadline, is optimal.
    """
    spacing = 1.0 / (PACE * scenario.rate)
    margin = scenario.remaining - DEADLINE_MARGIN
    logins: list[float] = []
    for arrival in sorted(arrivals):
        at = arrival if not logins else max(arrival, logins[-1] + spacing)
        if at <= arrival + margin:
            logins.append(at)
    return logins


def paced_ideal(scenario: Scenario, arrivals: list[float], k: int) -> float:
    """When the ``k``-th login would be if the first ``k`` arrivals logged in paced at 0.9 R:
    ``(k - 1) / (0.9 R)`` after the start for a burst at one instant."""
    spacing = 1.0 / (PACE * scenario.rate)
    at = -float("inf")
    for arrival in sorted(arrivals)[:k]:
        at = max(arrival, at + spacing)
    return at


@dataclass(frozen=True)
class Summary:
    """One row of the bench (see :mod:`bench.fleet` for the columns)."""

    optimum: int
    served: int
    refused: int
    peak_logins: int
    fail_opens: int
    """Logins that went ahead without a fleet permit (an environment may have several)."""
    fail_open_envs: int
    writes_per_served: float | None
    writes_per_unserved: float | None
    item_peak_writes: int
    item_peak_requests: int
    throttled: int
    median_told_unserved: float | None
    last_over_ideal: float | None
    errors: dict[str, int]


def summarize(run: Run) -> Summary:
    scenario, envs = run.scenario, run.envs
    arrivals = [e.arrival for e in envs]
    served = [e for e in envs if e.served]
    unserved = [e for e in envs if not e.served]
    last_over_ideal = None
    if served:
        last = max(e.outcome.login_at or 0.0 for e in served)
        ideal = paced_ideal(scenario, arrivals, len(served)) - run.start
        last_over_ideal = (last - run.start) / ideal if ideal > 0 else None
    return Summary(
        optimum=len(optimum(scenario, arrivals)),
        served=len(served),
        refused=run.rds.refused,
        peak_logins=run.rds.arrivals.peak,
        fail_opens=sum(e.outcome.fail_opens for e in envs),
        fail_open_envs=sum(e.outcome.fail_opens > 0 for e in envs),
        writes_per_served=_mean_writes(served),
        writes_per_unserved=_mean_writes(unserved),
        item_peak_writes=run.table.peak_writes(),
        item_peak_requests=run.table.peak_requests(),
        throttled=run.table.throttled(),
        median_told_unserved=(
            statistics.median(e.outcome.told_at - e.arrival for e in unserved) if unserved else None
        ),
        last_over_ideal=last_over_ideal,
        errors=dict(sorted(Counter(_error(e) for e in unserved).items())),
    )


def _mean_writes(envs: list[Env]) -> float | None:
    return sum(e.outcome.writes for e in envs) / len(envs) if envs else None


def _error(env: Env) -> str:
    return env.outcome.error or "LambdaTimeout"  # logged in, but after the invocation ended
