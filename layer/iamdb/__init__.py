"""iamdb: database connections for AWS Lambda, authenticated with AWS IAM instead of passwords.

>>> from iamdb import get_pg
>>> def handler(event, context):
...     row = get_pg().execute("SELECT now()").fetchone()

``get_pg()`` and ``get_mysql()`` return module-level singletons: created on first use
with an RDS IAM auth token, reused on every later call (and invocation), checked cheaply
each time and replaced when they died while the environment was frozen. Importing iamdb
loads only the standard library; drivers and botocore are imported on the path that
needs them.
"""

from __future__ import annotations

import sys

from iamdb.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    ConnectError,
    CredentialsError,
    IamDbError,
    MissingDependencyError,
    ThrottleError,
    TooManyConnectionsError,
)

# Cold start is a feature: importing iamdb loads only this file and errors.py. The signer,
# the registry and the drivers are imported on the path that needs them.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    from pymongo import MongoClient

    from iamdb._aws.signer import (
        generate_db_auth_token,
        generate_dsql_auth_token,
        generate_valkey_auth_token,
    )
    from iamdb._info import Info
    from iamdb._pool import pg_async_pool, pg_pool
    from iamdb._registry import Registry
    from iamdb._sql.pg_classes import PgConnection

    T = TypeVar("T")

__all__ = [
    "AuthError",
    "ConfigError",
    "ConflictError",
    "ConnectError",
    "CredentialsError",
    "IamDbError",
    "Info",
    "MissingDependencyError",
    "ThrottleError",
    "TooManyConnectionsError",
    "dsql_transaction",
    "generate_db_auth_token",
    "generate_dsql_auth_token",
    "generate_valkey_auth_token",
    "get_dsql",
    "get_mongo",
    "get_mysql",
    "get_pg",
    "get_valkey",
    "info",
    "lambda_handler",
    "pg_async_pool",
    "pg_pool",
    "reset",
    "set_lambda_context",
]
__version__ = "0.1.0"


def get_pg(name: str | None = None) -> PgConnection:
    """The process's psycopg 3 connection for ``IAMDB_PG_*`` (``IAMDB_PG_<NAME>_*`` when named).

    Created on first use, reused afterwards, replaced transparently when it died.
    Autocommit is on: use ``with conn.transaction():`` for transactions.
    """
    return _default().get_pg(name)


def get_mysql(name: str | None = None) -> Any:
    """The process's PyMySQL connection for ``IAMDB_MYSQL_*`` (``IAMDB_MYSQL_<NAME>_*`` when named).

    Created on first use, reused afterwards, replaced transparently when it died.
    Autocommit is on.
    """
    return _default().get_mysql(name)


def get_dsql(name: str | None = None) -> PgConnection:
    """The process's psycopg 3 connection to Aurora DSQL for ``IAMDB_DSQL_*``
    (``IAMDB_DSQL_<NAME>_*`` when named).

    As :func:`get_pg`, and replaced here, between invocations, once it is
    ``IAMDB_DSQL_MAX_AGE_SECONDS`` old (DSQL ends sessions after an hour). Autocommit is on.
    """
    return _default().get_dsql(name)


def dsql_transaction(
    fn: Callable[[PgConnection], T], name: str | None = None, *, attempts: int = 3
) -> T:
    """Run ``fn(conn)`` in a transaction on :func:`get_dsql`; when DSQL's optimistic
    concurrency refuses it (SQLSTATE 40001), wait a little (jittered) and run it again in a
    new transaction, at most ``attempts`` times in all. Returns what ``fn`` returned; raises
    :class:`ConflictError` after the last conflict. ``fn`` may run more than once: keep its
    side effects inside the transaction.
    """
    return _default().dsql_transaction(fn, name, attempts=attempts)


def get_mongo(name: str | None = None) -> MongoClient[Any]:
    """The process's pymongo client for ``IAMDB_MONGO_*`` (``IAMDB_MONGO_<NAME>_*`` when named).

    Logs in with MONGODB-AWS (an assumed role when ``IAMDB_MONGO_ROLE_ARN`` is set), is
    reused afterwards, and is swapped for a new one before its credentials expire: call
    ``get_mongo()`` in the handler rather than keeping the client in a global.
    """
    return _default().get_mongo(name)


