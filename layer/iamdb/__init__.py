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

from typing import TYPE_CHECKING, Any

from iamdb.errors import AuthError, ConfigError, ConnectError, CredentialsError, IamDbError
from iamdb.registry import default as _default
from iamdb.signer import generate_db_auth_token

if TYPE_CHECKING:
    from iamdb.pg import PgConnection

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
    return _default.get_pg(name)


def get_mysql(name: str | None = None) -> Any:
    """The process's PyMySQL connection for ``IAMDB_MYSQL_*`` (``IAMDB_MYSQL_<NAME>_*`` when named).

    Created on first use, reused afterwards, replaced transparently when it died.
    Autocommit is on.
    """
    return _default.get_mysql(name)


def reset() -> None:
    """Close and forget every singleton, token and cached credential (tests, snapshots)."""
    _default.reset()
