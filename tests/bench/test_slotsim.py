"""The connection-slot simulation (bench.slots' fleet table): small runs of iamdb's real login
and managed-connection code against the modelled server, in virtual time."""

from __future__ import annotations

import dataclasses

from bench.fleetsim.sim import EPOCH, Sim
from bench.slotsim.fleet import DEFAULT, SCENARIOS, Scenario, run
from bench.slotsim.model import MYSQL, PG, Db

SMALL = Scenario(PG, timeout=5.0, burst_rate=1.0, slots=10, horizon=1800.0, quiet_rate=0.05,
                 burst_gap=120.0, burst_length=(20.0, 40.0), functions=3)  # fmt: skip


def test_idle_environments_of_other_functions_give_their_slots_back() -> None:
    result = run(SMALL, seed=3)
    assert result["attempted"] > 200
    assert result["peak_running"] <= SMALL.slots
    assert result["environments"] > SMALL.slots  # more than the slots ever lived
    assert (result["served"], result["errors"]) == (result["attempted"], {})
    assert result["peak_sessions"] <= SMALL.slots
    assert result["max_logins_after_gap"] == 1  # the session was closed: one login back
    assert result["extra_warm_logins"] == 0  # within the timeout, the connection was kept


def test_beyond_the_slots_the_excess_fails_with_the_clear_error_and_none_loses_a_session() -> None:
    crowded = dataclasses.replace(SMALL, engine=MYSQL, slots=3, burst_rate=6.0)
    result = run(crowded, seed=3)
    assert result["peak_running"] > crowded.slots
    # A few fail while as many ran as there are slots: a slot held by a session idle for less
    # than its limit (twice the timeout) outlasts a newcomer's deadline.
    assert 0 < 100 * result["failed_within"] < result["failed_beyond"]
    assert result["errors"]["TooManyConnectionsError"] > 0.99 * sum(result["errors"].values())
    assert set(result["errors"]) <= {"TooManyConnectionsError", "Task timed out"}


def test_a_wrapped_handler_frees_the_slots_of_a_long_timeout_a_minute_after_it_returns() -> None:
    """A 300 s timeout: unwrapped, environments that ran in the last 10 minutes hold their slots,
    so newcomers of another function's burst wait, pile up and fail although few run; wrapped
    (iamdb.lambda_handler), a minute after an environment's invocation its slot is free again:
    every invocation served, running never beyond the slots, and environments invoked again
    after more than 60 s log in once more."""
    long = dataclasses.replace(SMALL, timeout=300.0, slots=10)
    plain, wrapped = run(long, seed=3), run(dataclasses.replace(long, wrapped=True), seed=3)
    assert plain["failed_within"] > 0 and plain["peak_running"] > long.slots  # piled up
    assert (wrapped["served"], wrapped["errors"]) == (wrapped["attempted"], {})
    assert wrapped["peak_running"] <= long.slots and wrapped["peak_sessions"] <= long.slots
    assert wrapped["extra_warm_logins"] > 0


def test_the_same_seed_gives_the_same_run() -> None:
    short = dataclasses.replace(SMALL, horizon=600.0)
    first, second = run(short, seed=7), run(short, seed=7)
    assert first == second


def test_the_server_closes_idle_sessions_at_their_limit_and_orphans_at_keepalive() -> None:
    sim, seen = Sim(), []
    db = Db(sim, PG, slots=2, reclaim=lambda: None)

    def body() -> None:
        limited, unlimited = db.login("t1", 10), db.login("t2", None)
        assert limited is not None and unlimited is not None
        assert db.login("t3", None) is None  # full: refused, yet authenticated (PostgreSQL)
        db.orphan(unlimited)
        sim.sleep(10.0)
        seen.append((db.use(limited), unlimited.open))
        sim.sleep(PG.orphan_seconds)
        db.sweep()
        seen.append((limited.open, unlimited.open, db.iam_logins.total, db.refused))

    sim.spawn(body, EPOCH)
    sim.run()
    assert seen == [(False, True), (False, False, 3, 1)]


def test_the_bench_scenarios_cover_both_engines_both_timeouts_and_overload() -> None:
    assert {(s.engine.name, s.timeout) for s in SCENARIOS} == {
        ("pg", 30.0),
        ("pg", 900.0),
        ("mysql", 30.0),
        ("mysql", 900.0),
    }
    assert any(s.burst_rate > SCENARIOS[0].burst_rate for s in SCENARIOS)
    default = {(SCENARIOS[n].engine.name, SCENARIOS[n].timeout, SCENARIOS[n].burst_rate)
               for n in DEFAULT}  # fmt: skip
    assert {(engine, timeout) for engine, timeout, _ in default} == {
        ("pg", 30.0),
        ("pg", 900.0),
        ("mysql", 30.0),
        ("mysql", 900.0),
    }
    assert {rate for _, _, rate in default} == {SCENARIOS[0].burst_rate}  # overload: --all
    assert {
        (SCENARIOS[n].engine.name, SCENARIOS[n].timeout) for n in DEFAULT if SCENARIOS[n].wrapped
    } == {
        ("pg", 900.0),
        ("mysql", 900.0),
    }
