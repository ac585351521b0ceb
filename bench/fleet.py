"""Fleet simulation bench: iamdb's login limiter against a modelled DynamoDB and RDS, at scale.

Runs the real limiter code (:mod:`bench.fleetsim`) for every scenario and strategy in virtual
time, deterministically (``--seed``), and prints one row each. Scenarios: N = 60, 600, 3,000
cold environments at one instant, and 1,000 arriving uniformly over 10 s; an RDS instance
refusing new IAM logins beyond R = 10 or 200 per rolling second; 10 s or 30 s of invocation
left at arrival. DynamoDB answers in 4-12 ms and takes at most 1,000 writes per second per
item (:mod:`bench.fleetsim.dynamodb`); a login takes 10-30 ms (:mod:`bench.fleetsim.rds`).

Columns:

- optimum: what pacing at 0.9 R serves before the deadlines (:func:`bench.fleetsim.run.optimum`);
  served: environments logged in before their invocation ended; served / optimum in %;
- refused: new IAM logins RDS refused; max logins/s: most new-token logins reaching RDS in any
  rolling second (refused ones included);
- fail-opens: logins that went ahead without a fleet permit / environments that did so;
- writes/served, writes/unserved: DynamoDB writes sent by served environments per served one,
  by the others per unserved one;
- hot item: the most writes any item accepted in a rolling second (failed conditions included),
  the most requests any item received in one (throttled included); throttled requests;
- told (ms): median time from arrival to the error of the environments not served;
- last / ideal: last login against the paced ideal (the served-th login at 0.9 R, in arrival
  order, from the start);
- unserved: why, by error class (LambdaTimeout: logged in after the invocation ended).

The second table runs the faults of :mod:`bench.fleetsim.faults` (one environment's clock off,
a corrupt queue item, among 1,000) with main's limiter (``main``, before the clock-skew guard)
and today's (``ticket``). Its columns: served / optimum for the correct-clock environments, why
the others were not served and when they were told, how the skewed environment's invocations
ended, RDS refusals and peak, fail-opens, DynamoDB writes per login served, the hot item's peak.

Run: ``python -m bench.fleet [--rows 1,3-5] [--strategy legacy] [--seed 1] [--faults 1-3]``.
"""

from __future__ import annotations

import argparse
import logging
import time

from bench.fleetsim.faults import FAULTS, FaultSummary, summarize_faults
from bench.fleetsim.run import SCENARIOS, Run, Scenario, Summary, simulate, summarize
from bench.fleetsim.strategy import STRATEGIES

GOALS = (
    "Goals (issue 10), every row: 0 refused by RDS, 0 fail-opens, <= 1.2 writes per served "
    "login, hot item below 1,000 writes/s, served >= 99 % of the optimum, unserved told within "
    "50 ms (median) unless DynamoDB pushes back."
)


def rows_wanted(spec: str | None, scenarios: list[Scenario] = SCENARIOS) -> list[int]:
    """1-based scenario numbers from ``"1,3-5"`` (all when None)."""
    if not spec:
        return list(range(1, len(scenarios) + 1))
    wanted: list[int] = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        wanted.extend(range(int(low), int(high or low) + 1))
    for number in wanted:
        if not 1 <= number <= len(scenarios):
            raise SystemExit(f"no scenario {number} (1-{len(scenarios)})")
    return wanted


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def row(number: int, run: Run, s: Summary, seconds: float) -> list[str]:
    sc = run.scenario
    return [
        str(number), f"{sc.n:,}", sc.arrival, f"{sc.rate:g}", f"{sc.remaining:g} s",
        run.strategy, f"{s.optimum:,}", f"{s.served:,}", f"{100 * s.served / s.optimum:.1f}",
        f"{s.refused:,}", f"{s.peak_logins:,}", f"{s.fail_opens:,} / {s.fail_open_envs:,}",
        _num(s.writes_per_served), _num(s.writes_per_unserved), f"{s.item_peak_writes:,}",
        f"{s.item_peak_requests:,}", f"{s.throttled:,}",
        _num(None if s.median_told_unserved is None else 1000 * s.median_told_unserved, 0),
        _num(s.last_over_ideal), ", ".join(f"{k} {v:,}" for k, v in s.errors.items()) or "-",
        f"{seconds:.1f}",
    ]  # fmt: skip


HEADERS = [
    "#", "N", "arrival", "R", "deadline", "strategy", "optimum", "served", "served/opt %",
    "refused by RDS", "max logins/s", "fail-opens", "writes/served", "writes/unserved",
    "hot item writes/s", "hot item requests/s", "throttled", "told (ms)", "last / ideal",
    "unserved", "run (s)",
]  # fmt: skip


def fault_row(number: int, run: Run, s: FaultSummary) -> list[str]:
    sc = run.scenario
    told = None if s.median_told_unserved is None else 1000 * s.median_told_unserved
    return [
        str(number), sc.fault, f"{sc.n:,}", sc.arrival, f"{sc.rate:g}", f"{sc.remaining:g} s",
        run.strategy, f"{s.served:,} / {s.optimum:,}",
        ", ".join(f"{k} {v:,}" for k, v in s.unserved.items()) or "-", _num(told, 0), s.skewed,
        f"{s.refused:,}", f"{s.peak_logins:,}", f"{s.fail_opens:,}", _num(s.writes_per_login),
        f"{s.item_peak_writes:,}", f"{s.throttled:,}",
    ]  # fmt: skip


FAULT_HEADERS = [
    "#", "fault", "N", "arrival", "R", "deadline", "strategy", "correct envs served / optimum",
    "correct envs unserved", "told (ms)", "skewed env's invocations", "refused by RDS",
    "max logins/s", "fail-opens", "writes/login", "hot item writes/s", "throttled", "warnings",
]  # fmt: skip
FAULT_STRATEGIES = ("main", "ticket")


class _Warnings(logging.Handler):
    """Counts iamdb's warnings during a run instead of printing them (one per process is the
    design: a fault row shows how many the fleet logged)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1

    def __enter__(self) -> _Warnings:
        logging.getLogger("iamdb").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("iamdb").removeHandler(self)


def main(argv: list[str] | None = None) -> None:
    from bench.table import print_grid

    parser = argparse.ArgumentParser(
        prog="python -m bench.fleet", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rows", help="scenario numbers, e.g. 1,3-5 (default: all)")
    parser.add_argument(
        "--strategy", action="append", choices=sorted(STRATEGIES), help="repeatable (default: all)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", help="fault scenario numbers (default: all)")
    args = parser.parse_args(argv)
    lines = []
    for number in rows_wanted(args.rows):
        for name in args.strategy or sorted(STRATEGIES):
            started = time.perf_counter()
            run = simulate(SCENARIOS[number - 1], name, args.seed)
            lines.append(row(number, run, summarize(run), time.perf_counter() - started))
    print_grid(f"Fleet simulation (virtual time, seed {args.seed})", HEADERS, lines)
    print(f"\n{GOALS}")
    lines = []
    for number in rows_wanted(args.faults, FAULTS):
        for name in args.strategy or FAULT_STRATEGIES:
            if name in FAULT_STRATEGIES:
                with _Warnings() as warnings:
                    run = simulate(FAULTS[number - 1], name, args.seed)
                lines.append([*fault_row(number, run, summarize_faults(run)), str(warnings.count)])
    print_grid(f"Faults: clocks off, corrupt items (seed {args.seed})", FAULT_HEADERS, lines)


if __name__ == "__main__":
    main()
