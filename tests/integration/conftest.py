"""Fixtures the integration tests share beyond the stack's (tests/conftest.py): ``secrets``,
which collects every secret iamdb makes during a test (tests/integration/leaks.py), and
``slots_stack``, a devstack of its own whose servers leave the application few connection slots
(tests/integration/test_slots*.py), and ``table``, a fresh table in PostgreSQL's and MariaDB's
``app`` databases, read from outside by the servers' superusers (``pg_admin``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from bench.slots import SLOTS, limit_slots
from devstack.postgres import SUPERUSER
from devstack.stack import Stack
from tests.conftest import mariadb_available
from tests.integration.leaks import secrets

__all__ = ["pg_admin", "secrets", "slots_stack", "table"]


@pytest.fixture(scope="session")
def slots_stack() -> Iterator[Stack]:
    """PostgreSQL and MariaDB leaving the application ``SLOTS`` connections each (PostgreSQL
    keeps 3 more for its superuser, MariaDB one for root); no Mongo peer, no DSQL."""
    stack = Stack(
        max_connections=SLOTS + 3,
        mongo=False,
        dsql=False,
        valkey=False,
        data=False,
        mysql=mariadb_available(),
    )
    stack.start()
    try:
        limit_slots(stack)
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def table(stack: Stack) -> Iterator[str]:
    """A fresh table ``t_<hex> (v text)`` in PostgreSQL's and MariaDB's ``app`` databases."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with pg_admin(stack) as conn:
        conn.execute(f"CREATE TABLE {name} (v text)")
        conn.execute(f"GRANT ALL ON {name} TO iamdb_app")
    if stack.mysql is not None:
        with stack.mysql.admin() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE TABLE app.{name} (v varchar(64))")
    yield name


def pg_admin(stack: Stack, dbname: str = "app") -> Any:
    import psycopg

    assert stack.pg is not None
    return psycopg.connect(
        host=str(stack.pg.workdir),
        port=stack.pg.port,
        user=SUPERUSER,
        dbname=dbname,
        autocommit=True,
    )
