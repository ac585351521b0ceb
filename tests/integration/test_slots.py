"""Connection slots with Lambda environments as processes (tests.lifecycle: frozen with SIGSTOP
between invocations) against devstack's PostgreSQL and MariaDB, each leaving the application
``bench.slots.SLOTS`` (20) connections. The function's timeout is test-sized (2-6 s), so the idle
limit iamdb asks for is too (twice the timeout).

bench.slots runs the same scenario with main's iamdb beside this one (there the 10 newcomers all
fail) and at fleet scale in virtual time.
"""

from __future__ import annotations

import time

import pytest

from bench.slots import SLOTS, Fleet, scenario
from devstack.stack import Stack
from tests.conftest import mariadb_available
from tests.lifecycle import ROOT

pytestmark = pytest.mark.integration

ENGINES = [
    "pg",
    pytest.param("mysql", marks=pytest.mark.skipif(not mariadb_available(), reason="no MariaDB")),
]
LAYER = ROOT / "layer"


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def wait_for_sessions(fleet: Fleet, count: int, within: float = 20.0) -> None:
    ends = time.monotonic() + within
    while fleet.sessions() != count:
        assert time.monotonic() < ends, f"{fleet.sessions()} sessions, expected {count}"
        time.sleep(0.05)


def test_frozen_environments_give_their_slots_back(slots_stack: Stack, engine: str) -> None:
    """20 environments connect and stay frozen past their timeout; 10 newcomers get in (20 + 10
    would not fit); the 20 thawed one by one each reconnect transparently, with their cached
    token."""
    first, newcomers, thawed = scenario(Fleet(slots_stack, engine, LAYER))
    assert first.served == 20, [c.data for c in first.calls if not c.ok]
    assert {c.data["idle_limit"] for c in first.calls} == {8}  # timeout 4 s + 4 s
    assert newcomers.served == 10, [c.data for c in newcomers.calls if not c.ok]
    assert thawed.served == 20, [c.data for c in thawed.calls if not c.ok]
    assert all(c.data["reconnects"] == 1 and c.data["logins"] == 2 for c in thawed.calls)
    assert thawed.new_logins == 0  # each reconnect reused its environment's token
    assert all(c.data["slot_waits"] == 0 for c in newcomers.calls + thawed.calls)


def test_an_invocation_idle_between_queries_keeps_its_connection(
    slots_stack: Stack, engine: str
) -> None:
    """The server closes sessions idle 8 s (timeout 4 s). An environment frozen 5 s, then an
    invocation idle 3.4 s between two queries: 8.4 s since the last query of the first
    invocation, but never 8 s idle: the get at its start restarted the server's idle clock."""
    fleet = Fleet(slots_stack, engine, LAYER)
    try:
        (env,) = fleet.spawn(1)
        (first,) = fleet.invoke([env], {"idle": 3.4})  # idle inside a fresh invocation too
        assert first.ok and first.data["idle_limit"] == 8, first.data
        time.sleep(5.0)
        (second,) = fleet.invoke([env], {"idle": 3.4})
        assert second.ok, second.data
        assert second.data["reconnects"] == 0 and second.data["logins"] == 1  # the same one
        assert fleet.sessions() == 1
    finally:
        fleet.close()


def test_a_newcomer_waits_for_a_slot_or_is_told_why_within_its_deadline(
    slots_stack: Stack, engine: str
) -> None:
    """20 running invocations hold every slot. A newcomer waits, and gets in when an environment
    goes away (Lambda destroys it: its socket closes). The next one finds none free before its
    deadline: TooManyConnectionsError with the server's code, the cause first, the time spent."""
    holders = Fleet(slots_stack, engine, LAYER, timeout=30.0)
    newcomers = Fleet(slots_stack, engine, LAYER, timeout=6.0)
    try:
        running = holders.spawn(SLOTS)
        for env in running:
            env.start({"hold": 25}, 30.0)
        wait_for_sessions(holders, SLOTS)
        (waiter,) = newcomers.spawn(1)
        waiter.start(None, 6.0)
        time.sleep(1.5)
        running.pop().close()  # one environment destroyed: its slot frees
        outcome = waiter.result()
        assert outcome.ok and outcome.value["ok"], outcome
        assert outcome.value["slot_waits"] == 1 and outcome.value["get_ms"] >= 1000
        (late,) = newcomers.spawn(1)
        started = time.time()
        late.start(None, 2.0)
        told = late.result()
        assert told.ok and not told.value["ok"] and told.within_deadline, told
        error = told.value
        assert error["error"] == "TooManyConnectionsError"
        assert (error["sqlstate"], error["errno"]) == (
            ("53300", None) if engine == "pg" else ("08004", 1040)
        )
        assert error["attempts"] > 1 and error["spent"] <= 2.0
        message = error["message"]
        assert message.startswith(f"{engine}: no connection slot free for 'iamdb_app'")
        assert "reserved concurrency" in message and "IDLE_SESSION_TIMEOUT" in message
        assert f"attempts over {error['spent']:.2f} s" in message or " s.)" in message
        assert time.time() - started < 2.0 + 1.0
    finally:
        holders.close()
        newcomers.close()
