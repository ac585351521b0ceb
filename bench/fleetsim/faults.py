"""The fleet simulation's faults: one environment's clock off, a queue item nobody should have
written. Each scenario runs 1,000 environments (:mod:`bench.fleetsim.run`); one of them has its
clock off by ``offset`` and lives :data:`~bench.fleetsim.run.SKEWED_INVOCATIONS` invocations
(each a new login), or the queue item is corrupt at the start. A row says whether the correct
environments were served as without the fault, and how the skewed one fared.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass

from bench.fleetsim.run import Env, Run, Scenario, optimum

FAULTS = [
    Scenario(1000, 10.0, 200, 10, offset=10.0),
    Scenario(1000, 10.0, 200, 10, offset=10.0, skewed=0.5),
    Scenario(1000, 10.0, 200, 10, offset=3600.0),
    Scenario(1000, 10.0, 200, 10, offset=3600.0, skewed=0.5),
    Scenario(1000, 10.0, 200, 10, offset=-10.0),
    Scenario(1000, 10.0, 200, 10, offset=-10.0, skewed=0.5),
    Scenario(1000, 10.0, 10, 10, offset=10.0),
    Scenario(1000, 0.0, 200, 10, offset=10.0),
    Scenario(1000, 10.0, 200, 10, corrupt="n"),
    Scenario(1000, 10.0, 200, 10, corrupt="f"),
    Scenario(1000, 10.0, 200, 10, corrupt="s"),
]
"""One environment's clock off, first in arrival order (it may start the queue) or halfway (it
finds the queue running), or a queue item no legitimate limiter wrote, among 1,000."""


@dataclass(frozen=True)
class FaultSummary:
    """One row of the fault table (see :mod:`bench.fleet`)."""

    optimum: int
    served: int
    """Correct-clock environments logged in before their invocation ended."""
    unserved: dict[str, int]
    """Correct-clock environments not served, by error."""
    skewed: str
    """How the skewed environment's invocations ended (``-``: none is skewed)."""
    refused: int
    peak_logins: int
    fail_opens: int
    writes_per_login: float | None
    item_peak_writes: int
    throttled: int
    median_told_unserved: float | None


def summarize_faults(run: Run) -> FaultSummary:
    envs = [e for i, e in enumerate(run.envs) if i != run.skewed]
    unserved = [e for e in envs if not e.served]
    served = len(envs) - len(unserved)
    skewed = "-"
    if run.skewed is not None:
        first = run.envs[run.skewed]
        ends = [_end(first), *first.outcome.again]
        ok = sum(end == "ok" for end in ends)
        skewed = f"{ok}/{len(ends)} ok" + ("" if ok == len(ends) else f" ({', '.join(ends)})")
    logins = served + sum(e.outcome.again.count("ok") for e in run.envs)
    return FaultSummary(
        optimum=len(optimum(run.scenario, [e.arrival for e in run.envs])),
        served=served,
        unserved=dict(sorted(Counter(_end(e) for e in unserved).items())),
        skewed=skewed,
        refused=run.rds.refused,
        peak_logins=run.rds.arrivals.peak,
        fail_opens=sum(e.outcome.fail_opens for e in run.envs),
        writes_per_login=sum(e.outcome.writes for e in run.envs) / logins if logins else None,
        item_peak_writes=run.table.peak_writes(),
        throttled=run.table.throttled(),
        median_told_unserved=(
            statistics.median(e.outcome.told_at - e.arrival for e in unserved) if unserved else None
        ),
    )


def _end(env: Env) -> str:
    return "ok" if env.served else env.outcome.error or "LambdaTimeout"
