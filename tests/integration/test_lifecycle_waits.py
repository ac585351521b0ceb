"""Every wait ends by the invocation's deadline, and a thawed environment is served when a fresh
connection would work: played as Lambda plays it (tests/lifecycle.py).

Environments are processes frozen between invocations; a :class:`~tests.lifecycle.Relay` in
front of a server plays the network path: it forgets the flows it carried (a NAT gateway that
dropped them while the environment was frozen), takes new connections and never answers (a
server too slow to take a login), or dribbles the server's bytes. Each invocation must end
(served, or with a clear ``IamDbError``) before its context's time is up: on Lambda, anything
later is "Task timed out" and an environment reset.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from devstack.stack import Stack
from tests.lifecycle import Environment, Relay

pytestmark = pytest.mark.integration

ENGINES = ["pg", "mysql"]

GETTERS = r"""
import asyncio, time
import iamdb
from iamdb import aio

loop = asyncio.new_event_loop()

def use(flavour, engine):
    if flavour == "aio":
        async def go():
            conn = await aio.get_pg()
            return (await (await conn.execute("SELECT 1")).fetchone())[0]
        return loop.run_until_complete(go())
    if flavour == "sqlalchemy":
        import sqlalchemy as sa
        with ENGINES[engine].connect() as conn:
            return conn.execute(sa.text("SELECT 1")).scalar()
    if flavour == "pool":
        with POOL.connection() as conn:
            return conn.execute("SELECT 1").fetchone()[0]
    conn = {"pg": iamdb.get_pg, "mysql": iamdb.get_mysql}[engine]()
    if engine == "mysql":
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            return cur.fetchone()[0]
    return conn.execute("SELECT 1").fetchone()[0]

ENGINES = {}
POOL = None

def handler(event, context):
    global POOL
    iamdb.set_lambda_context(context)
    flavour, engine = event.get("flavour", "singleton"), event["engine"]
    if flavour == "sqlalchemy" and engine not in ENGINES:
        from iamdb.sqlalchemy import create_engine
        ENGINES[engine] = create_engine(engine)
    if flavour == "pool" and POOL is None:
        POOL = iamdb.pg_pool()
    return use(flavour, engine)
"""


def routed(stack_env: dict[str, str], engine: str, relay: Relay, **more: str) -> dict[str, str]:
    """The environment with ``engine``'s socket going through ``relay`` (tokens still signed
    for the real endpoint name and port)."""
    prefix = f"IAMDB_{engine.upper()}_"
    real = stack_env[prefix + "PORT"]
    return {
        **stack_env,
        prefix + "PORT": str(relay.port),
        prefix + "IAM_HOST": f"{stack_env[prefix + 'IAM_HOST']}:{real}",
        **more,
    }


@pytest.fixture
def relays(stack: Stack) -> Iterator[dict[str, Relay]]:
    made: dict[str, Relay] = {}
    for engine, server in (("pg", stack.pg), ("mysql", stack.mysql)):
        if server is not None:
            made[engine] = Relay(server.port)
    yield made
    for relay in made.values():
        relay.close()


# -- the liveness check on a silently dead path ----------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_a_path_that_died_while_frozen_is_replaced_within_the_deadline(
    stack_env: dict[str, str], relays: dict[str, Relay], engine: str
) -> None:
    """The idle ping waited for ever before (40 s with 5 s left); now it ends by the deadline
    and a new connection (through a new flow) serves the invocation."""
    if engine not in relays:
        pytest.skip("no MariaDB")
    relay = relays[engine]
    env = routed(stack_env, engine, relay, IAMDB_HEALTHCHECK_IDLE_SECONDS="1")
    with Environment(GETTERS, env) as lam:
        assert lam.invoke({"engine": engine}).value == 1
        relay.silence()  # the NAT forgot the flow while the environment was frozen
        time.sleep(1.2)
        served = lam.invoke({"engine": engine}, timeout=5.0)
    assert served.ok and served.value == 1 and served.within_deadline, served


@pytest.mark.parametrize("engine", ENGINES)
def test_a_dead_path_and_a_server_that_never_answers_end_by_the_deadline(
    stack_env: dict[str, str], relays: dict[str, Relay], engine: str
) -> None:
    """Before: 5.0 s with 3 s left (the connect timeout, whatever the time left)."""
    if engine not in relays:
        pytest.skip("no MariaDB")
    relay = relays[engine]
    env = routed(stack_env, engine, relay, IAMDB_HEALTHCHECK_IDLE_SECONDS="1")
    with Environment(GETTERS, env) as lam:
        assert lam.invoke({"engine": engine}).ok
        relay.silence(new=True)  # the old flow is gone, new ones are taken and never answered
        time.sleep(1.2)
        failed = lam.invoke({"engine": engine}, timeout=3.0)
    assert not failed.ok and failed.iamdb and failed.error == "ConnectError", failed
    assert failed.within_deadline, failed
    assert "could not connect" in failed.message and " over " in failed.message


def test_a_dribbling_mysql_server_ends_by_the_deadline(
    stack: Stack, stack_env: dict[str, str], relays: dict[str, Relay]
) -> None:
    """PyMySQL's timeout is per read: before, 11 s with 3 s left."""
    if "mysql" not in relays:
        pytest.skip("no MariaDB")
    relay = relays["mysql"]
    relay.dribble(0.3)  # every byte of the server's greeting 0.3 s apart
    with Environment(GETTERS, routed(stack_env, "mysql", relay)) as lam:
        failed = lam.invoke({"engine": "mysql"}, timeout=3.0)
    assert not failed.ok and failed.iamdb and failed.within_deadline, failed


