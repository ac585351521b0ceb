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

from iamdb.errors import AuthError, ConfigError, ConnectError, CredentialsError, IamDbError

# Cold start is a feature: importing iamdb loads only this file and errors.py. The signer,
# the registry and the drivers are imported on the path that needs them.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from iamdb.pg import PgConnection
    from iamdb.signer import generate_db_auth_token

__all__ = [
    "AuthError",
    "ConfigError",
    "ConnectError",
    "CredentialsError",
    "IamDbError",
    "generate_db_auth_token",
    "get_mysql",
    "get_pg",
    "reset",
]
__version__ = "0.1.0"


def get_pg(name: str | None = None) -> PgConnection:
    """The process's psycopg 3 connection for ``IAMDB_PG_*`` (``IAMDB_PG_<NAME>_*`` when named).

    Created on first use, reused afterwards, replaced transparently when it died.
    Autocommit is on: use ``with conn.transaction():`` for transactions.
    """
    from iamdb.registry import default

    return default.get_pg(name)


def get_mysql(name: str | None = None) -> Any:
    """The process's PyMySQL connection for ``IAMDB_MYSQL_*`` (``IAMDB_MYSQL_<NAME>_*`` when named).

    Created on first use, reused afterwards, replaced transparently when it died.
    Autocommit is on.
    """
    from iamdb.registry import default

    return default.get_mysql(name)


def reset() -> None:
    """Close and forget every singleton, token and cached credential (tests, snapshots)."""
    from iamdb.registry import default

    default.reset()


def __getattr__(name: str) -> object:
    if name == "generate_db_auth_token":
        from iamdb.signer import generate_db_auth_token

        return generate_db_auth_token
    raise AttributeError(f"module 'iamdb' has no attribute {name!r}")
