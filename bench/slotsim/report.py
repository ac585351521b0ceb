"""The slot simulation's table: every scenario run with main's iamdb and with this one, each in a
fresh interpreter whose ``iamdb`` comes from that version's ``layer/`` (the simulation's own code
is this checkout's, and uses only what both versions have)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.slotsim.fleet import SCENARIOS, Scenario

ROOT = Path(__file__).resolve().parents[2]
WORKER = """
import json, sys
from bench.slotsim.fleet import SCENARIOS, run
print(json.dumps(run(SCENARIOS[int(sys.argv[1])], int(sys.argv[2]))))
"""
GOALS = (
    "Goals (issue 22): 0 failed invocations while the invocations running fit the slots; beyond "
    "them, failures only for the excess, each a TooManyConnectionsError; at most 1 extra login "
    "per invocation after an idle gap longer than the timeout, none after a shorter one (wrapped "
    "by iamdb.lambda_handler: none after a gap shorter than the 60 s between invocations, at most "
    "1 after a longer one). (A warm "
    "get_pg() <= 5 us: bench.sql, with psycopg.)\n'running <= slots': counted when the "
    "invocation started (one waiting for a slot counts as running). Connects: the driver's "
    "connection attempts, refused ones included (a wait for a slot tries again)."
)


def run_in(layer: Path, number: int, seed: int) -> dict[str, Any]:
    """Scenario ``number`` with the iamdb of ``layer``, in a fresh interpreter."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(number), str(seed)],
        env={"PYTHONPATH": f"{layer}:{ROOT}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        timeout=4 * 3600,  # --all: overload takes long
    )
    if done.returncode != 0:
        raise RuntimeError(f"slot simulation {number} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["seconds"] = time.perf_counter() - started
    return result


def row(number: int, scenario: Scenario, code: str, r: dict[str, Any]) -> list[str]:
    told = "-" if r["told_median"] is None else f"{r['told_median']:.2f}"
    errors = ", ".join(f"{k} {v:,}" for k, v in sorted(r["errors"].items())) or "-"
    return [
        str(number + 1), scenario.engine.name,
        f"{scenario.timeout:g} s{', wrapped' if scenario.wrapped else ''}",
        f"{scenario.burst_rate:g}/s", str(r["peak_running"]), code,
        f"{r['served']:,} / {r['attempted']:,}", f"{r['failed_within']:,}",
        f"{r['failed_beyond']:,}", errors, told, str(r["peak_sessions"]), str(r["environments"]),
        str(r["max_logins_after_gap"]),
        f"{r['extra_warm_logins']:,} ({r.get('most_warm_logins', '-')})", f"{r['iam_logins']:,}",
        f"{r['seconds']:.0f}",
    ]  # fmt: skip


HEADERS = [
    "#", "engine", "timeout", "burst rate", "peak running", "iamdb", "served / attempted",
    "failed, running <= slots", "failed, running > slots", "errors", "told (s, median)",
    "peak sessions", "environments", "most connects, an invocation after a gap > timeout",
    "connects after a gap <= timeout (most in one invocation)", "new IAM logins", "run (s)",
]  # fmt: skip


def _durations(numbers: list[int] | None) -> str:
    """How long the scenarios simulate: '3 h', or '3 h (900 s timeouts: 1 h, shortened)'."""
    base = SCENARIOS[0].horizon
    shorter = {
        f"{SCENARIOS[n].timeout:g} s timeouts: {SCENARIOS[n].horizon / 3600:g} h"
        for n in numbers or range(len(SCENARIOS))
        if SCENARIOS[n].horizon != base
    }
    text = f"{base / 3600:g} h"
    return f"{text} ({'; '.join(sorted(shorter))}, shortened)" if shorter else text


def main(layers: dict[str, Path | None], seed: int, numbers: list[int] | None = None) -> None:
    from bench.table import print_grid

    runs = [
        (number, code, layer)
        for number in numbers or range(len(SCENARIOS))
        for code, layer in layers.items()
        if layer is not None
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:  # each run is an interpreter of its own
        results = list(pool.map(lambda r: run_in(r[2], r[0], seed), runs))
    rows = [row(n, SCENARIOS[n], code, r) for (n, code, _), r in zip(runs, results, strict=True)]
    first = SCENARIOS[0]
    print_grid(
        f"Connection slots at fleet scale (virtual time, seed {seed}): {first.functions} "
        f"functions sharing {first.slots} slots, {_durations(numbers)} of bursty traffic, "
        "environments kept 5-60 min idle",
        HEADERS,
        rows,
    )
    print(f"\n{GOALS}")
