"""The registry behind the documented singletons ``get_pg``, ``get_mysql`` and ``reset``.

One :class:`Registry` per process (``iamdb.registry.default``) holds, for each engine and
instance name, one :class:`~iamdb.managed.ManagedConnection`, plus the token cache and
credential resolver they share. Tests build their own ``Registry`` with a fake clock and
environment instead of touching the default one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from iamdb.config import Engine, Settings, SqlConfig, load_settings, load_sql_config
from iamdb.credentials import CredentialResolver, default_resolver
from iamdb.log import WarnOnce, apply_level
from iamdb.managed import Driver, ManagedConnection
from iamdb.tokens import TokenCache

if TYPE_CHECKING:
    from iamdb.pg import PgConnection


class Registry:
    """Connections, tokens and credentials of one process, created on first use."""

    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        resolver: CredentialResolver | None = None,
    ) -> None:
        self._environ = environ
        self._clock = clock
        self._resolver = resolver or (
            default_resolver if environ is None else CredentialResolver(environ)
        )
        self._lock = threading.Lock()
        self._managed: dict[tuple[str, str | None], ManagedConnection[Any]] = {}
        self._drivers: dict[str, Driver[Any]] = {}
        self._settings: Settings | None = None
        self._tokens: TokenCache | None = None
        self.warn_once = WarnOnce()

    def get_pg(self, name: str | None = None) -> PgConnection:
        """The PostgreSQL connection for ``IAMDB_PG_*`` (or ``IAMDB_PG_<NAME>_*``)."""
        conn: PgConnection = self.managed("pg", name).get()
        return conn

    def get_mysql(self, name: str | None = None) -> Any:
        """The PyMySQL connection for ``IAMDB_MYSQL_*`` (or ``IAMDB_MYSQL_<NAME>_*``)."""
        return self.managed("mysql", name).get()

    def managed(self, engine: Engine, name: str | None = None) -> ManagedConnection[Any]:
        """The :class:`ManagedConnection` behind an instance (configuration read once)."""
        found = self._managed.get((engine, name))
        if found is not None:
            return found
        with self._lock:
            found = self._managed.get((engine, name))
            if found is None:
                found = self._create(engine, name)
                self._managed[(engine, name)] = found
            return found

    def config(self, engine: Engine, name: str | None = None) -> SqlConfig:
        """Read and validate an instance's configuration (no network)."""
        return load_sql_config(engine, name, self._environ)

    @property
    def tokens(self) -> TokenCache:
        """The token cache shared by every SQL instance of this registry."""
        if self._tokens is None:
            settings = self.settings
            self._tokens = TokenCache(
                resolver=self._resolver,
                clock=self._clock,
                refresh_seconds=settings.token_refresh_seconds,
            )
        return self._tokens

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self._environ)
            apply_level(self._settings.log_level)
        return self._settings

    def reset(self) -> None:
        """Close and forget every connection, token, cached credential and setting."""
        with self._lock:
            managed, self._managed = self._managed, {}
            self._settings, self._tokens = None, None
            self._resolver.reset()
            self.warn_once.clear()
        for m in managed.values():
            m.close()

    def _create(self, engine: Engine, name: str | None) -> ManagedConnection[Any]:
        cfg = self.config(engine, name)
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
            cfg,
            self._driver(engine),
            self.tokens,
            clock=self._clock,
            idle_seconds=self.settings.healthcheck_idle_seconds,
        )

    def _driver(self, engine: Engine) -> Driver[Any]:
        driver = self._drivers.get(engine)
        if driver is None:
            if engine == "pg":
                from iamdb.pg import PgDriver

                driver = PgDriver()
            else:
                from iamdb.mysql import MySqlDriver

                driver = MySqlDriver()
            self._drivers[engine] = driver
        return driver


default = Registry()
"""The process's registry: what :func:`iamdb.get_pg` and friends use."""
