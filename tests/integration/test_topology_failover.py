"""When the writer moves: Aurora-like failovers and Blue/Green switchovers, played on devstack's
data-account clusters (devstack.cluster) with Lambda environments as processes
(tests/lifecycle.py).

Each cluster is two real servers (PostgreSQL or MariaDB) behind a writer endpoint and a reader
endpoint whose "DNS" (a TCP forwarder) follows a move only after a delay, as the cluster
endpoint's 5 s TTL and the caches after it do. Until then the writer endpoint leads to the old
writer, now read-only. The handlers write a row and say which server took it; the rows are then
counted on each server, so "nothing written to the read-only server" is checked on the servers
themselves, not on what the handler believed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from devstack.cluster import Cluster, Instance
from devstack.stack import Stack
from tests.conftest import mariadb_available
from tests.lifecycle import Environment, Outcome

pytestmark = pytest.mark.integration

ENGINES = ["pg", "mysql"]
DNS_DELAY = 2.0  # seconds the writer endpoint still leads to the old writer

HANDLER = r"""
import iamdb

def handler(event, context):
    iamdb.set_lambda_context(context)
    engine, name, tag = event["engine"], event.get("name", "aurora"), event["tag"]
    conn = {"pg": iamdb.get_pg, "mysql": iamdb.get_mysql}[engine](name)
    if engine == "pg":
        if tag is not None:
            conn.execute("INSERT INTO hits (tag) VALUES (%s)", (tag,))
        return conn.execute("SELECT current_setting('port')::int").fetchone()[0]
    with conn.cursor() as cur:
        if tag is not None:
            cur.execute("INSERT INTO hits (tag) VALUES (%s)", (tag,))
        cur.execute("SELECT @@port")
        return cur.fetchone()[0]
