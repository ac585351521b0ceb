"""For people, not for handlers: a MongoDB connection string holding freshly assumed,
short-lived credentials (``python -m iamdb mongo-uri``, ``compass-file``), written by the same
rules iamdb's own clients follow (:func:`iamdb._mongo.client.client_options`)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from iamdb._mongo.documentdb import documentdb_options
from iamdb._mongo.uri import MECHANISM, split_query

if TYPE_CHECKING:
    from iamdb._aws.sts import Lease
    from iamdb._mongo.config import MongoConfig


def connection_string(cfg: MongoConfig, lease: Lease) -> str:
    """A URI holding ``lease``'s credentials (for Compass or mongosh; secret until expiry)."""
    creds = lease.credentials
    scheme, _, rest = cfg.uri.partition("://")
    hostpart, _, tail = rest.partition("/")
    database, _, query = tail.partition("?")
    kept = [
        part
        for part in split_query(query)
        if part.split("=", 1)[0].lower() not in ("authmechanism", "authsource")
    ]
    options = [*kept, f"authMechanism={MECHANISM}", "authSource=%24external"]
    if "tls" not in cfg.options and not cfg.srv:  # as client_options: TLS explicit, ...
        options.append("tls=true")
    if not cfg.tls and "directconnection" not in cfg.options:  # ... plaintext only direct
        options.append("directConnection=true")
    if cfg.documentdb:  # ... and DocumentDB's CA bundle, no retryable writes
        for key, value in documentdb_options(cfg.options).items():
            options.append(f"{key}={'false' if value is False else quote(str(value), safe='/')}")
    if creds.token:
        options.append("authMechanismProperties=AWS_SESSION_TOKEN:" + quote(creds.token, safe=""))
    userinfo = f"{quote(creds.access_key, safe='')}:{quote(creds.secret_key, safe='')}"
    return f"{scheme}://{userinfo}@{hostpart}/{database}?{'&'.join(options)}"
