"""The registry behind the documented singletons ``get_pg``, ``get_mysql``, ``get_dsql`` and
``reset``.

One :class:`Registry` per process (``iamdb._registry.default``) holds, for each engine and
instance name, one :class:`~iamdb._sql.managed.ManagedConnection` (and each Mongo instance's
handle), on top of what they share (:class:`~iamdb._shared.Shared`: settings, token cache,
limits, AWS client, deadline). Tests build their own ``Registry`` with a
:class:`~iamdb._core.runtime.Runtime` of their own (fake clock, environment) instead of touching
the default one.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from iamdb._aws.chain import CredentialResolver
from iamdb._core.env import instance_name
from iamdb._core.runtime import Runtime
from iamdb._core.snapstart import register_after_restore
from iamdb._core.telemetry import Telemetry
from iamdb._shared import Shared
from iamdb._sql.config import SQL_SUFFIXES, Engine, SqlConfig, load_sql_config
from iamdb._sql.login import Driver, Login
from iamdb._sql.managed import ManagedConnection

if TYPE_CHECKING:
    from pymongo import MongoClient

    from iamdb._mongo.handle import MongoHandle
    from iamdb._sql.pg import PgConnection

T = TypeVar("T")

RESET_WAIT_SECONDS = 2.0
"""How long :meth:`Registry.reset` waits, in all, for statements other threads are running on
the connections it closes; a connection still in use after that is left to its user."""


class Registry(Shared):
    """Connections, tokens and credentials of one process, created on first use: the
    instances here, what they share in :class:`~iamdb._shared.Shared`."""

    def __init__(
        self,
        *,
        runtime: Runtime | None = None,
        resolver: CredentialResolver | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        """``runtime``: the environment, clock, sleep and random source (default: the
        process); ``telemetry``: where metrics go (default: from the settings; tests pass one
        that records)."""
        super().__init__(runtime=runtime, resolver=resolver, telemetry=telemetry)
        self._lock = threading.Lock()
        self._managed: dict[tuple[str, str | None], ManagedConnection[Any]] = {}
        self._drivers: dict[str, Driver[Any]] = {}
        self._mongo: dict[str | None, MongoHandle] = {}
        self._aio: dict[tuple[str, str | None], Any] = {}  # iamdb.aio's handles

    def get_pg(self, name: str | None = None) -> PgConnection:
        """The PostgreSQL connection for ``IAMDB_PG_*`` (or ``IAMDB_PG_<NAME>_*``)."""
        conn: PgConnection = self._get_sql("pg", name)
        return conn

    def get_mysql(self, name: str | None = None) -> Any:
        """The PyMySQL connection for ``IAMDB_MYSQL_*`` (or ``IAMDB_MYSQL_<NAME>_*``)."""
        return self._get_sql("mysql", name)

    def get_dsql(self, name: str | None = None) -> PgConnection:
        """The Aurora DSQL connection for ``IAMDB_DSQL_*`` (or ``IAMDB_DSQL_<NAME>_*``)."""
        conn: PgConnection = self._get_sql("dsql", name)
        return conn

    def dsql_transaction(
        self, fn: Callable[[PgConnection], T], name: str | None = None, *, attempts: int = 3
    ) -> T:
        """``fn(conn)`` in a transaction on :meth:`get_dsql`, run again after 40001 conflicts."""
        from iamdb._sql.dsql import run_transaction

        return run_transaction(self, fn, name, attempts=attempts)

    def get_mongo(self, name: str | None = None) -> MongoClient[Any]:
        """The pymongo client for ``IAMDB_MONGO_*`` (or ``IAMDB_MONGO_<NAME>_*``)."""
        handle = self._mongo.get(name)
        if handle is None:
            handle = self.mongo_handle(name)
        try:
            return handle.get()
        finally:
            handle.probe.flush()  # one EMF record for what this call did, if anything

    def _get_sql(self, engine: Engine, name: str | None) -> Any:
        managed = self.managed(engine, name)
        try:
            return managed.get()
        finally:
            managed.probe.flush()  # one EMF record for what this call did, if anything

    def mongo_handle(self, name: str | None = None) -> MongoHandle:
        """The :class:`~iamdb._mongo.handle.MongoHandle` of a Mongo instance (config read once)."""
        from iamdb._aws.client import resolve_endpoint
        from iamdb._mongo.client import Sources
        from iamdb._mongo.config import MONGO_SUFFIXES, load_mongo_config
        from iamdb._mongo.handle import MongoHandle

        name = None if name is None else instance_name(name, MONGO_SUFFIXES)  # "Reports" too
        with self._lock:
            found = self._mongo.get(name)
            if found is None:
                self._serving()
                cfg = load_mongo_config(name, self._environ)
                if cfg.role_arn is not None:
                    resolve_endpoint("sts", self.runtime.environ)  # ConfigError before any call
                _filter_botocore_logs()
                found = MongoHandle(
                    cfg,
                    sources=Sources(self.aws, self.runtime, self._resolver),
                    deadline=self.deadline,
                    probe=self.telemetry.probe("mongo", name),
                    idle_seconds=self.settings.healthcheck_idle_seconds,
                )
                self._mongo[name] = found
            return found

    def aio_handle(self, engine: Literal["pg", "mongo"], name: str | None = None) -> Any:
        """The :mod:`iamdb.aio` side of an instance (made on first use, closed by reset):
        SQL logs in through the singleton's Login, Mongo uses its MongoHandle's credentials."""
        found = self._aio.get((engine, name))
        if found is not None:
            return found
        made: Any
        if engine == "mongo":
            from iamdb._mongo.aio import AsyncMongoHandle

            handle = self.mongo_handle(name)
            key: tuple[str, str | None] = (engine, handle.cfg.name)
            made = self._aio.get(key) or AsyncMongoHandle(handle)
        else:
            from iamdb._sql.aio import AsyncManaged

            login = self.login(engine, name)
            key = (engine, login.cfg.name)
            made = self._aio.get(key) or AsyncManaged(
                login,
                runtime=self.runtime,
                idle_seconds=self.settings.healthcheck_idle_seconds,
                deadline=self.deadline,
                invocation=self.invocation,
            )
        with self._lock:
            return self._aio.setdefault(key, made)

    def managed(self, engine: Engine, name: str | None = None) -> ManagedConnection[Any]:
        """The :class:`ManagedConnection` behind an instance (configuration read once)."""
        found = self._managed.get((engine, name))
        if found is not None:
            return found
        name = None if name is None else instance_name(name, SQL_SUFFIXES)  # "REPORTING" too
        with self._lock:
            found = self._managed.get((engine, name))
            if found is None:
                self._serving()
                found = self._create(engine, name)
                self._managed[(engine, name)] = found
            return found

    def known_managed(self, engine: str, name: str | None) -> ManagedConnection[Any] | None:
        """The instance's ManagedConnection if it was ever used (none is made)."""
        return self._managed.get(
            (engine, None if name is None else instance_name(name, SQL_SUFFIXES))
        )

    def known_mongo(self, name: str | None) -> MongoHandle | None:
        """The Mongo instance's handle if it was ever used (none is made; ``name`` canonical)."""
        return self._mongo.get(name)

    def config(self, engine: Engine, name: str | None = None) -> SqlConfig:
        """Read and validate an instance's configuration (no network)."""
        return load_sql_config(engine, name, self._environ)

    def reset(self) -> None:
        """Close and forget every connection, token, cached credential and setting."""
        with self._lock:
            managed, self._managed = self._managed, {}
            mongo, self._mongo = self._mongo, {}
            aio, self._aio = self._aio, {}
            aws = self._forget()
        for handle in aio.values():
            handle.close()
        if aws is not None:
            aws.close()
        until = self.runtime.clock() + RESET_WAIT_SECONDS
        for m in managed.values():  # one another thread runs a statement on: left to it
            m.close(wait=max(0.0, until - self.runtime.clock()))
        for handle in mongo.values():
            handle.close()

    def _create(self, engine: Engine, name: str | None) -> ManagedConnection[Any]:
        cfg = self.config(engine, name)
        _filter_botocore_logs()
        if cfg.sslmode in ("disable", "require"):
            self.warn_once(
                f"sslmode:{cfg.prefix}",
                "%s: %sSSLMODE=%s: the IAM token %s",
                cfg.label,
                cfg.prefix,
                cfg.sslmode,
                "travels in plaintext"
                if cfg.sslmode == "disable"
                else "goes to an unverified server",
            )
        return ManagedConnection(
            self._login(cfg),
            runtime=self.runtime,
            idle_seconds=self.settings.healthcheck_idle_seconds,
            deadline=self.deadline,
            invocation=self.invocation,
        )

    def login(self, engine: Engine, name: str | None = None) -> Login[Any]:
        """How new connections to an instance are made (the pools' and async getters' way in):
        the singleton's token cache, permits, retries and TLS settings."""
        return self.managed(engine, name).login

    def _login(self, cfg: SqlConfig) -> Login[Any]:
        return Login(
            cfg,
            self._driver(cfg),
            self.tokens,
            runtime=self.runtime,
            limits=self.limits,
            deadline=self.deadline,
            retries=self.settings.auth_retries,
            probe=self.telemetry.probe(cfg.engine, cfg.name),
        )

    def _driver(self, cfg: SqlConfig) -> Driver[Any]:
        """The engine's driver; MissingDependencyError (before any login) when it is absent."""
        kind = "mysql" if cfg.engine == "mysql" else "pg"  # DSQL speaks PostgreSQL
        driver = self._drivers.get(kind)
        if driver is None:
            from iamdb._core.deps import requires

            with requires(kind, cfg.prefix + "HOST"):
                if kind == "pg":
                    from iamdb._sql.pg import PgDriver

                    driver = PgDriver()
                else:
                    from iamdb._sql.mysql import MySqlDriver

                    driver = MySqlDriver()
            self._drivers[kind] = driver
        return driver


def _filter_botocore_logs() -> None:
    """Take secrets out of botocore's DEBUG logs when the application uses boto3 itself
    (iamdb's own AWS calls do not go through botocore): never imports it."""
    if "botocore" in sys.modules:
        from iamdb._aws import redact as _redact

        _redact.install()


default = Registry()
"""The process's registry: what :func:`iamdb.get_pg` and friends use."""

register_after_restore(default.reset)  # SnapStart: drop what the snapshot captured