def get_valkey(name: str | None = None) -> Any:
    """The process's valkey-py client (``valkey.Valkey``, ``valkey.ValkeyCluster`` in cluster
    mode) for ``IAMDB_VALKEY_*`` (``IAMDB_VALKEY_<NAME>_*`` when named): ElastiCache (node-based
    or serverless) or MemoryDB, Valkey or Redis OSS, logged in with IAM over verified TLS.

    Every new connection presents a current token; between invocations, connections that died
    while frozen are dropped and those logged in ``IAMDB_VALKEY_REAUTH_SECONDS`` ago (11 hours)
    re-authenticate before AWS closes them at 12: call ``get_valkey()`` in the handler rather
    than keeping the client in a global.
    """
    return _default().get_valkey(name)


def set_lambda_context(context: Any) -> None:
    """Tell iamdb the invocation's Lambda context; call it first thing in the handler.

    New IAM logins may wait for a permit (RDS throttles them) and refused ones are retried;
    with the context known, iamdb stops waiting 0.5 s before the invocation's time runs out
    and raises :class:`ThrottleError` or the last :class:`AuthError` instead. ``None``
    forgets it. A context whose time is already up (a previous invocation's) is ignored.
    """
    _default().set_lambda_context(context)


_ASYNC = 0x80 | 0x200  # CO_COROUTINE, CO_ASYNC_GENERATOR: Lambda would not await them


def lambda_handler(handler: Callable[[Any, Any], T]) -> Callable[[Any, Any], T]:
    """Wrap a Lambda handler so that iamdb knows where each invocation begins and ends::

        @iamdb.lambda_handler
        def handler(event, context): ...

    Before the handler: :func:`set_lambda_context` with its context. After it returns or
    raises: a transaction it left open on a ``get_pg()``/``get_mysql()`` connection is rolled
    back at once, and each of those connections gets the shorter idle limit of the time
    between invocations (``<P>IDLE_BETWEEN_INVOCATIONS``, 60 s), so an environment Lambda
    freezes gives its connection slot back after a minute rather than after the function's
    timeout and a minute. The next invocation's first ``get_*()`` sets the long limit again,
    in the round trip that checks the connection (one per invocation, and none more).
    """
    import functools  # loaded with the interpreter; inspect would cost a cold start ~9 ms

    flags = getattr(getattr(handler, "__code__", None), "co_flags", 0)
    if not callable(handler) or flags & _ASYNC:
        raise ConfigError("handler", "expected the Lambda handler, a plain function")

    @functools.wraps(handler)
    def run(event: Any, context: Any) -> T:
        registry = _default()
        registry.set_lambda_context(context)
        try:
            return handler(event, context)
        finally:
            registry.end_invocation()

    return run


def info(engine: str, name: str | None = None) -> Info:
    """What one instance (``"pg"``, ``"mysql"``, ``"dsql"``, ``"mongo"`` or ``"valkey"``) did so
    far in this process: connected, whether the last get reused its connection, the token's
    age, the last login, and counts of logins, tokens signed, fail-opens, throttle waits,
    reconnects and re-authentications.
    Reads only what iamdb holds: no network, no connection made."""
    if engine not in ("pg", "mysql", "dsql", "mongo", "valkey"):
        raise ConfigError(
            "engine", f"expected pg, mysql, dsql, mongo or valkey, got {engine!r:.40}"
        )
    from iamdb._info import describe

    return describe(_default(), engine, name)


def reset() -> None:
    """Close and forget every singleton, token and cached credential (tests, snapshots)."""
    _default().reset()


def _default() -> Registry:
    """``iamdb._registry.default``, imported on first use.

    A ``from ... import`` inside each getter would cost about 1.3 us per warm call (the
    import machinery checks the module's spec); a ``sys.modules`` lookup costs 0.05 us. While
    another thread is still executing ``iamdb._registry`` (a cold start with getters called
    from several threads), the module is in ``sys.modules`` without ``default`` yet: the
    import statement then waits for that thread to finish it.
    """
    default: Registry | None = getattr(sys.modules.get("iamdb._registry"), "default", None)
    if default is None:
        from iamdb import _registry

        return _registry.default
    return default


def __getattr__(name: str) -> object:
    if name in ("generate_db_auth_token", "generate_dsql_auth_token", "generate_valkey_auth_token"):
        from iamdb._aws import signer as _signer

        return getattr(_signer, name)
    if name == "Info":
        from iamdb._info import Info

        return Info
    if name in ("pg_pool", "pg_async_pool"):  # psycopg_pool pools (iamdb[pool])
        from iamdb import _pool

        return getattr(_pool, name)
    if name == "aio":  # the asyncio getters: ``await iamdb.aio.get_pg()``
        import importlib  # not ``from iamdb import aio``: that asks this function again

        return importlib.import_module("iamdb.aio")
    raise AttributeError(f"module 'iamdb' has no attribute {name!r}")
