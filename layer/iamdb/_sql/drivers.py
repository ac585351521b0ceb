"""The driver of each SQL engine, loaded on first use: psycopg for PostgreSQL and Aurora DSQL,
PyMySQL for MySQL. One per process (they keep only what any instance may share, such as
PyMySQL's TLS contexts); a missing one is a :class:`~iamdb.errors.MissingDependencyError`
naming the extra, before any login."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iamdb._core.deps import requires

if TYPE_CHECKING:
    from iamdb._sql.config import SqlConfig
    from iamdb._sql.login import Driver

_loaded: dict[str, Driver[Any]] = {}


def driver(cfg: SqlConfig) -> Driver[Any]:
    """The driver for ``cfg``'s engine (its ``HOST`` named when the driver is missing)."""
    kind = "mysql" if cfg.engine == "mysql" else "pg"  # DSQL speaks PostgreSQL
    found = _loaded.get(kind)
    if found is None:
        with requires(kind, cfg.prefix + "HOST"):
            if kind == "pg":
                from iamdb._sql.pg import PgDriver

                found = PgDriver()
            else:
                from iamdb._sql.mysql import MySqlDriver

                found = MySqlDriver()
        _loaded[kind] = found
    return found
