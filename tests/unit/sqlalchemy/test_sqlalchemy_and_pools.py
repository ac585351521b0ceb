"""iamdb.sqlalchemy's engines and iamdb.pg_pool()'s pools as built, before any connection.

URLs, the Lambda defaults and what overrides them, and the configuration mistakes refused
with ConfigError; the hosts do not exist, and nothing here connects.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool, StaticPool

import iamdb
from iamdb.sqlalchemy import attach, create_async_engine, create_engine
from tests.registries import Install, own_registry_fixture  # noqa: F401  (own_registry)

PG_HOST = "mydb.abcdefghijkl.us-east-1.rds.amazonaws.com"
MYSQL_HOST = "mysql.abcdefghijkl.us-east-1.rds.amazonaws.com"
ENV = {
    "IAMDB_PG_HOST": PG_HOST,
    "IAMDB_PG_USER": "app",
    "IAMDB_PG_REPORTING_HOST": PG_HOST,
    "IAMDB_PG_REPORTING_USER": "reporter",
    "IAMDB_PG_REPORTING_DBNAME": "reports",
    "IAMDB_MYSQL_HOST": MYSQL_HOST,
    "IAMDB_MYSQL_USER": "app",
}


@pytest.fixture(autouse=True)
def registry(own_registry: Install) -> None:
    own_registry(ENV)


def test_urls_come_from_the_settings_and_hold_no_password() -> None:
    assert str(create_engine("pg").url) == f"postgresql+psycopg://app@{PG_HOST}:5432/app"
    named = create_engine("pg", "Reporting").url
    assert str(named) == f"postgresql+psycopg://reporter@{PG_HOST}:5432/reports"
    assert str(create_engine("mysql").url) == f"mysql+pymysql://app@{MYSQL_HOST}:3306"
    assert create_engine("pg").url.password is None


def test_lambda_defaults_and_what_overrides_them() -> None:
    pool: Any = create_engine("pg").pool
    assert (pool.size(), pool._max_overflow, pool._pre_ping, pool._recycle) == (1, 0, False, 300)
    pool = create_engine("pg", pool_size=5, pool_pre_ping=False, pool_recycle=60).pool
    assert (pool.size(), pool._max_overflow, pool._pre_ping, pool._recycle) == (5, 0, False, 60)
    pool = create_engine("pg", poolclass=NullPool).pool  # no sizes for it: no TypeError
    assert isinstance(pool, NullPool) and (pool._pre_ping, pool._recycle) == (False, 300)
    given = StaticPool(lambda: None)
    assert create_engine("pg", pool=given).pool is given
    pool = create_async_engine("pg").sync_engine.pool
    assert (pool.size(), pool._max_overflow, pool._pre_ping, pool._recycle) == (1, 0, False, 300)


def test_configuration_mistakes_are_config_errors_naming_what_to_fix(
    monkeypatch: pytest.MonkeyPatch, own_registry: Install
) -> None:
    cases: list[tuple[Any, str]] = [
        (lambda: create_engine("postgres"), "engine"),  # type: ignore[arg-type]
        (lambda: create_async_engine("mysql"), "engine"),
        (lambda: create_engine("pg", "missing"), "IAMDB_PG_MISSING_HOST"),
        (lambda: attach("postgresql://", "pg"), "engine"),  # type: ignore[type-var]
        (lambda: attach(sa.create_engine("sqlite://"), "pg"), "engine"),
        (lambda: attach(sa.create_engine(f"postgresql+psycopg://app@{PG_HOST}:6432"), "pg"),
         "IAMDB_PG_PORT"),
        (lambda: attach(sa.create_engine(f"mysql+pymysql://app@{MYSQL_HOST}/app"), "mysql"),
         "IAMDB_MYSQL_DBNAME"),  # not set: no database
        (lambda: attach(sa.create_engine("mysql+pymysql:///?charset=latin1"), "mysql"), "engine"),
        (lambda: iamdb.pg_pool(kwargs=lambda: {}), "kwargs"),
        (lambda: iamdb.pg_async_pool(conninfo="host=x"), "conninfo"),
        (lambda: iamdb.pg_pool("missing"), "IAMDB_PG_MISSING_HOST"),
    ]  # fmt: skip
    for make, variable in cases:
        with pytest.raises(iamdb.ConfigError) as info:
            make()
        assert info.value.variable == variable


def test_a_pool_opens_without_connecting_and_sizes_for_one_invocation() -> None:
    with iamdb.pg_pool() as pool:
        assert (pool.min_size, pool.max_size, pool.timeout, pool.name) == (0, 1, 10.0, "iamdb-pg")
        assert pool.get_stats()["pool_size"] == 0
    with iamdb.pg_pool("reporting", min_size=0, max_size=3, timeout=2) as pool:
        assert (pool.max_size, pool.timeout, pool.name) == (3, 2, "iamdb-pg:reporting")
    bigger = iamdb.pg_pool(min_size=2, open=False)  # max_size follows a larger min_size
    assert bigger.max_size == 2
    assert iamdb.pg_async_pool().closed  # an asyncio pool opens in its loop: not here
