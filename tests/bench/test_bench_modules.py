"""Every benchmark module imports (``make bench`` imports them all before running any), and
``python -m bench`` runs each one's ``main``."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
MODULES = sorted(p.stem for p in BENCH.glob("*.py") if p.stem not in ("__init__", "__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_benchmark_module_imports_and_has_main(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    if name != "table":
        assert callable(module.main)


def test_make_bench_runs_every_benchmark() -> None:
    from bench.__main__ import BENCHMARKS

    assert {m.__name__ for m in BENCHMARKS} == {f"bench.{n}" for n in MODULES} - {"bench.table"}