"""


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    if request.param == "mysql" and not mariadb_available():
        pytest.skip("MariaDB is not installed here")
    return str(request.param)


@pytest.fixture
def cluster(stack_env: dict[str, str], stack: Stack, engine: str) -> Iterator[Cluster]:
    found = stack.aurora_pg if engine == "pg" else stack.aurora_mysql
    if found is None:
        pytest.skip("devstack runs without its data account")
    found.reset()
    for instance in found.instances:
        _sql(engine, instance, "DROP TABLE IF EXISTS hits")
        _sql(engine, instance, "CREATE TABLE hits (tag VARCHAR(64))")
        if engine == "pg":
            _sql(engine, instance, "GRANT ALL ON hits TO iamdb_app")
    yield found
    found.reset()


@pytest.fixture
def environments(stack_env: dict[str, str]) -> Iterator[list[Environment]]:
    made: list[Environment] = []
    yield made
    for env in made:
        env.close()


def _environment(made: list[Environment], env: dict[str, str], **more: str) -> Environment:
    environment = Environment(HANDLER, {**env, **more})
    made.append(environment)
    return environment


def _write(env: Environment, engine: str, tag: str | None, timeout: float = 10.0) -> Outcome:
    return env.invoke({"engine": engine, "tag": tag}, timeout=timeout)


def test_invocations_in_the_read_only_window_wait_then_write_to_the_new_writer(
    stack_env: dict[str, str], cluster: Cluster, engine: str, environments: list[Environment]
) -> None:
    old, new = cluster.writer, cluster.reader
    warm = [_environment(environments, stack_env) for _ in range(2)]
    for i, env in enumerate(warm):
        assert _write(env, engine, f"before-{i}").value == old.db.port

    cluster.fail_over(dns_delay=DNS_DELAY)
    for i, env in enumerate(warm):
        env.start({"engine": engine, "tag": f"window-{i}"}, timeout=10.0)
    cold = _environment(environments, stack_env)  # a cold start inside the window
    cold.start({"engine": engine, "tag": "window-cold"}, timeout=10.0)
    outcomes = [env.result() for env in (*warm, cold)]

    dns = cluster.at("dns")
    for outcome in outcomes:
        assert outcome.ok, outcome.message
        assert outcome.value == new.db.port and outcome.within_deadline
        assert outcome.started < dns <= outcome.ended  # it waited for the endpoint to follow
    assert _tags(engine, old) == {"before-0", "before-1"}
    assert _tags(engine, new) == {"window-0", "window-1", "window-cold"}
    assert outcomes[0].ended - dns < 3.0  # the DNS delay, then about one login


def test_an_invocation_whose_deadline_ends_in_the_window_says_the_server_is_read_only(
    stack_env: dict[str, str], cluster: Cluster, engine: str, environments: list[Environment]
) -> None:
    env = _environment(environments, stack_env)
    assert _write(env, engine, "before").ok
    cluster.fail_over(dns_delay=6.0)
    outcome = _write(env, engine, "too-soon", timeout=2.0)
    assert not outcome.ok and outcome.iamdb and outcome.error == "ConnectError"
    assert "does not take writes" in outcome.message
    assert "transaction_read_only = on" in outcome.message or "read_only = 1" in outcome.message
    assert "attempts over" in outcome.message and outcome.within_deadline
    assert "too-soon" not in _tags(engine, cluster.reader) | _tags(engine, cluster.writer)


def test_a_connection_that_found_the_server_read_only_is_replaced_and_the_write_not_rerun(
    stack_env: dict[str, str], cluster: Cluster, engine: str, environments: list[Environment]
) -> None:
    """The old writer stops taking writes while its sessions stay (the endpoint moves at once):
    the handler's INSERT fails there, and the next invocation gets a connection to the new
    writer. iamdb never runs the failed INSERT again."""
    old, new = cluster.writer, cluster.reader
    env = _environment(environments, stack_env)
    assert _write(env, engine, "before").value == old.db.port
    cluster.fail_over(dns_delay=0.0, end_sessions=False)
    failed = _write(env, engine, "refused")
    assert not failed.ok and not failed.iamdb  # the driver's own read-only error, unchanged
    assert failed.error in ("ReadOnlySqlTransaction", "OperationalError", "InternalError")
    after = _write(env, engine, "after")
    assert after.ok and after.value == new.db.port
    assert _tags(engine, old) == {"before"} and _tags(engine, new) == {"after"}


def test_the_reader_endpoint_is_a_named_instance_without_the_writer_check(
    stack_env: dict[str, str], cluster: Cluster, engine: str, environments: list[Environment]
) -> None:
    env = _environment(environments, stack_env)
    read = env.invoke({"engine": engine, "name": "reader", "tag": None})
    assert read.ok and read.value == cluster.reader.db.port
    write = env.invoke({"engine": engine, "name": "reader", "tag": "misplaced"})
    assert not write.ok and not write.iamdb  # the server's refusal, as the handler wrote it


def test_a_blue_green_switchover_serves_warm_environments_through_stale_dns(
    stack_env: dict[str, str], stack: Stack, cluster: Cluster, engine: str,
    environments: list[Environment],
) -> None:  # fmt: skip
    """During the window, the production name still leads to the old blue, renamed: it
    refuses the token (signed for the production name) that it accepted minutes ago. Warm
    environments keep that token and try again until DNS leads to green, which now answers
    to the production name."""
    blue, green = cluster.writer, cluster.reader
    cluster.stage_green()
    warm = [_environment(environments, stack_env) for _ in range(2)]
    for i, env in enumerate(warm):
        assert _write(env, engine, f"blue-{i}").value == blue.db.port
    seen = len(stack.verifier.events)

    cluster.switch_over(dns_delay=DNS_DELAY)
    for i, env in enumerate(warm):
        env.start({"engine": engine, "tag": f"green-{i}"}, timeout=10.0)
    outcomes = [env.result() for env in warm]

    for outcome in outcomes:
        assert outcome.ok, outcome.message
        assert outcome.value == green.db.port and outcome.ended >= cluster.at("dns")
    events = list(stack.verifier.events)[seen:]
    assert any(e.reason == "wrong host" and e.server == blue.server for e in events)
    assert [e.ok for e in events if e.server == green.server] == [True, True]
    assert _tags(engine, green) == {"green-0", "green-1"}
    assert _tags(engine, blue) == {"blue-0", "blue-1"}


# -- the servers' own view -------------------------------------------------------------------


def _sql(engine: str, instance: Instance, statement: str) -> list[Any]:
    """Run ``statement`` on ``instance`` as its administrator, in database ``app``."""
    db: Any = instance.db
    if engine == "pg":
        import psycopg

        with psycopg.connect(
            host=str(db.workdir),
            port=db.port,
            user="postgres",
            dbname="app",
            autocommit=True,
            options="-c default_transaction_read_only=off",
        ) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []
    with db.admin() as conn, conn.cursor() as cur:
        cur.execute("USE app")
        cur.execute(statement)
        return list(cur.fetchall())


def _tags(engine: str, instance: Instance) -> set[str]:
    """The tags the rows on ``instance`` carry (what it was really given to write)."""
    return {row[0] for row in _sql(engine, instance, "SELECT tag FROM hits")}
