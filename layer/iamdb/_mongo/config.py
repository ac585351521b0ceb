"""MongoDB configuration from the environment, validated before any network call.

Every instance is described by ``IAMDB_MONGO_*`` variables (the default instance) or
``IAMDB_MONGO_<NAME>_*`` (``get_mongo("reports")`` reads ``IAMDB_MONGO_REPORTS_*``):

- ``URI``: ``mongodb://`` or ``mongodb+srv://`` with the database in the path; options in
  it are kept and override iamdb's Lambda defaults. No user name or password: nobody
  handles a Mongo password. Checked by pymongo's parser and iamdb's TLS rules at
  configuration time (:mod:`iamdb._mongo.uri`).
- ``ROLE_ARN``: the role to assume; its ARN is the user in ``$external``. Unset: the
  execution role's own credentials log in (its role ARN is then the ``$external`` user).
  ``SESSION_SECONDS`` and ``EXTERNAL_ID`` with it, read as for every engine
  (:mod:`iamdb._aws.roles`); ``REFRESH_SECONDS``: assume again when fewer than this remain
  (default 300).

Amazon DocumentDB endpoints get the bundled RDS CA bundle and ``retryWrites=false`` unless
the URI sets them (:func:`iamdb._mongo.uri.documentdb_options`). The SQL twin is
:mod:`iamdb._sql.config`; the rules both follow are :mod:`iamdb._core.env`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from iamdb._aws.roles import ROLE_SUFFIXES, load_role, session_seconds
from iamdb._core.env import (
    client_name,
    env_number,
    env_value,
    instance_name,
    instance_prefix,
    settings_environ,
)
from iamdb._mongo.uri import parse_uri
from iamdb.errors import ConfigError

# What load_mongo_config reads after the instance's prefix (instance names must not collide).
MONGO_SUFFIXES = ("URI", *ROLE_SUFFIXES, "REFRESH_SECONDS")


@dataclass(frozen=True)
class MongoConfig:
    """One MongoDB instance: where it is and which AWS identity logs in."""

    name: str | None  # lower case: names are case-insensitive
    prefix: str  # "IAMDB_MONGO_" or "IAMDB_MONGO_<NAME>_": used in messages
    uri: str
    srv: bool
    hosts: tuple[str, ...]
    database: str
    options: Mapping[str, Any] = field(repr=False)  # pymongo's reading, lower-case names
    tls: bool  # on unless the URI says tls=false (then: one loopback host, direct)
    role_arn: str | None
    session_seconds: int
    refresh_seconds: int
    external_id: str | None = field(repr=False)
    documentdb: bool = False  # Amazon DocumentDB endpoints: see documentdb_options
    client_name: str = "iamdb"  # the client's appname: AWS_LAMBDA_FUNCTION_NAME

    @property
    def label(self) -> str:
        """``mongo`` or ``mongo:<name>``: how logs and errors name this instance."""
        return "mongo" if self.name is None else f"mongo:{self.name}"


def load_mongo_config(
    name: str | None = None, environ: Mapping[str, str] | None = None
) -> MongoConfig:
    """Read and validate one instance's ``IAMDB_MONGO_*`` settings (no network).

    Imports pymongo's URI parser: the URI is checked as pymongo will read it.
    """
    env = settings_environ(environ)
    p = instance_prefix("mongo", name, MONGO_SUFFIXES)
    uri = parse_uri(p + "URI", env_value(env, p + "URI"))
    role = load_role(env, p)
    session = role.session_seconds if role is not None else session_seconds(env, p)
    refresh = int(env_number(env, p + "REFRESH_SECONDS", 300, low=30, high=43200, integer=True))
    if refresh > session - 300:
        raise ConfigError(
            p + "REFRESH_SECONDS",
            f"expected at most {p}SESSION_SECONDS - 300 = {session - 300}, got {refresh}: "
            "credentials would be renewed on (almost) every call",
        )
    return MongoConfig(
        name=None if name is None else instance_name(name, MONGO_SUFFIXES),
        prefix=p,
        uri=env_value(env, p + "URI") or "",
        srv=uri.srv,
        hosts=uri.hosts,
        database=uri.database,
        options=uri.options,
        tls=uri.tls,
        role_arn=None if role is None else role.arn,
        session_seconds=session,
        refresh_seconds=refresh,
        external_id=None if role is None else role.external_id,
        documentdb=uri.documentdb,
        client_name=client_name(env),
    )
