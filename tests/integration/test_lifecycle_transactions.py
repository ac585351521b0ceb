"""No transaction crosses an invocation, played as Lambda plays it (tests/lifecycle.py).

Each environment is a process frozen between invocations. A handler begins a transaction,
writes a row and raises before committing; the next invocation of the same environment must
see a connection with no transaction open, its own writes must commit, and the failed
invocation's row must never become visible, whatever the flavour: singletons (PostgreSQL,
MySQL, DSQL), ``iamdb.aio``, ``pg_pool`` and SQLAlchemy. Rows are read from outside, by the
servers' superusers.
"""

from __future__ import annotations

import uuid

import pytest

from devstack.postgres import SUPERUSER
from devstack.stack import Stack
from tests.integration.conftest import pg_admin
from tests.lifecycle import Environment

pytestmark = pytest.mark.integration


def rows(stack: Stack, engine: str, table: str) -> set[str]:
    """What other sessions see in ``table``: committed rows only."""
    if engine == "mysql":
        assert stack.mysql is not None
        with stack.mysql.admin() as conn, conn.cursor() as cur:
            cur.execute(f"SELECT v FROM app.{table}")
            return {r[0] for r in cur.fetchall()}
    with pg_admin(stack) as conn:
        return {r[0] for r in conn.execute(f"SELECT v FROM {table}").fetchall()}


SINGLETONS = r"""
import iamdb

def write(conn, engine, table, value):
    if engine == "mysql":
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO {table} (v) VALUES (%s)", (value,))
    else:
        conn.execute(f"INSERT INTO {table} (v) VALUES (%s)", (value,))

def handler(event, context):
    iamdb.set_lambda_context(context) if event.get("context") else None
    engine, table = event["engine"], event["table"]
    conn = {"pg": iamdb.get_pg, "mysql": iamdb.get_mysql}[engine]()
    begin = event.get("begin")
    if begin == "method":
        conn.begin()                       # PyMySQL: a transaction whatever autocommit says
    elif begin == "sql":
        conn.execute("BEGIN") if engine == "pg" else conn.query("START TRANSACTION")
    if event.get("fail_statement"):
        try:
            conn.execute("SELECT 1/0")     # the transaction is now failed (PostgreSQL)
        except Exception:
            pass
    write(conn, engine, table, event["value"])
    if event.get("raise"):
        raise RuntimeError("the handler failed before committing")
    if begin:
        conn.commit()
    return iamdb.info(engine).logins
"""


@pytest.mark.parametrize(
    ("engine", "begin", "context"),
    [
        ("mysql", "method", True),
        ("mysql", "method", False),  # without set_lambda_context: Lambda's trace id tells
        ("mysql", "sql", True),
        ("pg", "sql", True),
        ("pg", "sql", False),
    ],
)
def test_an_uncommitted_write_never_reaches_the_next_invocation(
    stack: Stack, stack_env: dict[str, str], table: str, engine: str, begin: str, context: bool
) -> None:
    if engine == "mysql" and stack.mysql is None:
        pytest.skip("no MariaDB")
    event = {"engine": engine, "table": table, "context": context}
    with Environment(SINGLETONS, stack_env) as env:
        failed = env.invoke({**event, "begin": begin, "value": "failed", "raise": True})
        assert not failed.ok and failed.error == "RuntimeError"
        # The next invocation writes in autocommit: committed, not swallowed by the old one.
        plain = env.invoke({**event, "value": "autocommit"})
        # And one that begins and commits its own transaction: commits only its own row.
        own = env.invoke({**event, "begin": begin, "value": "own"})
    assert plain.ok and own.ok, (plain, own)
    assert rows(stack, engine, table) == {"autocommit", "own"}


def test_a_failed_transaction_is_not_handed_to_the_next_invocation(
    stack: Stack, stack_env: dict[str, str], table: str
) -> None:
    """PostgreSQL: BEGIN, a failing statement, then the handler raised: before, every later
    invocation failed with InFailedSqlTransaction until the idle ping replaced it."""
    event = {"engine": "pg", "table": table, "begin": "sql", "fail_statement": True}
    with Environment(SINGLETONS, stack_env) as env:
        assert not env.invoke({**event, "value": "x", "raise": True}).ok
        outcomes = [
            env.invoke({"engine": "pg", "table": table, "value": f"v{i}"}) for i in range(3)
        ]
    assert all(o.ok for o in outcomes), outcomes
    assert rows(stack, "pg", table) == {"v0", "v1", "v2"}


DSQL = r"""
import iamdb

def handler(event, context):
    iamdb.set_lambda_context(context)
    conn = iamdb.get_dsql()
    if event.get("begin"):
        conn.execute("BEGIN")
    conn.execute(f"INSERT INTO {event['table']} (v) VALUES (%s)", (event["value"],))
    if event.get("raise"):
        raise RuntimeError("failed before committing")
"""


def test_dsql_too(stack: Stack, stack_env: dict[str, str]) -> None:
    import psycopg

    assert stack.dsql is not None
    table = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(
        host=str(stack.dsql.workdir), port=stack.dsql.port, user=SUPERUSER, dbname="postgres",
        autocommit=True,
    ) as admin:  # fmt: skip
        admin.execute(f"CREATE TABLE {table} (v text)")
        admin.execute(f"GRANT ALL ON {table} TO PUBLIC")
        with Environment(DSQL, stack_env) as env:
            assert not env.invoke({"table": table, "begin": True, "value": "x", "raise": True}).ok
            assert env.invoke({"table": table, "value": "y"}).ok
        seen = {r[0] for r in admin.execute(f"SELECT v FROM {table}").fetchall()}
    assert seen == {"y"}