# -- pool checkouts ---------------------------------------------------------------------------


def test_a_pool_checkout_with_the_server_down_ends_by_the_deadline(
    stack: Stack, stack_env: dict[str, str], relays: dict[str, Relay]
) -> None:
    """pg_pool's checkout waited its own 10 s with 6 s left."""
    relay = relays["pg"]
    with Environment(GETTERS, routed(stack_env, "pg", relay)) as lam:
        assert lam.invoke({"engine": "pg", "flavour": "pool"}).value == 1
        relay.silence(new=True)
        for flow in list(relay._flows):  # the pooled connection dies too
            flow.close()
        failed = lam.invoke({"engine": "pg", "flavour": "pool"}, timeout=6.0)
    assert not failed.ok and failed.iamdb and failed.within_deadline, failed


# -- a thawed environment is served when a fresh connection would work -----------------------


@pytest.mark.parametrize(
    ("engine", "flavour"),
    [
        ("pg", "singleton"),
        ("mysql", "singleton"),
        ("pg", "sqlalchemy"),
        ("mysql", "sqlalchemy"),
        ("pg", "aio"),
        ("pg", "pool"),
    ],
)
def test_a_server_down_at_thaw_and_back_soon_after_serves_the_invocation(
    stack: Stack, stack_env: dict[str, str], engine: str, flavour: str
) -> None:
    """Before: ConnectError after 1-6 ms ("within 5 s") although the server came back 2 s later
    and 6 s were left."""
    server = stack.pg if engine == "pg" else stack.mysql
    if server is None:
        pytest.skip("no MariaDB")
    event = {"engine": engine, "flavour": flavour}
    with Environment(GETTERS, stack_env) as lam:
        assert lam.invoke(event).value == 1
        server.stop()
        try:
            back = threading.Timer(2.0, server.start)
            lam.thaw()
            back.start()
            served = lam.invoke(event, timeout=6.0)
        finally:
            back.join()
    assert served.ok and served.value == 1 and served.within_deadline, served


MONGO = r"""
import asyncio
import iamdb
from iamdb import aio

loop = asyncio.new_event_loop()

async def async_ping():
    client = await aio.get_mongo()
    return (await client.get_default_database().command("ping"))["ok"]

def handler(event, context):
    iamdb.set_lambda_context(context)
    if event.get("aio"):
        return loop.run_until_complete(async_ping())
    return iamdb.get_mongo().get_default_database().command("ping")["ok"]
"""


@pytest.mark.parametrize("asynchronous", [False, True])
def test_mongo_after_its_sockets_died_while_frozen(
    stack: Stack, stack_env: dict[str, str], asynchronous: bool
) -> None:
    """aio.get_mongo() used a dead socket after a freeze (2 of 2 lost); both are served now."""
    assert stack.mongo is not None
    env = {**stack_env, "IAMDB_HEALTHCHECK_IDLE_SECONDS": "1"}
    with Environment(MONGO, env) as lam:
        assert lam.invoke({"aio": asynchronous}).value == 1
        stack.mongo.stop()  # every socket the client holds dies while the environment is frozen
        stack.mongo.start()
        time.sleep(1.2)
        served = lam.invoke({"aio": asynchronous}, timeout=6.0)
    assert served.ok and served.value == 1 and served.within_deadline, served


@pytest.mark.parametrize("asynchronous", [False, True])
def test_mongo_with_the_server_down_ends_by_the_deadline(
    stack: Stack, stack_env: dict[str, str], asynchronous: bool
) -> None:
    """pymongo's serverSelectionTimeoutMS (5 s) ran with 3 s left."""
    assert stack.mongo is not None
    with Environment(MONGO, stack_env) as lam:
        stack.mongo.stop()
        try:
            failed = lam.invoke({"aio": asynchronous}, timeout=3.0)
        finally:
            stack.mongo.start()
    assert not failed.ok and failed.iamdb and failed.within_deadline, failed
