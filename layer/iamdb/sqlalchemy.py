"""SQLAlchemy engines whose every new connection is an iamdb IAM login.

>>> from iamdb.sqlalchemy import create_engine
>>> engine = create_engine("pg")            # postgresql+psycopg from IAMDB_PG_*, no password
>>> with engine.begin() as conn:
...     conn.execute(sqlalchemy.text("SELECT 1"))

SQLAlchemy pools connections; each new one is made, through SQLAlchemy's ``do_connect`` event,
by the instance's :class:`~iamdb._sql.login.Login`, the one behind ``get_pg()``/``get_mysql()``:
the token comes from the shared cache (re-signed once old, so a pool never closes over its
first token), permits are taken only for a token the server has not accepted yet, refusals
are retried by iamdb's rules, and TLS is iamdb's (MySQL's checked before the token is sent).
Connections are transactional (autocommit off), as SQLAlchemy's dialects expect, and get the
settings the dialect passes its driver (psycopg's adapters, PyMySQL's ``FOUND_ROWS`` flag).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from iamdb import _registry
from iamdb._core.deps import requires
from iamdb._core.snapstart import register_after_restore
from iamdb._engines import pool_class, watch
from iamdb.errors import ConfigError

with requires("sqlalchemy", "iamdb.sqlalchemy"):
    import sqlalchemy
    from sqlalchemy import event

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import Dialect
    from sqlalchemy.ext.asyncio import AsyncEngine

    from iamdb._sql.config import Engine, SqlConfig

__all__ = ["LAMBDA_DEFAULTS", "attach", "create_async_engine", "create_engine"]

E = TypeVar("E", "sqlalchemy.Engine", "AsyncEngine")

LAMBDA_DEFAULTS: dict[str, Any] = {
    "pool_size": 1,  # one invocation at a time per environment: one connection is enough
    "max_overflow": 0,
    # iamdb checks a connection at checkout itself, as get_pg() does (cheaply, and a round trip
    # ended by the deadline only when it may have died while the environment was frozen):
    # SQLAlchemy's pre-ping would make a round trip at every checkout, without a time limit.
    "pool_pre_ping": False,
    # Older connections are replaced before use: below the 350 s after which AWS NAT gateways
    # and NLBs forget an idle flow (a ping on such a connection hangs instead of failing), and
    # far below RDS Proxy's 1800 s idle client timeout and MySQL's wait_timeout.
    "pool_recycle": 300,
}
"""What :func:`create_engine` passes SQLAlchemy unless told otherwise (sizes: default pool only)."""

_SIZES = ("pool_size", "max_overflow")  # QueuePool's own arguments
_DIALECTS = {"pg": ("postgresql+psycopg", ("postgresql",), "psycopg"),
             "mysql": ("mysql+pymysql", ("mysql", "mariadb"), "pymysql")}  # fmt: skip
# What the dialects add to their driver's connect besides where to connect: passed on.
_PASSED_ON = {"pg": ("context", "client_encoding"), "mysql": ("client_flag",)}


def create_engine(
    engine: Engine, name: str | None = None, **engine_kwargs: Any
) -> sqlalchemy.Engine:
    """A SQLAlchemy engine for ``IAMDB_PG_*`` / ``IAMDB_MYSQL_*`` (``<NAME>_`` when named).

    ``engine_kwargs`` go to :func:`sqlalchemy.create_engine` over :data:`LAMBDA_DEFAULTS`.
    Raises ConfigError, before any network call, when the configuration is wrong.
    """
    cfg = _config(engine, name)
    kwargs = {**_defaults(engine_kwargs, engine, name, asynchronous=False), **engine_kwargs}
    return attach(sqlalchemy.create_engine(_url(cfg), **kwargs), engine, name)


def create_async_engine(
    engine: Engine = "pg", name: str | None = None, **engine_kwargs: Any
) -> AsyncEngine:
    """An asyncio engine (``postgresql+psycopg``, psycopg's ``AsyncConnection``) for
    ``IAMDB_PG_*``: :func:`create_engine`'s rules; waits for permits do not block the loop.

    PostgreSQL only: iamdb has no asyncio MySQL driver.
    """
    if engine != "pg":
        raise ConfigError("engine", f"asyncio engines are PostgreSQL only ('pg'), got {engine!r}")
    from sqlalchemy.ext.asyncio import create_async_engine as create

    cfg = _config(engine, name)
    kwargs = {**_defaults(engine_kwargs, engine, name, asynchronous=True), **engine_kwargs}
    return attach(create(_url(cfg), **kwargs), engine, name)


def attach(target: E, engine: Engine, name: str | None = None) -> E:
    """Make every new connection of ``target``, an engine the application built, an iamdb
    login for ``engine`` (``"pg"`` or ``"mysql"``) and instance ``name``; returns ``target``.

    ``target`` must use the psycopg (sync or async) or PyMySQL dialect. Its URL may be bare
    (``postgresql+psycopg://``) or name the configured host, port, user and database; it may
    not hold a password, nor options that iamdb's connection would ignore (URL query,
    ``connect_args``): ConfigError, now or at the first connection. Connections already in
    its pool are not replaced (call ``target.dispose()``); after a SnapStart restore the pool
    starts empty. Another ``do_connect`` handler that returns a connection, registered before
    this one, takes precedence.
    """
    sync = getattr(target, "sync_engine", target)  # an AsyncEngine's events are its sync one's
    if not isinstance(sync, sqlalchemy.Engine):
        raise ConfigError("engine", f"expected a SQLAlchemy Engine, got {type(target).__name__}")
    cfg = _config(engine, name)
    _check_dialect(sync.dialect, cfg)
    _driver_options(cfg, *sync.dialect.create_connect_args(sync.url))  # the URL's mistakes now

    def connect(dialect: Dialect, record: Any, cargs: list[Any], cparams: dict[str, Any]) -> Any:
        login = _registry.default.login(engine, name)  # looked up anew: iamdb.reset() applies
        options = _driver_options(login.cfg, cargs, cparams)
        try:
            if not dialect.is_async:
                return login.connect(autocommit=False, **options)
            from iamdb._sql.pg import PgDriver

            driver = functools.partial(PgDriver().connect_async, autocommit=False, **options)
            # What create_async_engine(async_creator=...) passes its dialect: the adapted
            # AsyncConnection, made by awaiting iamdb's login in SQLAlchemy's greenlet.
            creator = functools.partial(login.connect_async, driver)
            return dialect.loaded_dbapi.connect(async_creator_fn=creator)
        finally:
            login.probe.flush()  # one EMF record for what this login did, as get_pg() prints

    event.listen(sync, "do_connect", connect)
    watch(sync, engine, name)  # checkout checks, no transaction into another invocation
    # SnapStart: connections in the snapshot are not this environment's (every environment
    # restored from it holds the same sockets): forget them, without a word on their sockets.
    register_after_restore(functools.partial(sync.dispose, close=False))
    return target


def _url(cfg: SqlConfig) -> sqlalchemy.URL:
    """The engine URL of an instance: dialect, host, port, user, database; never a password."""
    drivername = _DIALECTS[cfg.engine][0]
    database = cfg.dbname or (cfg.user if cfg.engine == "pg" else None)
    return sqlalchemy.URL.create(
        drivername, username=cfg.user, host=cfg.host, port=cfg.port, database=database
    )


def _config(engine: Engine, name: str | None) -> SqlConfig:
    if engine not in _DIALECTS:
        raise ConfigError("engine", f"expected 'pg' or 'mysql', got {engine!r:.40}")
    return _registry.default.login(engine, name).cfg


def _defaults(
    engine_kwargs: dict[str, Any], engine: Engine, name: str | None, *, asynchronous: bool
) -> dict[str, Any]:
    """:data:`LAMBDA_DEFAULTS` that apply: none with a ready ``pool``, no sizes with a
    ``poolclass`` (only the default queue pool takes them); without either, iamdb's queue pool,
    whose checkouts end by the invocation's deadline (:mod:`iamdb._engines`)."""
    if "pool" in engine_kwargs:
        return {}
    if "poolclass" in engine_kwargs:
        return {k: v for k, v in LAMBDA_DEFAULTS.items() if k not in _SIZES}
    return {**LAMBDA_DEFAULTS, "poolclass": pool_class(engine, name, asynchronous)}


def _check_dialect(dialect: Dialect, cfg: SqlConfig) -> None:
    drivername, names, driver = _DIALECTS[cfg.engine]
    if dialect.name not in names or dialect.driver != driver:
        raise ConfigError(
            "engine",
            f"iamdb's {cfg.engine!r} connections need the {drivername} dialect, the engine "
            f"uses {dialect.name}+{dialect.driver}",
        )


def _driver_options(cfg: SqlConfig, cargs: Any, cparams: Mapping[str, Any]) -> dict[str, Any]:
    """The dialect's connect arguments to pass on to iamdb's driver; ConfigError for others.

    Where to connect and as whom is iamdb's configuration: the URL may repeat it, not
    contradict it. How (TLS, timeouts, the password) is iamdb's alone.
    """
    database = cfg.dbname or (cfg.user if cfg.engine == "pg" else None)
    owned = {  # the dialect's name for it -> iamdb's variable, value
        "host": ("HOST", cfg.host),
        "port": ("PORT", cfg.port),
        "user": ("USER", cfg.user),
        "dbname" if cfg.engine == "pg" else "database": ("DBNAME", database),
    }
    options: dict[str, Any] = {}
    ignored = ["positional arguments"] if any(arg != "" for arg in cargs) else []
    for key, value in cparams.items():
        if key in _PASSED_ON[cfg.engine]:
            options[key] = value
        elif key in ("password", "passwd"):
            raise ConfigError(
                "engine",
                "the engine's URL or connect_args hold a password: iamdb logs in with IAM "
                "tokens, remove it",
            )
        elif key in owned:
            variable, expected = owned[key]
            fold = str.lower if key == "host" else str
            if expected is None or fold(str(value)) != fold(str(expected)):
                setting = "is not set" if expected is None else f"is {expected!r}"
                raise ConfigError(
                    cfg.prefix + variable,
                    f"{setting} but the engine's URL says {key}={value!r:.80}",
                )
        elif not (key == "charset" and str(value).lower() == "utf8mb4"):  # iamdb's charset
            ignored.append(key)
    if ignored:
        raise ConfigError(
            "engine",
            f"iamdb makes the connection from {cfg.prefix}* and would ignore "
            f"{', '.join(sorted(ignored))} (URL query or connect_args): remove them; set "
            "session options in a 'connect' event instead",
        )
    return options
