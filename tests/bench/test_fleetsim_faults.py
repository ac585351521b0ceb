"""The fleet simulation's faults, small: one environment's clock off, or a corrupt queue item,
among 300 environments running iamdb's real limiter in virtual time (bench/fleetsim/faults.py
runs them at 1,000). Today's limiter serves every correct environment and the skewed one
recovers; main's (the frozen baseline) does not, which is what the guard is for.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from bench.fleetsim.faults import summarize_faults
from bench.fleetsim.run import Scenario, simulate


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    """Each simulated environment warns once per process: keep the 300 warnings out."""
    iamdb = logging.getLogger("iamdb")
    handler = logging.NullHandler()
    iamdb.addHandler(handler)
    propagate, iamdb.propagate = iamdb.propagate, False
    yield
    iamdb.propagate = propagate
    iamdb.removeHandler(handler)


FAULTS = {
    "10 s fast, first": Scenario(300, 3.0, 200, 10, offset=10.0),
    "1 h fast, halfway": Scenario(300, 3.0, 200, 10, offset=3600.0, skewed=0.5),
    "10 s slow, halfway": Scenario(300, 3.0, 200, 10, offset=-10.0, skewed=0.5),
    "n a year ahead": Scenario(300, 3.0, 200, 10, corrupt="n"),
    "n text": Scenario(300, 3.0, 200, 10, corrupt="s"),
}


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_no_fault_blocks_the_correct_environments(name: str) -> None:
    scenario = FAULTS[name]
    today = summarize_faults(simulate(scenario, "ticket"))
    assert today.unserved == {} and today.served == scenario.n - (1 if scenario.offset else 0)
    assert today.skewed in ("-", "5/5 ok") and today.fail_opens == 0 and today.refused == 0
    before = summarize_faults(simulate(scenario, "main"))
    assert before.unserved or before.fail_opens or before.skewed not in ("-", "5/5 ok")
