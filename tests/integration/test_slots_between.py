"""The idle limit between invocations (``iamdb.lambda_handler``), with Lambda environments as
processes frozen with SIGSTOP between invocations (tests.lifecycle) against devstack's
PostgreSQL and MariaDB, each leaving the application ``bench.slots.SLOTS`` (20) connections.

The function's timeout is 30 s, so while an invocation runs the server closes a session only
after 60 s idle; between invocations of the wrapped handler, after 2 s (test-sized
``<P>IDLE_BETWEEN_INVOCATIONS``). Environments frozen a few seconds, far less than the timeout,
give their slots back; those invoked again keep their connection and its long limit.
"""

from __future__ import annotations

import time

import pytest

from bench.slots import SLOTS, Fleet
from bench.slotsim import between
from devstack.stack import Stack
from tests.conftest import mariadb_available
from tests.integration.conftest import pg_admin
from tests.integration.test_slots import wait_for_sessions
from tests.lifecycle import ROOT, Environment

pytestmark = pytest.mark.integration

ENGINES = [
    "pg",
    pytest.param("mysql", marks=pytest.mark.skipif(not mariadb_available(), reason="no MariaDB")),
]
LAYER = ROOT / "layer"
TIMEOUT = 30.0
BETWEEN = between.BETWEEN  # 2 s
LONG = {"pg": "1min", "mysql": "60"}  # as each server shows the limit of 60 s


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def wrapped(stack: Stack, engine: str) -> Fleet:
    """Environments of a function whose handler is wrapped by ``iamdb.lambda_handler``."""
    return between.fleet(stack, engine, LAYER, True, timeout=TIMEOUT)


def test_frozen_environments_give_their_slots_back_within_the_timeout(
    slots_stack: Stack, engine: str
) -> None:
    """20 environments run, then freeze for a few seconds (a tenth of the timeout); 10 newcomers
    get in at once without waiting for a slot; the 20 thawed one by one reconnect with their
    cached tokens."""
    fleet = wrapped(slots_stack, engine)
    try:
        first = fleet.spawn(SLOTS)
        calls = [c for i in range(0, SLOTS, 5) for c in fleet.invoke(first[i : i + 5])]
        assert all(c.ok for c in calls), [c.data for c in calls if not c.ok]
        assert {c.data["idle_limit"] for c in calls} == {60}  # while running: 30 s + 30 s
        assert {c.data["server_limit"] for c in calls} == {LONG[engine]}
        wait_for_sessions(fleet, 0, within=BETWEEN + 8.0)  # frozen: the server closed them
        newcomers = fleet.invoke(fleet.spawn(10))
        assert all(c.ok and c.data["slot_waits"] == 0 for c in newcomers), [
            c.data for c in newcomers
        ]
        wait_for_sessions(fleet, 0, within=BETWEEN + 8.0)  # the newcomers' too
        before = fleet.new_logins()
        thawed = [fleet.invoke([env])[0] for env in first]
        assert all(c.ok for c in thawed), [c.data for c in thawed if not c.ok]
        assert all(c.data["reconnects"] == 1 and c.data["slot_waits"] == 0 for c in thawed), [
            c.data for c in thawed
        ]
        assert fleet.new_logins() == before  # each reconnect reused its environment's token
    finally:
        fleet.close()


def test_an_environment_invoked_again_keeps_its_connection_and_its_long_limit(
    slots_stack: Stack, engine: str
) -> None:
    """Invoked again within the limit between invocations: the same connection, its long limit
    set again by the first get, so the handler may leave it idle longer than 2 s."""
    fleet = wrapped(slots_stack, engine)
    try:
        (env,) = fleet.spawn(1)
        (first,) = fleet.invoke([env])
        assert first.ok, first.data
        (second,) = fleet.invoke([env], {"idle": BETWEEN + 1.5})
        assert second.ok, second.data
        assert (second.data["logins"], second.data["reconnects"]) == (1, 0)
        assert second.data["server_limit"] == LONG[engine]
        assert fleet.sessions() == 1
    finally:
        fleet.close()


FAILING = r"""
import os, iamdb
ENGINE, TABLE = os.environ["SLOTS_ENGINE"], os.environ["TABLE"]


@iamdb.lambda_handler
def handler(event, context):
    if ENGINE == "pg":
        conn = iamdb.get_pg()
        conn.execute("BEGIN")
        conn.execute(f"UPDATE {TABLE} SET v = %s", [event])
    else:
        conn = iamdb.get_mysql()
        conn.begin()
        with conn.cursor() as cur:
            cur.execute(f"UPDATE {TABLE} SET v = %s", [event])
    if event == "failed":
        raise RuntimeError("the handler failed before committing")
    conn.execute("COMMIT") if ENGINE == "pg" else conn.commit()
    return event
"""


def insert(stack: Stack, engine: str, table: str) -> None:
    """The row the handler updates."""
    if engine == "pg":
        with pg_admin(stack) as conn:
            conn.execute(f"INSERT INTO {table} VALUES ('before')")
        return
    assert stack.mysql is not None
    with stack.mysql.admin() as conn, conn.cursor() as cur:
        cur.execute(f"INSERT INTO app.{table} VALUES ('before')")
        conn.commit()


def update_now(stack: Stack, engine: str, table: str) -> str:
    """Another session updates the row, waiting at most 1 s for its lock; what it then sees."""
    if engine == "pg":
        with pg_admin(stack) as conn:
            conn.execute("SET lock_timeout = '1s'")
            conn.execute(f"UPDATE {table} SET v = 'other'")
            return str(conn.execute(f"SELECT v FROM {table}").fetchone()[0])
    assert stack.mysql is not None
    with stack.mysql.admin() as conn, conn.cursor() as cur:
        cur.execute("SET SESSION innodb_lock_wait_timeout = 1")
        cur.execute(f"UPDATE app.{table} SET v = 'other'")
        conn.commit()
        cur.execute(f"SELECT v FROM app.{table}")
        return str(cur.fetchone()[0])


def test_a_failed_invocation_releases_its_locks_when_it_ends(
    stack: Stack, engine: str, table: str
) -> None:
    """The handler updates a row in a transaction and raises. While its environment is frozen,
    another session updates the same row at once (its lock went with the invocation: the
    connection was closed, the server rolled back), and the failed write is nowhere; the next
    invocation of the environment logs in again and commits."""
    insert(stack, engine, table)
    env = {
        **{k: v for k, v in stack.env.items() if k != "IAMDB_THROTTLE_TABLE"},
        "SLOTS_ENGINE": engine,
        "TABLE": table if engine == "pg" else f"app.{table}",
    }
    with Environment(FAILING, env, layer=LAYER) as fn:
        failed = fn.invoke("failed", TIMEOUT)
        assert not failed.ok and failed.error == "RuntimeError", failed
        started = time.monotonic()
        assert update_now(stack, engine, table) == "other"
        assert time.monotonic() - started < 1.0  # no lock to wait for
        done = fn.invoke("committed", TIMEOUT)
        assert done.ok and done.value == "committed", done