CONTEXT_MANAGER = r"""
import iamdb

def handler(event, context):
    iamdb.set_lambda_context(context)
    with iamdb.get_pg() as conn:  # psycopg's idiom: ends the transaction, iamdb keeps the conn
        conn.execute(f"INSERT INTO {event['table']} (v) VALUES (%s)", (event["value"],))
    info = iamdb.info("pg")
    return [info.logins, info.reconnects, iamdb.get_pg().closed]
"""


def test_with_get_pg_commits_and_keeps_the_connection(
    stack: Stack, stack_env: dict[str, str], table: str
) -> None:
    with Environment(CONTEXT_MANAGER, stack_env) as env:
        outcomes = [env.invoke({"table": table, "value": f"v{i}"}) for i in range(3)]
    assert [o.value for o in outcomes] == [[1, 0, False]] * 3
    assert rows(stack, "pg", table) == {"v0", "v1", "v2"}


AIO = r"""
import asyncio
import iamdb
from iamdb import aio

loop = asyncio.new_event_loop()  # module-level: kept across invocations

async def main(event):
    conn = await aio.get_pg()
    if event.get("begin"):
        await conn.execute("BEGIN")
    await conn.execute(f"INSERT INTO {event['table']} (v) VALUES (%s)", (event["value"],))
    if event.get("raise"):
        raise RuntimeError("failed before committing")

def handler(event, context):
    iamdb.set_lambda_context(context)
    loop.run_until_complete(main(event))
"""


def test_aio_on_a_module_level_loop(stack: Stack, stack_env: dict[str, str], table: str) -> None:
    """The transaction left open, and the backend killed while frozen: the dead connection was
    handed out before (its check skipped while a transaction was open)."""
    assert stack.pg is not None
    with Environment(AIO, stack_env) as env:
        assert not env.invoke({"table": table, "begin": True, "value": "x", "raise": True}).ok
        stack.pg.kill_connections("iamdb_app")
        served = env.invoke({"table": table, "value": "y"})
    assert served.ok, served
    assert rows(stack, "pg", table) == {"y"}


POOL = r"""
import iamdb

pool = iamdb.pg_pool()  # max_size 1

def handler(event, context):
    iamdb.set_lambda_context(context)
    if event.get("leak"):
        conn = pool.getconn()             # never given back
        conn.execute(f"INSERT INTO {event['table']} (v) VALUES (%s)", (event["value"],))
        raise RuntimeError("failed before committing or putconn()")
    with pool.connection() as conn:
        conn.execute(f"INSERT INTO {event['table']} (v) VALUES (%s)", (event["value"],))
"""


def test_pg_pool_takes_back_a_connection_left_in_a_transaction(
    stack: Stack, stack_env: dict[str, str], table: str
) -> None:
    with Environment(POOL, stack_env) as env:
        assert not env.invoke({"table": table, "leak": True, "value": "x"}).ok
        served = env.invoke({"table": table, "value": "y"}, timeout=6.0)
    assert served.ok and served.elapsed < 3.0, served  # no wait for the leaked slot
    assert rows(stack, "pg", table) == {"y"}


SQLALCHEMY = r"""
import sqlalchemy as sa
from sqlalchemy.orm import Session
import iamdb
from iamdb.sqlalchemy import create_engine

engine = create_engine(ENGINE)            # pool_size 1, no overflow
forgotten = []

def handler(event, context):
    iamdb.set_lambda_context(context)
    insert = sa.text(f"INSERT INTO {event['table']} (v) VALUES (:v)")
    if event.get("leak"):
        session = Session(engine)         # never closed: it keeps the pool's one connection
        forgotten.append(session)
        session.execute(insert, {"v": event["value"]})
        raise RuntimeError("failed before committing")
    if event.get("reuse"):                # the forgotten Session itself, in a new invocation
        session = forgotten[0]
        session.execute(insert, {"v": event["value"]})
        session.commit()
        return "committed"
    with Session(engine) as session, session.begin():
        session.execute(insert, {"v": event["value"]})
    return "committed"
"""


@pytest.mark.parametrize("engine", ["pg", "mysql"])
def test_sqlalchemy_session_never_closed(
    stack: Stack, stack_env: dict[str, str], table: str, engine: str
) -> None:
    if engine == "mysql" and stack.mysql is None:
        pytest.skip("no MariaDB")
    init = SQLALCHEMY.replace("ENGINE", repr(engine))
    with Environment(init, stack_env) as env:
        # A Session never closed, left in a transaction, is used again by the next invocation:
        # its statement is refused (the old transaction rolled back), nothing is committed.
        assert not env.invoke({"table": table, "leak": True, "value": "x"}).ok
        reused = env.invoke({"table": table, "reuse": True, "value": "z"})
        assert not reused.ok and reused.iamdb, reused
        assert "began in an earlier invocation" in reused.message
        # The pool's one connection is not lost to it: the next invocation is served at once.
        served = env.invoke({"table": table, "value": "y"})
        assert served.ok and served.elapsed < 3.0, served  # before: 30 s for the pool
        # Nor to a forgotten Session that is never used again.
        assert not env.invoke({"table": table, "leak": True, "value": "x2"}).ok
        again = env.invoke({"table": table, "value": "y2"})
        assert again.ok and again.elapsed < 3.0, again
    assert rows(stack, engine, table) == {"y", "y2"}
