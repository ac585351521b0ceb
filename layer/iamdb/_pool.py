"""psycopg_pool pools whose every new connection is an iamdb IAM login.

psycopg_pool makes each connection with ``connection_class.connect``. The class iamdb gives it
makes them with the instance's :class:`~iamdb._login.Login`, the one behind ``get_pg()``: the
same token cache, TLS settings, permits (none for the token the server last accepted),
refusal retries and errors. psycopg_pool's callable ``kwargs`` could hand psycopg a current
token, but psycopg would then log in on its own: a permit for every connection, a refused
token kept until it ages out, the pool's backoff instead of iamdb's retries, and psycopg's
errors (whose ``pgconn`` holds the token) instead of iamdb's.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from iamdb import _registry
from iamdb._config import SQL_SUFFIXES
from iamdb._env import instance_prefix
from iamdb._errors import requires
from iamdb.errors import ConfigError

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

    from iamdb._config import SqlConfig

# Where the pool's connections come from is iamdb's business.
_REFUSED = ("conninfo", "kwargs", "connection_class")


def pg_pool(name: str | None = None, **pool_kwargs: Any) -> ConnectionPool[Any]:
    """A ``psycopg_pool.ConnectionPool`` for ``IAMDB_PG_*`` (``IAMDB_PG_<NAME>_*`` when named)."""
    with requires("pool", instance_prefix("pg", name, SQL_SUFFIXES) + "HOST"):
        import psycopg
        from psycopg_pool import ConnectionPool

    class IamDbConnection(psycopg.Connection[Any]):
        """What the pool connects with: an iamdb login (its conninfo and kwargs are empty)."""

        @classmethod
        def connect(  # type: ignore[override]  # a psycopg.Connection, made by iamdb
            cls, conninfo: str = "", **kwargs: Any
        ) -> psycopg.Connection[Any]:
            login = _registry.default.login("pg", name)  # anew: iamdb.reset() applies
            try:
                conn: psycopg.Connection[Any] = login.connect(autocommit=False)
            finally:
                login.probe.flush()  # one EMF record for what this login did
            return conn

    kwargs = _kwargs(name, pool_kwargs, ConnectionPool.check_connection, open=True)
    return ConnectionPool(connection_class=IamDbConnection, **kwargs)


def pg_async_pool(name: str | None = None, **pool_kwargs: Any) -> AsyncConnectionPool[Any]:
    """A ``psycopg_pool.AsyncConnectionPool`` for ``IAMDB_PG_*``: :func:`pg_pool`'s rules,
    with psycopg's ``AsyncConnection``; waits for permits do not block the event loop.

    Not opened (``await pool.open()``, or ``async with``): it belongs to the running loop.
    """
    with requires("pool", instance_prefix("pg", name, SQL_SUFFIXES) + "HOST"):
        import psycopg
        from psycopg_pool import AsyncConnectionPool

    from iamdb._pg import PgDriver

    connect = functools.partial(PgDriver().connect_async, autocommit=False)

    class IamDbAsyncConnection(psycopg.AsyncConnection[Any]):
        """What the pool connects with: an iamdb login (its conninfo and kwargs are empty)."""

        @classmethod
        async def connect(  # type: ignore[override]  # a psycopg.AsyncConnection, by iamdb
            cls, conninfo: str = "", **kwargs: Any
        ) -> psycopg.AsyncConnection[Any]:
            login = _registry.default.login("pg", name)
            try:
                conn: psycopg.AsyncConnection[Any] = await login.connect_async(connect)
            finally:
                login.probe.flush()
            return conn

    kwargs = _kwargs(name, pool_kwargs, AsyncConnectionPool.check_connection, open=False)
    return AsyncConnectionPool(connection_class=IamDbAsyncConnection, **kwargs)


def _kwargs(name: str | None, given: dict[str, Any], check: Any, *, open: bool) -> dict[str, Any]:
    """The pool's arguments: Lambda's defaults under the caller's; ConfigError first."""
    for key in _REFUSED:
        if key in given:
            raise ConfigError(
                key,
                "iamdb makes the pool's connections from IAMDB_PG_*: leave it out, and set "
                "connection attributes (autocommit, row_factory, prepare_threshold) in "
                "configure=",
            )
    cfg: SqlConfig = _registry.default.login("pg", name).cfg  # ConfigError before the pool
    min_size = given.get("min_size", 0)
    return {
        "min_size": 0,  # opening makes no connection: the first checkout logs in
        "max_size": max(1, min_size),  # one invocation at a time per environment
        "open": open,
        "check": check,  # psycopg_pool's round trip at checkout: the socket may have died frozen
        "timeout": 2.0 * cfg.connect_timeout,  # as long as get_pg() waits for a login
        "name": f"iamdb-{cfg.label}",
        **given,
    }
