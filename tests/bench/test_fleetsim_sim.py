"""The fleet simulation's scheduler: virtual time, one thread at a time, deterministic."""

from __future__ import annotations

import functools
import random
import threading
import time

import pytest

from bench.fleetsim.sim import EPOCH, RollingSecond, Sim, SimError


def test_threads_wake_in_virtual_time_order_and_ties_in_scheduling_order() -> None:
    sim = Sim()
    log: list[tuple[str, float]] = []

    def sleeper(name: str, *waits: float) -> None:
        for wait in waits:
            sim.sleep(wait)
            log.append((name, sim.now() - EPOCH))

    sim.spawn(lambda: sleeper("a", 2.0, 1.0), EPOCH)
    sim.spawn(lambda: sleeper("b", 1.0, 1.0, 1.0), EPOCH)
    sim.spawn(lambda: sleeper("c", 0.5), EPOCH + 1.0)
    sim.run()
    # a and b both wake at 2.0 and at 3.0: a's wake-up was scheduled first each time.
    assert log == [("b", 1.0), ("c", 1.5), ("a", 2.0), ("b", 2.0), ("a", 3.0), ("b", 3.0)]
    assert sim.now() == EPOCH + 3.0


def test_an_hour_of_virtual_time_passes_without_waiting_for_it() -> None:
    sim = Sim()
    seen: list[float] = []

    def body() -> None:
        for _ in range(60):
            sim.sleep(60.0)
        seen.append(sim.now())

    sim.spawn(body, EPOCH)
    sim.run()
    assert seen == [EPOCH + 3600.0]


def test_only_one_simulated_thread_runs_at_any_moment() -> None:
    sim = Sim()
    running: list[int] = []
    overlaps: list[int] = []
    guard = threading.Lock()

    def body(rng: random.Random) -> None:
        for _ in range(20):
            with guard:
                running.append(1)
                overlaps.append(len(running))
            time.sleep(0.0005)  # gives up the GIL: any other runnable thread would run now
            with guard:
                running.pop()
            sim.sleep(rng.choice((0.0, 0.001, 0.002)))

    for i in range(20):
        sim.spawn(functools.partial(body, random.Random(i)), EPOCH)
    sim.run()
    assert len(overlaps) == 400
    assert max(overlaps) == 1


def test_same_inputs_same_interleaving() -> None:
    def trace() -> list[tuple[int, float]]:
        sim = Sim()
        log: list[tuple[int, float]] = []

        def body(i: int) -> None:
            rng = random.Random(i)
            for _ in range(30):
                sim.sleep(rng.uniform(0.0, 0.01))
                log.append((i, sim.now()))

        for i in range(50):
            sim.spawn(lambda i=i: body(i), EPOCH + i * 0.001)
        sim.run()
        return log

    first = trace()
    assert len(first) == 1500
    assert trace() == first


def test_threads_spawn_threads_at_later_instants() -> None:
    sim = Sim()
    log: list[tuple[str, float]] = []

    def child() -> None:
        log.append(("child", sim.now() - EPOCH))

    def parent() -> None:
        sim.sleep(1.0)
        sim.spawn(child, sim.now() + 5.0)
        log.append(("parent", sim.now() - EPOCH))

    sim.spawn(parent, EPOCH)
    sim.run()
    assert log == [("parent", 1.0), ("child", 6.0)]


def test_a_raising_thread_fails_the_run_after_the_others_finish() -> None:
    sim = Sim()
    finished: list[str] = []

    def bad() -> None:
        sim.sleep(1.0)
        raise KeyError("boom")

    def good() -> None:
        sim.sleep(2.0)
        finished.append("good")

    sim.spawn(bad, EPOCH)
    sim.spawn(good, EPOCH)
    with pytest.raises(SimError, match="KeyError") as info:
        sim.run()
    assert isinstance(info.value.__cause__, KeyError)
    assert finished == ["good"]


def test_misuse_is_refused() -> None:
    sim = Sim()
    with pytest.raises(RuntimeError, match="outside a simulated thread"):
        sim.sleep(1.0)
    with pytest.raises(ValueError, match="past"):
        sim.spawn(lambda: None, EPOCH - 1)
    errors: list[Exception] = []

    def negative() -> None:
        try:
            sim.sleep(-0.1)
        except ValueError as exc:
            errors.append(exc)

    sim.spawn(negative, EPOCH)
    sim.run()
    assert len(errors) == 1
    sim.run()  # nothing left to run: returns at once


def test_rolling_second_counts_the_half_open_second_before_now() -> None:
    window = RollingSecond()
    for t in (0.0, 0.25, 0.75, 1.0):
        window.add(t)
    assert window.count(1.0) == 3  # 0.0 is exactly one second before 1.0: out
    assert window.count(1.25) == 2
    assert window.count(5.0) == 0
    assert (window.total, window.peak) == (4, 3)
