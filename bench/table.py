"""The one table format every benchmark prints (baseline, iamdb, ratio, goal), and the timers
of the in-process benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Row:
    case: str
    baseline: float  # what a user would otherwise write
    iamdb: float
    goal: str

    @property
    def ratio(self) -> float:
        return self.iamdb / self.baseline if self.baseline else float("nan")


def median_us(fn: Callable[[], Any], repeat: int) -> float:
    """The median time of ``repeat`` calls of ``fn``, in microseconds."""
    samples = []
    for _ in range(repeat):
        t = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t)
    return statistics.median(samples) / 1000


def interleaved(
    first: Callable[[], Any], second: Callable[[], Any], rounds: int
) -> tuple[float, float]:
    """Medians (us) of ``rounds`` single calls of ``first`` and of ``second``, taken in turns
    so the machine's drift hits both alike."""
    a, b = [], []
    for _ in range(rounds):
        a.append(median_us(first, 1))
        b.append(median_us(second, 1))
    return statistics.median(a), statistics.median(b)


def _fmt(value: float) -> str:
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def print_table(title: str, rows: list[Row]) -> None:
    print(f"\n### {title}\n")
    print("| case | baseline | iamdb | ratio (iamdb/baseline) | goal |")
    print("|---|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r.case} | {_fmt(r.baseline)} | {_fmt(r.iamdb)} | {r.ratio:.3g} | {r.goal} |")


def print_grid(title: str, headers: list[str], rows: list[list[str]]) -> None:
    """A plain markdown table, for results that are not a baseline/iamdb ratio."""
    print(f"\n### {title}\n")
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
