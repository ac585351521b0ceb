"""Environments restored from one SnapStart snapshot do not retry in lockstep.

A restore brings back the memory the snapshot captured, the ``random`` module's state
included, in every environment restored from it. Two fresh processes given the same state
(``random.setstate``, as a restore would give it; a fork would not do: CPython reseeds
``random`` in a forked child) play two restored environments: what the ``random`` module draws
is the same in both (the control), what iamdb's backoff draws is not.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from tests.paths import LAYER

CHILD = """
import json, random, sys
version, internal, gauss = json.loads(sys.argv[2])  # random.getstate(), through JSON
random.setstate((version, tuple(internal), gauss))
draw = sys.argv[1]
if draw == "random":
    values = [random.random() for _ in range(5)]
elif draw == "backoff":
    from iamdb._core.backoff import DecorrelatedJitter
    jitter = DecorrelatedJitter()
    values = [jitter.next_delay() for _ in range(5)]
else:
    from iamdb._core.runtime import PROCESS, Runtime
    values = [PROCESS.uniform(0, 1), Runtime().uniform(0, 1)]
print(json.dumps(values))
"""


def restored_draws(draw: str) -> list[list[float]]:
    """What two processes restored from one captured ``random`` state draw."""
    random.seed(20261207)
    state = json.dumps(random.getstate())
    env = {**os.environ, "PYTHONPATH": str(LAYER)}
    return [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", CHILD, draw, state],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout
        )
        for _ in range(2)
    ]


def test_the_random_module_repeats_itself_after_a_restore() -> None:
    first, second = restored_draws("random")
    assert first == second  # what a snapshot does to the random module: the control


@pytest.mark.parametrize("draw", ["backoff", "runtime"])
def test_iamdbs_jitter_differs_between_restored_environments(draw: str) -> None:
    first, second = restored_draws(draw)
    assert first != second
