"""psycopg_pool pools whose every new connection is an iamdb IAM login, fit for Lambda.

psycopg_pool makes each connection with ``connection_class.connect``. The class iamdb gives it
makes them with the instance's :class:`~iamdb._sql.login.Login`, the one behind ``get_pg()``: the
same token cache, TLS settings, permits (none for the token the server last accepted),
refusal retries and errors. psycopg_pool's callable ``kwargs`` could hand psycopg a current
token, but psycopg would then log in on its own: a permit for every connection, a refused
token kept until it ages out, the pool's backoff instead of iamdb's retries, and psycopg's
errors (whose ``pgconn`` holds the token) instead of iamdb's.

The pool class is psycopg_pool's with the Lambda lifecycle in mind: a checkout waits at most
until the invocation's deadline (then :class:`~iamdb.errors.ConnectError`, not a
``PoolTimeout`` after the pool's own timeout), the check at checkout is iamdb's ``SELECT 1``
bounded by that deadline, and a connection an earlier invocation took with ``getconn()`` and
never returned while a transaction was open on it is closed (the server rolls it back) and
given back to the pool at the next checkout, with a warning: its writes are never committed,
and its slot is not lost.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from iamdb import _registry
from iamdb._core.deps import requires
from iamdb._core.env import instance_prefix
from iamdb._core.log import logger
from iamdb._sql.config import SQL_SUFFIXES
from iamdb._sql.managed import ping_deadline, refused_write
from iamdb._sql.refusals import pool_exhausted
from iamdb.errors import ConfigError, ConnectError

_GIVE_BACK = (
    "a connection taken with getconn() must be given back with putconn(); "
    "'with pool.connection() as conn:' does it"
)

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

    from iamdb._sql.config import SqlConfig
    from iamdb._sql.login import Login

# Where the pool's connections come from is iamdb's business.
_REFUSED = ("conninfo", "kwargs", "connection_class")


def pg_pool(name: str | None = None, **pool_kwargs: Any) -> ConnectionPool[Any]:
    """A ``psycopg_pool.ConnectionPool`` for ``IAMDB_PG_*`` (``IAMDB_PG_<NAME>_*`` when named)."""
    with requires("pool", instance_prefix("pg", name, SQL_SUFFIXES) + "HOST"):
        from psycopg_pool import ConnectionPool, PoolTimeout

    from iamdb._sql.pg import PgDriver
    from iamdb._sql.pg_classes import connection_classes

    driver = PgDriver()
    base, _ = connection_classes()

    class IamDbConnection(base):  # type: ignore[misc, valid-type]
        """What the pool connects with: an iamdb login (its conninfo and kwargs are empty)."""

        @classmethod
        def connect(  # a psycopg.Connection, made by iamdb
            cls, conninfo: str = "", **kwargs: Any
        ) -> psycopg.Connection[Any]:
            login = _login(name)  # anew: iamdb.reset() applies
            try:
                conn: psycopg.Connection[Any] = login.connect(autocommit=False)
            finally:
                login.probe.flush()  # one EMF record for what this login did
            return conn

    class Pool(ConnectionPool[Any]):
        """psycopg_pool's pool, checkouts bounded by the invocation (see the module)."""

        _taken: dict[int, tuple[Any, str | None]]

        def getconn(self, timeout: float | None = None) -> Any:
            login, wait, invocation = _checkout(name, self.timeout, timeout)
            for conn in _left_behind(self._taken, invocation, driver, login.cfg):
                driver.close(conn)
                super().putconn(conn)  # closed: the pool discards it and may make another
            began = _registry.default.runtime.clock()
            try:
                conn = super().getconn(wait)
            except PoolTimeout:
                failure = _exhausted(login, f"pool {self.name!r}", self.max_size, began)
            else:
                self._taken[id(conn)] = (conn, invocation)
                return conn
            raise failure

        def putconn(self, conn: Any) -> None:
            self._taken.pop(id(conn), None)
            super().putconn(conn)

    def check(conn: Any) -> None:
        """Before a checkout: ``SELECT 1`` by the deadline (the socket may have died frozen);
        a connection that found the server read-only is dropped (the writer moved), and one
        whose idle limit does not fit the invocation is replaced."""
        clock = _registry.default.runtime.clock
        login, wait, _ = _checkout(name, None, None)
        problem = (
            refused_write(driver, conn)
            or _idle_misfit(login, driver, conn)
            or driver.ping(conn, (clock, ping_deadline(clock(), clock() + wait)))
        )
        if problem is not None:
            raise ConnectionError(problem)

    kwargs = _kwargs(name, pool_kwargs, check, open=True)
    pool = Pool(connection_class=IamDbConnection, **kwargs)
    pool._taken = {}
    return pool


