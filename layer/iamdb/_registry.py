"""The registry behind the documented singletons ``get_pg``, ``get_mysql``, ``get_dsql``,
``get_mongo``, ``get_valkey`` and ``reset``.

One :class:`Registry` per process (``iamdb._registry.default``) holds each engine's instances
(a :class:`~iamdb._sql.managed.ManagedConnection` per SQL instance, a
:class:`~iamdb._mongo.handle.MongoHandle` per Mongo one, a
:class:`~iamdb._valkey.handle.ValkeyHandle` per Valkey one, :mod:`iamdb.aio`'s per-loop sides)
and what they share, each part made on first use: the process-wide settings, the token cache,
the assumed roles' credentials, the login limits, the AWS client, telemetry, and the current
invocation and its deadline.
Tests build their own ``Registry`` with a :class:`~iamdb._core.runtime.Runtime` of their own
(fake clock, environment) instead of touching the default one.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from iamdb._aws.chain import CredentialResolver, default_resolver
from iamdb._core.env import instance_name
from iamdb._core.invocation import Invocation
from iamdb._core.log import WarnOnce, apply_level, join_powertools_logger
from iamdb._core.runtime import PROCESS, Runtime
from iamdb._core.settings import Settings, load_settings
from iamdb._core.snapstart import register_after_restore
from iamdb._core.telemetry import Telemetry

if TYPE_CHECKING:  # the SQL and Mongo sides load with their first instance
    from pymongo import MongoClient

    from iamdb._aws.client import AwsClient
    from iamdb._aws.leases import Leases
    from iamdb._aws.tokens import TokenCache
    from iamdb._mongo.handle import MongoHandle
    from iamdb._sql.config import Engine, SqlConfig
    from iamdb._sql.limits import Limits
    from iamdb._sql.login import Login
    from iamdb._sql.managed import ManagedConnection
    from iamdb._sql.pg_classes import PgConnection
    from iamdb._valkey.handle import ValkeyHandle

T = TypeVar("T")

RESET_WAIT_SECONDS = 2.0
"""How long :meth:`Registry.reset` waits, in all, for statements other threads are running on
the connections it closes; a connection still in use after that is left to its user."""


class Registry:
    """Connections, tokens and credentials of one process, created on first use."""

    _managed: dict[tuple[str, str | None], ManagedConnection[Any]]
    _mongo: dict[str | None, MongoHandle]
    _valkey: dict[str | None, ValkeyHandle]
    _aio: dict[tuple[str, str | None], Any]  # iamdb.aio's handles
    _settings: Settings | None
    _tokens: TokenCache | None
    _leases: Leases | None
    _limits: Limits | None
    _aws: AwsClient | None
    _telemetry: Telemetry | None
    _served: bool  # see _serving

    def __init__(
        self,
        *,
        runtime: Runtime | None = None,
        resolver: CredentialResolver | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        """``runtime``: the environment, clock, sleep and random source (default: the
        process); ``resolver``: where credentials come from (default: the runtime's chain);
        ``telemetry``: where metrics go (default: from the settings; tests pass one that
        records)."""
        self.runtime = runtime or PROCESS
        self._live = runtime is None  # the process itself: it may join Powertools' Logger
        # What the settings readers get: None reads os.environ there, so no frame that can be
        # on a traceback holds the whole environment (secret key included) as an argument.
        self._environ = None if runtime is None else runtime.environ
        self._resolver = resolver or (
            default_resolver if runtime is None else CredentialResolver(runtime)
        )
        self.invocation = Invocation(self.runtime.environ, self.runtime.clock)
        self.deadline = self.invocation.deadline
        self.warn_once = WarnOnce()
        self._given_telemetry = telemetry
        self._joined_powertools = False
        self._lock = threading.Lock()
        self._forget()

    # -- the getters --------------------------------------------------------------------------

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
        from iamdb._sql.transactions import run_transaction

        managed = self.managed("dsql", name)
        return run_transaction(
            lambda: self.get_dsql(name),
            fn,
            attempts=attempts,
            runtime=self.runtime,
            probe=managed.probe,
            label=managed.cfg.label,
        )

    def get_mongo(self, name: str | None = None) -> MongoClient[Any]:
        """The pymongo client for ``IAMDB_MONGO_*`` (or ``IAMDB_MONGO_<NAME>_*``)."""
        handle = self._mongo.get(name) or self.mongo_handle(name)
        try:
            return handle.get()
        finally:
            handle.probe.flush()  # one EMF record for what this call did, if anything

    def get_valkey(self, name: str | None = None) -> Any:
        """The valkey-py client for ``IAMDB_VALKEY_*`` (or ``IAMDB_VALKEY_<NAME>_*``)."""
        handle = self._valkey.get(name) or self.valkey_handle(name)
        try:
            return handle.get()
        finally:
            handle.probe.flush()  # one EMF record for what this call did, if anything

    def set_lambda_context(self, context: Any) -> None:
        """Know the invocation and bound the waits of logins by its remaining time (see
        :mod:`iamdb._core.invocation`); None forgets it."""
        self.invocation.set_context(context)
        if context is not None:  # the handler's Logger may be newer than iamdb's first use
            self._join_powertools_logger()

    def end_invocation(self) -> None:
        """The handler returned or raised: each SQL connection held is left for the time
        between invocations (:meth:`~iamdb._sql.managed.ManagedConnection.park`)."""
        for managed in list(self._managed.values()):
            try:
                managed.park()
            finally:
                managed.probe.flush()  # TransactionsRolledBack, in this invocation's record

    def reset(self) -> None:
        """Close and forget every connection, token, cached credential and setting."""
        with self._lock:
            managed, mongo, aio, aws = self._managed, self._mongo, self._aio, self._aws
            if self._leases is not None:
                self._leases.clear()
            valkey = self._valkey
            self._forget()
            self.invocation.clear()
            self.deadline.longest = 0.0  # the function's timeout is learned anew
            self._resolver.reset()
            self.warn_once.clear()
        for handle in aio.values():
            handle.close()
        if aws is not None:
            aws.close()
        until = self.runtime.clock() + RESET_WAIT_SECONDS
        for m in managed.values():  # one another thread runs a statement on: left to it
            m.close(wait=max(0.0, until - self.runtime.clock()))
        for handle in mongo.values():
            handle.close()
        for cache in valkey.values():
            cache.close()

    # -- the instances ------------------------------------------------------------------------

    def managed(self, engine: Engine, name: str | None = None) -> ManagedConnection[Any]:
        """The :class:`ManagedConnection` behind an instance (configuration read once)."""
        found = self._managed.get((engine, name))
        if found is not None:
            return found
        from iamdb._sql.config import SQL_SUFFIXES

        name = None if name is None else instance_name(name, SQL_SUFFIXES)  # "REPORTING" too
        with self._lock:
            found = self._managed.get((engine, name))
            if found is None:
                self._serving()
                found = self._new_managed(self.config(engine, name))
                self._managed[(engine, name)] = found
            return found

    def login(self, engine: Engine, name: str | None = None) -> Login[Any]:
        """How new connections to an instance are made (the pools' and async getters' way in):
        the singleton's token cache, permits, retries and TLS settings."""
        return self.managed(engine, name).login

    def config(self, engine: Engine, name: str | None = None) -> SqlConfig:
        """Read and validate an instance's configuration (no network)."""
        from iamdb._sql.config import load_sql_config

        cfg = load_sql_config(engine, name, self._environ)
        if cfg.role is not None:
            from iamdb._aws.client import resolve_endpoint

            resolve_endpoint("sts", self.runtime.environ)  # ConfigError before any call
        return cfg

    def mongo_handle(self, name: str | None = None) -> MongoHandle:
        """The :class:`~iamdb._mongo.handle.MongoHandle` of a Mongo instance (config read once)."""
        from iamdb._aws.client import resolve_endpoint
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
                    aws=self.aws,
                    resolver=self._resolver,
                    runtime=self.runtime,
                    deadline=self.deadline,
                    probe=self.telemetry.probe("mongo", name),
                    idle_seconds=self.settings.healthcheck_idle_seconds,
                )
                self._mongo[name] = found
            return found

    def valkey_handle(self, name: str | None = None) -> ValkeyHandle:
        """The :class:`~iamdb._valkey.handle.ValkeyHandle` of an instance (config read once)."""
        from iamdb._valkey.config import VALKEY_SUFFIXES, load_valkey_config
        from iamdb._valkey.handle import ValkeyHandle

        name = None if name is None else instance_name(name, VALKEY_SUFFIXES)  # "Sessions" too
        with self._lock:
            found = self._valkey.get(name)
            if found is None:
                self._serving()
                found = ValkeyHandle(
                    load_valkey_config(name, self._environ),
                    tokens=self.tokens,
                    runtime=self.runtime,
                    deadline=self.deadline,
                    invocation=self.invocation,
                    probe=self.telemetry.probe("valkey", name),
                    idle_seconds=self.settings.healthcheck_idle_seconds,
                    retries=self.settings.auth_retries,
                )
                self._valkey[name] = found
            return found

    def known_valkey(self, name: str | None) -> ValkeyHandle | None:
        """The Valkey instance's handle if it was ever used (none is made; ``name`` canonical)."""
        return self._valkey.get(name)

    def aio_handle(self, engine: Literal["pg", "mongo"], name: str | None = None) -> Any:
        """The :mod:`iamdb.aio` side of an instance (made on first use, closed by reset), on the
        blocking singleton's login (SQL) or credentials (Mongo)."""
        found = self._aio.get((engine, name))
        if found is not None:
            return found
        made: Any
        if engine == "mongo":
            from iamdb._mongo.aio import AsyncMongoHandle

            made = AsyncMongoHandle(self.mongo_handle(name))
        else:
            from iamdb._sql.aio import AsyncManaged

            made = AsyncManaged(self.managed(engine, name))
        with self._lock:
            return self._aio.setdefault((engine, made.cfg.name), made)

    def known_managed(self, engine: str, name: str | None) -> ManagedConnection[Any] | None:
        """The instance's ManagedConnection if it was ever used (none is made)."""
        from iamdb._sql.config import SQL_SUFFIXES

        return self._managed.get(
            (engine, None if name is None else instance_name(name, SQL_SUFFIXES))
        )

    def known_mongo(self, name: str | None) -> MongoHandle | None:
        """The Mongo instance's handle if it was ever used (none is made; ``name`` canonical)."""
        return self._mongo.get(name)

    # -- what the instances share, made on first use ----------------------------------------

    @property
    def settings(self) -> Settings:
        """The process-wide settings (``IAMDB_*`` beyond one instance), read once."""
        if self._settings is None:
            self._settings = load_settings(self._environ)
        return self._settings

    @property
    def tokens(self) -> TokenCache:
        """The token cache shared by every SQL and Valkey instance."""
        if self._tokens is None:
            from iamdb._aws.tokens import TokenCache

            self._tokens = TokenCache(
                resolver=self._resolver,
                clock=self.runtime.clock,
                refresh_seconds=self.settings.token_refresh_seconds,
                leases=lambda: self.leases,
            )
        return self._tokens

    @property
    def leases(self) -> Leases:
        """The credentials of the roles SQL instances assume (``<P>ROLE_ARN``), one per role."""
        if self._leases is None:
            from iamdb._aws.leases import Leases

            self._leases = Leases(lambda: self.aws, self.runtime)
        return self._leases

    @property
    def limits(self) -> Limits:
        """The permits of new IAM logins: per-process buckets, and the fleet's ticket queue."""
        if self._limits is None:
            from iamdb._sql.limits import Limits

            self._limits = Limits.from_settings(
                self.settings, lambda: self.aws, self.runtime, self.warn_once
            )
        return self._limits

    @property
    def aws(self) -> AwsClient:
        """The AWS client (DynamoDB, STS) every AWS call goes through."""
        if self._aws is None:
            from iamdb._aws.client import AwsClient

            self._aws = AwsClient(self.runtime, self._resolver)
        return self._aws

    @property
    def telemetry(self) -> Telemetry:
        """Metrics and subsegments (see :mod:`iamdb._core.telemetry`), shared by every instance."""
        if self._telemetry is None:
            self._telemetry = Telemetry(self.settings.metrics_namespace, self.warn_once)
        return self._telemetry

    # -- internals ----------------------------------------------------------------------------

    def _get_sql(self, engine: Engine, name: str | None) -> Any:
        managed = self.managed(engine, name)
        try:
            return managed.get()
        finally:
            managed.probe.flush()  # one EMF record for what this call did, if anything

    def _new_managed(self, cfg: SqlConfig) -> ManagedConnection[Any]:
        from iamdb._sql.config import tls_warning
        from iamdb._sql.drivers import driver
        from iamdb._sql.login import Login
        from iamdb._sql.managed import ManagedConnection

        _filter_botocore_logs()
        warning = tls_warning(cfg)
        if warning is not None:
            self.warn_once(f"sslmode:{cfg.prefix}", "%s", warning)
        login = Login(
            cfg,
            driver(cfg),
            self.tokens,
            runtime=self.runtime,
            limits=self.limits,
            deadline=self.deadline,
            retries=self.settings.auth_retries,
            probe=self.telemetry.probe(cfg.engine, cfg.name),
        )
        return ManagedConnection(
            login,
            runtime=self.runtime,
            idle_seconds=self.settings.healthcheck_idle_seconds,
            deadline=self.deadline,
            invocation=self.invocation,
        )

    def _serving(self) -> None:
        """Before the registry first serves a getter (again after :meth:`reset`): set
        ``IAMDB_LOG_LEVEL`` on iamdb's logger and join the application's Powertools Logger.
        Here, where every getter, pool and engine comes in, so that reading :attr:`settings`
        (the CLI does) changes nothing."""
        if not self._served:
            self._served = True
            apply_level(self.settings.log_level)
            self._join_powertools_logger()

    def _join_powertools_logger(self) -> None:
        """Log through the application's Powertools Logger once it has made one."""
        if not self._joined_powertools and self._live:
            self._joined_powertools = join_powertools_logger(
                keep_level=self.settings.log_level is not None
            )

    def _forget(self) -> None:
        """No instance, and no shared part made yet (at creation, and by :meth:`reset`)."""
        self._managed = {}
        self._mongo = {}
        self._valkey = {}
        self._aio = {}
        self._settings = None
        self._tokens = None
        self._leases = None
        self._limits = None
        self._aws = None
        self._telemetry = self._given_telemetry
        self._served = False


def _filter_botocore_logs() -> None:
    """Take secrets out of botocore's DEBUG logs when the application uses boto3 itself
    (iamdb's own AWS calls do not go through botocore): never imports it, nor the redaction
    (compiling its patterns costs ~5 ms) unless botocore is there."""
    if "botocore" in sys.modules:
        from iamdb._aws import redact

        redact.install()


default = Registry()
"""The process's registry: what :func:`iamdb.get_pg` and friends use."""

register_after_restore(default.reset)  # SnapStart: drop what the snapshot captured
