"""Aurora DSQL: what differs from RDS PostgreSQL, in one place.

DSQL speaks PostgreSQL and takes only IAM tokens, but its rules are its own: the ``admin`` role
signs ``DbConnectAdmin`` and every other role ``DbConnect``; tokens live as long as the signer
says; every session ends after an hour (:data:`SESSION_LIMIT_SECONDS`), so iamdb replaces a
connection once it is :data:`MAX_AGE_SECONDS` old, between invocations; the cluster admits
:data:`CONNECT_RATE` new connections per second whatever the token, and says so with SQLSTATE
53400 instead of failing the login like RDS; certificates chain to Amazon's public roots, so TLS
is verified against the system's CA store, not the RDS bundle; and optimistic concurrency fails a
commit with SQLSTATE 40001, which :mod:`iamdb._sql.transactions` runs again.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from iamdb._aws.signer import DSQL_MAX_EXPIRES_SECONDS, TOKEN_LIFETIME_SECONDS
from iamdb._core.env import ca_file_problem, env_number, env_value
from iamdb.errors import ConfigError

ADMIN_ROLE = "admin"
"""The one DSQL role that logs in with ``DbConnectAdmin``."""

DBNAME = "postgres"
"""DSQL's one database."""

SESSION_LIMIT_SECONDS = 3600
"""DSQL closes every connection after at most an hour."""

MAX_AGE_SECONDS = 3300.0
"""Default age at which ``get_dsql()`` replaces a connection: five minutes (DSQL's longest
transaction) before DSQL would close it."""

CONNECT_RATE = 100.0
"""DSQL's quota of new connections per second per cluster (not configurable on AWS)."""

# <cluster id>.dsql.<region>.on.aws
_ENDPOINT = re.compile(
    r"[a-z0-9]+\.dsql\.(?P<region>[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2})\.on\.aws\.?",
    re.IGNORECASE | re.ASCII,
)

# Where Linux distributions keep the public CA store as one PEM file. Lambda's runtimes (Amazon
# Linux 2023) have the second. psycopg-binary's own OpenSSL looks in a directory of its build
# (/usr/lib/psycopg-openssl), so libpq's sslrootcert=system finds nothing there: iamdb passes
# the file itself.
SYSTEM_CA_FILES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine, Arch
    "/etc/pki/tls/certs/ca-bundle.crt",  # Amazon Linux, RHEL, Fedora
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/ssl/cert.pem",  # Alpine, macOS
)

# A refusal for the rate, as libpq reports it (SQLSTATE is not in the text of a failed connect;
# a full cluster's 53300 is iamdb._sql.slots.FULL).
RATE_EXCEEDED = ("53400", "rate exceeded")


def region_from_endpoint(hostname: str) -> str | None:
    """The region in a DSQL cluster endpoint name, or None when ``hostname`` is not one."""
    match = _ENDPOINT.fullmatch(hostname)
    return match.group("region").lower() if match else None


def limits(env: Mapping[str, str], prefix: str) -> dict[str, Any]:
    """An instance's token lifetime, maximum connection age and connection rate, as
    :class:`~iamdb._sql.config.SqlConfig` fields (``prefix``: ``IAMDB_DSQL_`` or a named one's)."""
    expires = env_number(env, prefix + "TOKEN_EXPIRES_SECONDS", TOKEN_LIFETIME_SECONDS, low=1,
                         high=DSQL_MAX_EXPIRES_SECONDS, integer=True)  # fmt: skip
    max_age = env_number(env, prefix + "MAX_AGE_SECONDS", MAX_AGE_SECONDS, low=1,
                         high=SESSION_LIMIT_SECONDS)  # fmt: skip
    rate = env_number(env, prefix + "CONNECT_RATE", CONNECT_RATE, low=0.001, high=1e6)
    return {"token_lifetime": int(expires), "max_age": max_age, "connect_rate": rate}


def system_ca_file(env: Mapping[str, str], var: str) -> str:
    """The system's public CA store as one PEM file: ``SSL_CERT_FILE`` when set (OpenSSL's own
    override, checked as a chosen ``SSLROOTCERT`` is), else the first of
    :data:`SYSTEM_CA_FILES` that exists (not loaded here: that costs ~25 ms). ConfigError
    ``var`` (the instance's ``SSLROOTCERT``) when there is none."""
    chosen = env_value(env, "SSL_CERT_FILE")
    if chosen is not None:
        problem = ca_file_problem(chosen)
        if problem is not None:
            raise ConfigError("SSL_CERT_FILE", f"expected the path of a PEM CA bundle: {problem}")
        return chosen
    for path in SYSTEM_CA_FILES:
        if os.path.isfile(path):
            return path
    raise ConfigError(
        var,
        f"not set, and no system CA store was found (SSL_CERT_FILE, {', '.join(SYSTEM_CA_FILES)})"
        ": set it to a PEM file of the public root CAs DSQL's certificates chain to "
        "(Amazon Root CA 1-4)",
    )
