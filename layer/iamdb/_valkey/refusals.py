"""What a failed Valkey login means: valkey-py's errors classified into :mod:`iamdb.errors`' types,
with the usual causes named (the SQL twin is :mod:`iamdb._sql.refusals`).

ElastiCache and MemoryDB answer every refused IAM login alike (``WRONGPASS invalid
username-password pair or user is disabled``): a user that is not IAM-enabled or not in the
cache's user group, a user id that differs from its name, a policy without ``Connect`` on the
cache and the user, a token signed for another cache or region, expired credentials. Errors made
here never hold a token: valkey-py's messages come from the server or the socket.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

from iamdb.errors import AuthError, ConnectError, IamDbError, _detached

if TYPE_CHECKING:
    from iamdb._valkey.config import ValkeyConfig

_REFUSED = ("wrongpass", "invalid username-password", "noauth", "noperm", "user is disabled")
_TLS = ("ssl", "tls", "certificate", "wrong version number", "handshake")
# What a later attempt may not meet: nothing listening yet, a restart, a failover, a timeout.
_TRANSIENT = ("refused", "reset", "timed out", "timeout", "closed", "loading", "unreachable",
              "no route", "broken pipe", "tryagain", "clusterdown", "masterdown")  # fmt: skip


def login_failure(cfg: ValkeyConfig, exc: BaseException) -> BaseException:
    """iamdb's error for a failed login (``exc`` detached from its frames first), or ``exc``
    itself when it is iamdb's already (credentials) or not a failure (an interrupt)."""
    if isinstance(exc, IamDbError) or not isinstance(exc, Exception):
        return _detached(exc)
    detail = f"{type(exc).__name__}: {str(exc)[:300].rstrip('. ')}"
    lowered = detail.lower()
    if any(marker in lowered for marker in _REFUSED):
        return refused(cfg, detail)
    if any(marker in lowered for marker in _TLS):
        return _tls_failed(cfg, detail)
    failure = ConnectError(
        f"{cfg.label}: could not connect to {cfg.host}:{cfg.port}: {detail}. The cache did not "
        "take the connection: it may be down, failing over or scaling, or a security group or "
        f"network ACL drops the packets ({cfg.prefix}CONNECT_TIMEOUT bounds each try).",
        **_where(cfg),
    )
    failure._transient = any(marker in lowered for marker in _TRANSIENT)
    return failure


def refused(cfg: ValkeyConfig, detail: str) -> AuthError:
    """The cache refused the IAM login."""
    kind = "MemoryDB" if cfg.service == "memorydb" else "ElastiCache"
    resource = "cluster" if cfg.service == "memorydb" else (
        "serverlesscache" if cfg.serverless else "replicationgroup")  # fmt: skip
    return AuthError(
        f"{cfg.label}: {kind} at {cfg.host}:{cfg.port} refused the IAM login of user "
        f"{cfg.user!r} (token {cfg.action} for {kind.lower()} {cfg.cache_name!r}, region "
        f"{cfg.region}): {detail}. Usual causes: the function's IAM policy lacks {cfg.action} on "
        f"both arn:aws:{cfg.service}:{cfg.region}:<account>:{resource}:{cfg.cache_name} and "
        f"arn:aws:{cfg.service}:{cfg.region}:<account>:user:{cfg.user}; the user is not "
        "IAM-enabled (authentication mode iam), not in the cache's user group (ACL), or its id "
        f"differs from its name; {cfg.prefix}CACHE_NAME, {cfg.prefix}REGION or "
        f"{cfg.prefix}SERVERLESS do not match the cache; the credentials expired.",
        **_where(cfg),
    )


def _tls_failed(cfg: ValkeyConfig, detail: str) -> ConnectError:
    ca = cfg.sslrootcert or "the system's public CA store"
    return ConnectError(
        f"{cfg.label}: TLS with {cfg.host}:{cfg.port} failed: {detail}. IAM authentication "
        "requires in-transit encryption: a cache without it answers in plaintext (enable "
        "TransitEncryption on the cache). Otherwise the certificate must chain to "
        f"{ca} ({cfg.prefix}SSLROOTCERT) and name {cfg.host}.",
        **_where(cfg),
    )


class _Where(TypedDict):
    engine: str
    instance: str
    host: str
    port: int


def _where(cfg: ValkeyConfig) -> _Where:
    return _Where(engine="valkey", instance=cfg.label, host=cfg.host, port=cfg.port)
