"""A Valkey instance's configuration from the environment, validated before any network call.

``IAMDB_VALKEY_*`` (``get_valkey("sessions")`` reads ``IAMDB_VALKEY_SESSIONS_*``):

- ``HOST`` (required) and ``PORT`` (6379): where the socket goes, TLS always on and verified;
- ``USER`` (required): the IAM-enabled user's id, which AWS requires to equal its name;
- ``CACHE_NAME``: the replication group, serverless cache or MemoryDB cluster the token is
  signed for; read from ``HOST`` when it is one of AWS's endpoint names that carries it
  (``master.``/``replica.``/``clustercfg.<name>...cache.amazonaws.com``,
  ``<name>-<id>.serverless...``, MemoryDB's ``clustercfg.<name>...`` and node names);
- ``SERVICE`` (``elasticache`` or ``memorydb``), ``SERVERLESS`` and ``CLUSTER`` (``true`` or
  ``false``): from the endpoint name too (cluster mode for configuration endpoints, serverless
  caches and MemoryDB), else ElastiCache, node-based, cluster mode off;
- ``REGION``: from a MemoryDB endpoint (ElastiCache names carry a short code), else
  ``AWS_REGION``; ``SSLROOTCERT``: a PEM CA file instead of the system's public CA store
  (ElastiCache's and MemoryDB's certificates chain to Amazon's public roots);
- ``CONNECT_TIMEOUT`` (5 s); ``REAUTH_SECONDS`` (39,600: 11 hours): ``get_valkey()``
  re-authenticates, between invocations, every idle connection whose login is this old, an hour
  before AWS closes IAM connections (12 hours).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from iamdb._aws.credentials import Credentials
from iamdb._aws.signer import TOKEN_LIFETIME_SECONDS, generate_valkey_auth_token
from iamdb._core.env import (
    aws_region,
    ca_file_problem,
    client_name,
    env_host,
    env_number,
    env_text,
    env_value,
    instance_name,
    instance_prefix,
    is_region,
    settings_environ,
)
from iamdb.errors import ConfigError

if TYPE_CHECKING:
    from iamdb._aws.roles import Role

VALKEY_SUFFIXES = (
    "HOST",
    "PORT",
    "USER",
    "CACHE_NAME",
    "SERVICE",
    "SERVERLESS",
    "CLUSTER",
    "REGION",
    "SSLROOTCERT",
    "CONNECT_TIMEOUT",
    "REAUTH_SECONDS",
)
CONNECTION_LIMIT_SECONDS = 43_200
"""AWS closes an IAM-authenticated connection 12 hours after its last AUTH or HELLO."""
REAUTH_SECONDS = 39_600.0
"""Default login age at which ``get_valkey()`` re-authenticates a connection (11 hours)."""
_REAUTH_MAX = CONNECTION_LIMIT_SECONDS - 900  # an invocation (15 min at most) must fit before

_NAME = r"(?P<name>[a-z][a-z0-9-]{0,62})"
_ELASTICACHE = re.compile(
    rf"(?:(?P<role>master|replica|clustercfg)\.{_NAME}\.[a-z0-9]+\.[a-z0-9]+"
    r"|(?P<sname>[a-z][a-z0-9-]{0,62})-[a-z0-9]+\.serverless\.[a-z0-9]+"
    r"|[a-z0-9-]+\.[a-z0-9]+\.[0-9]+\.[a-z0-9]+)"  # a node's: its cache's name is not certain
    r"\.cache\.amazonaws\.com(?:\.cn)?\.?",
    re.IGNORECASE | re.ASCII,
)
_MEMORYDB = re.compile(
    rf"(?:clustercfg|[a-z0-9-]+)\.{_NAME}\.[a-z0-9]+\.memorydb\."
    r"(?P<region>[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2})\.amazonaws\.com(?:\.cn)?\.?",
    re.IGNORECASE | re.ASCII,
)
_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+=-]{0,127}", re.ASCII)


class CacheTarget(NamedTuple):
    """What a Valkey token is signed for: the cache (or MemoryDB cluster) name, the user, the
    region, the service and whether the cache is serverless (a :class:`~iamdb._aws.tokens.
    Signable`)."""

    cache_name: str
    user: str
    region: str
    service: str
    serverless: bool
    role: Role | None = None  # signed with the execution role's credentials (no role setting yet)

    @property
    def lifetime(self) -> int:
        return TOKEN_LIFETIME_SECONDS

    def sign(self, credentials: Credentials, now: datetime) -> str:
        """A token for this cache and user, signed at ``now``."""
        return generate_valkey_auth_token(
            self.cache_name,
            self.user,
            self.region,
            service=self.service,
            serverless=self.serverless,
            credentials=credentials,
            now=now,
        )


@dataclass(frozen=True)
class ValkeyConfig:
    """Everything needed to open IAM-authenticated connections to one cache."""

    name: str | None  # lower case: names are case-insensitive
    prefix: str  # "IAMDB_VALKEY_" or "IAMDB_VALKEY_<NAME>_": used in messages
    host: str
    port: int
    user: str
    cache_name: str
    service: str  # "elasticache" or "memorydb"
    serverless: bool
    cluster: bool
    region: str
    sslrootcert: str | None  # None: the system's public CA store
    connect_timeout: int
    reauth_seconds: float = REAUTH_SECONDS
    client_name: str = "iamdb"  # CLIENT SETNAME: AWS_LAMBDA_FUNCTION_NAME

    @property
    def label(self) -> str:
        """``valkey`` or ``valkey:<name>``: how logs and errors name this instance."""
        return "valkey" if self.name is None else f"valkey:{self.name}"

    @property
    def target(self) -> CacheTarget:
        return CacheTarget(self.cache_name, self.user, self.region, self.service, self.serverless)

    @property
    def action(self) -> str:
        """The IAM action a login needs: ``elasticache:Connect`` or ``memorydb:Connect``."""
        return f"{self.service}:Connect"


def load_valkey_config(
    name: str | None = None, environ: Mapping[str, str] | None = None
) -> ValkeyConfig:
    """Read and validate one instance's ``IAMDB_VALKEY_*`` settings (no network)."""
    env = settings_environ(environ)
    p = instance_prefix("valkey", name, VALKEY_SUFFIXES)
    host = env_host(env, p + "HOST")
    port = int(env_number(env, p + "PORT", 6379, low=1, high=65535, integer=True))
    user = env_text(env, p + "USER", required=True, max_len=128) or ""
    if not _USER.fullmatch(user):
        raise ConfigError(
            p + "USER", f"expected the IAM-enabled user's id (letters, digits, -), got {user!r:.80}"
        )
    elasticache = _ELASTICACHE.fullmatch(host)
    memorydb = _MEMORYDB.fullmatch(host)
    service = _choice(env, p + "SERVICE", ("elasticache", "memorydb"),
                      "memorydb" if memorydb else "elasticache")  # fmt: skip
    found_serverless = bool(elasticache and elasticache.group("sname"))
    serverless = _flag(env, p + "SERVERLESS", found_serverless)
    if serverless and service == "memorydb":
        raise ConfigError(p + "SERVERLESS", "MemoryDB has no serverless clusters: set it to false")
    cluster_endpoint = bool(elasticache and elasticache.group("role") == "clustercfg")
    cluster = _flag(env, p + "CLUSTER", cluster_endpoint or serverless or bool(memorydb))
    return ValkeyConfig(
        name=None if name is None else instance_name(name, VALKEY_SUFFIXES),
        prefix=p,
        host=host,
        port=port,
        user=user,
        cache_name=_cache_name(env, p, host, elasticache or memorydb),
        service=service,
        serverless=serverless,
        cluster=cluster,
        region=_region(env, p + "REGION", memorydb),
        sslrootcert=_rootcert(env, p + "SSLROOTCERT"),
        connect_timeout=int(
            env_number(env, p + "CONNECT_TIMEOUT", 5, low=1, high=300, integer=True)
        ),
        reauth_seconds=env_number(
            env, p + "REAUTH_SECONDS", REAUTH_SECONDS, low=1, high=_REAUTH_MAX
        ),
        client_name=client_name(env),
    )


