"""iamdb.info() against devstack's real servers: what it reports follows what really happened."""

from __future__ import annotations

import time
from typing import Any

import pytest

import iamdb
from devstack.stack import Stack

pytestmark = pytest.mark.integration


def _select_one(engine: str, conn: Any) -> None:
    if engine == "pg":
        conn.execute("SELECT 1")
    else:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")


@pytest.mark.parametrize("engine", ["pg", "mysql"])
def test_info_follows_login_reuse_and_reconnect(
    stack: Stack, stack_env: dict[str, str], engine: str
) -> None:
    get = iamdb.get_pg if engine == "pg" else iamdb.get_mysql
    before = iamdb.info(engine)
    assert (before.connected, before.logins, before.last_login, before.token_age_seconds) == (
        False,
        0,
        None,
        None,
    )

    started = time.time()
    _select_one(engine, get())
    first = iamdb.info(engine)
    assert first.connected and not first.reused
    assert (first.logins, first.tokens_signed, first.reconnects) == (1, 1, 0)
    assert first.last_login is not None and started <= first.last_login <= time.time()
    assert first.token_age_seconds is not None and 0 <= first.token_age_seconds < 60

    _select_one(engine, get())
    assert iamdb.info(engine).reused

    server = stack.pg if engine == "pg" else stack.mysql
    assert server is not None and server.kill_connections("iamdb_app") >= 1
    time.sleep(0.2)
    _select_one(engine, get())
    after = iamdb.info(engine)
    assert not after.reused
    # a new login with the token the server already accepted: nothing new signed
    assert (after.logins, after.tokens_signed, after.reconnects) == (2, 1, 1)


def test_info_on_mongo_counts_the_login_and_the_credentials_age(
    stack_env: dict[str, str],
) -> None:
    assert not iamdb.info("mongo").connected
    iamdb.get_mongo().admin.command("ping")
    iamdb.get_mongo()
    info = iamdb.info("mongo")
    assert info.connected and info.reused and info.logins == 1
    assert info.token_age_seconds is not None and 0 <= info.token_age_seconds < 60


def test_named_instances_are_reported_apart(stack_env: dict[str, str]) -> None:
    iamdb.get_pg()
    assert iamdb.info("pg").logins == 1
    assert iamdb.info("pg", "Reporting") == iamdb.info("pg", "reporting")
    assert iamdb.info("pg", "reporting").logins == 0