def pg_async_pool(name: str | None = None, **pool_kwargs: Any) -> AsyncConnectionPool[Any]:
    """A ``psycopg_pool.AsyncConnectionPool`` for ``IAMDB_PG_*``: :func:`pg_pool`'s rules,
    with psycopg's ``AsyncConnection``; waits for permits do not block the event loop.

    Not opened (``await pool.open()``, or ``async with``): it belongs to the running loop.
    """
    with requires("pool", instance_prefix("pg", name, SQL_SUFFIXES) + "HOST"):
        import asyncio

        from psycopg_pool import AsyncConnectionPool, PoolTimeout

    from iamdb._sql.pg import PgDriver
    from iamdb._sql.pg_classes import connection_classes

    driver = PgDriver()
    _, base = connection_classes()
    connect = functools.partial(driver.connect_async, autocommit=False)

    class IamDbAsyncConnection(base):  # type: ignore[misc, valid-type]
        """What the pool connects with: an iamdb login (its conninfo and kwargs are empty)."""

        @classmethod
        async def connect(  # a psycopg.AsyncConnection, made by iamdb
            cls, conninfo: str = "", **kwargs: Any
        ) -> psycopg.AsyncConnection[Any]:
            login = _login(name)
            try:
                conn: psycopg.AsyncConnection[Any] = await login.connect_async(connect)
            finally:
                login.probe.flush()
            return conn

    class Pool(AsyncConnectionPool[Any]):
        """psycopg_pool's async pool, checkouts bounded by the invocation (see the module)."""

        _taken: dict[int, tuple[Any, str | None]]

        async def getconn(self, timeout: float | None = None) -> Any:
            login, wait, invocation = _checkout(name, self.timeout, timeout)
            for conn in _left_behind(self._taken, invocation, driver, login.cfg):
                driver.finish(conn)
                await super().putconn(conn)
            began = _registry.default.runtime.clock()
            try:
                conn = await super().getconn(wait)
            except PoolTimeout:
                failure = _exhausted(login, f"pool {self.name!r}", self.max_size, began)
            else:
                self._taken[id(conn)] = (conn, invocation)
                return conn
            raise failure

        async def putconn(self, conn: Any) -> None:
            self._taken.pop(id(conn), None)
            await super().putconn(conn)

    async def check(conn: Any) -> None:
        """Before a checkout: ``SELECT 1`` by the deadline (the socket may have died frozen);
        a connection that found the server read-only is dropped (the writer moved), and one
        whose idle limit does not fit the invocation is replaced."""
        problem = refused_write(driver, conn)
        if problem is not None:
            raise ConnectionError(problem)
        login, wait, _ = _checkout(name, None, None)
        problem = _idle_misfit(login, driver, conn)
        if problem is not None:
            raise ConnectionError(problem)
        await asyncio.wait_for(driver.ping_async(conn), ping_deadline(0.0, wait))

    kwargs = _kwargs(name, pool_kwargs, check, open=False)
    pool = Pool(connection_class=IamDbAsyncConnection, **kwargs)
    pool._taken = {}
    return pool


def _login(name: str | None) -> Login[Any]:
    return _registry.default.login("pg", name)


def _checkout(
    name: str | None, configured: float | None, asked: float | None
) -> tuple[Login[Any], float, str | None]:
    """For one checkout: the login, how long it may wait (the time left before the deadline,
    or less when the pool's or the caller's timeout says so) and the current invocation."""
    registry = _registry.default
    login = registry.login("pg", name)
    clock = registry.runtime.clock
    left = max(0.0, registry.deadline.at(login.cfg.connect_timeout) - clock())
    wait = min(t for t in (left, configured, asked) if t is not None)
    return login, wait, registry.invocation.current()


def _exhausted(login: Login[Any], pool: str, size: int, began: float) -> ConnectError:
    """The error of a checkout that waited since ``began`` in vain: the server's refusal when a
    new connection found no slot free meanwhile (the pool logs in in its own thread)."""
    now = _registry.default.runtime.clock()
    full = login.no_slot[1] if login.no_slot and login.no_slot[0] >= began else None
    return pool_exhausted(login.cfg, pool, size, now - began, _GIVE_BACK, full)


def _idle_misfit(login: Login[Any], driver: Any, conn: Any) -> str | None:
    """Why a pooled connection's idle limit does not fit the invocation (the check's round trip
    restarts the server's idle clock otherwise), or None."""
    return login.idle.misfit(driver.idle_limit(conn), _registry.default.deadline.left())


def _left_behind(
    taken: dict[int, tuple[Any, str | None]], invocation: str | None, driver: Any, cfg: SqlConfig
) -> list[Any]:
    """Connections an earlier invocation took and left in a transaction (none when the current
    invocation is not known), forgotten here; the caller closes and returns them."""
    if invocation is None:
        return []
    found = []
    for key, (conn, took) in list(taken.items()):
        state = None if took == invocation else driver.transaction(conn)
        if state is not None:
            logger.warning(
                "%s: a connection an earlier invocation took from the pool was never returned "
                "and has a transaction open (%s): closing it, so the server rolls it back; its "
                "writes are not committed. Use 'with pool.connection() as conn:'.",
                cfg.label,
                state,
            )
            del taken[key]
            found.append(conn)
    return found


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
    cfg: SqlConfig = _login(name).cfg  # ConfigError before the pool
    min_size = given.get("min_size", 0)
    return {
        "min_size": 0,  # opening makes no connection: the first checkout logs in
        "max_size": max(1, min_size),  # one invocation at a time per environment
        "open": open,
        "check": check,  # a round trip at checkout: the socket may have died frozen
        "timeout": 2.0 * cfg.connect_timeout,  # as long as get_pg() waits for a login
        "name": f"iamdb-{cfg.label}",
        **given,
    }