def _cache_name(env: Mapping[str, str], p: str, host: str, match: re.Match[str] | None) -> str:
    value = env_text(env, p + "CACHE_NAME", required=False, max_len=128)
    if value is None:
        found = None if match is None else (match.group("name") or match.group("sname"))
        if found is None:
            raise ConfigError(
                p + "CACHE_NAME",
                f"not set, and {p}HOST={host!r:.80} is not an endpoint name that carries it "
                "(master., replica. or clustercfg.<name>.<id>.<region>.cache.amazonaws.com, "
                "<name>-<id>.serverless..., MemoryDB's clustercfg.<name>...): set it to the "
                "replication group, serverless cache or MemoryDB cluster name",
            )
        return found.lower()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value, re.ASCII):
        raise ConfigError(p + "CACHE_NAME", f"expected a cache or cluster name, got {value!r:.80}")
    return value


def _region(env: Mapping[str, str], var: str, memorydb: re.Match[str] | None) -> str:
    value = env_value(env, var)
    if value is not None:
        if not is_region(value):
            raise ConfigError(var, f"expected an AWS region such as 'us-east-1', got {value!r:.40}")
        return value
    if memorydb is not None:
        return memorydb.group("region").lower()
    return aws_region(
        env,
        "not set and AWS_REGION holds no valid region: set it to the cache's region, "
        "e.g. 'us-east-1'",
        var=var,
    )


def _rootcert(env: Mapping[str, str], var: str) -> str | None:
    value = env_value(env, var)
    if value is None:
        return None
    problem = ca_file_problem(value)
    if problem is not None:
        raise ConfigError(var, f"expected the path of a PEM CA bundle: {problem}")
    return value


def _flag(env: Mapping[str, str], var: str, default: bool) -> bool:
    value = env_value(env, var)
    if value is None:
        return default
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise ConfigError(var, f"expected true or false, got {value!r:.40}")
    return lowered == "true"


def _choice(env: Mapping[str, str], var: str, allowed: tuple[str, ...], default: str) -> str:
    value = env_value(env, var)
    if value is None:
        return default
    if value.lower() not in allowed:
        raise ConfigError(var, f"expected {' or '.join(allowed)}, got {value!r:.40}")
    return value.lower()
