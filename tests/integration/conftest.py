"""Fixtures the integration tests share beyond the stack's (tests/conftest.py): ``secrets``,
which collects every secret iamdb makes during a test (tests/integration/leaks.py), and
``slots_stack``, a devstack of its own whose servers leave the application few connection slots
(tests/integration/test_slots*.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.slots import SLOTS, limit_slots
from devstack.stack import Stack
from tests.conftest import mariadb_available
from tests.integration.leaks import secrets

__all__ = ["secrets", "slots_stack"]


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
