"""RDS, Aurora DSQL, ElastiCache and MemoryDB IAM auth tokens, signed with the standard library.

A token is a SigV4 query-presigned URL without its scheme::

    host:port/?Action=connect&DBUser=...&X-Amz-Algorithm=...&X-Amz-Signature=...   (RDS)
    host/?Action=DbConnect&X-Amz-Algorithm=...&X-Amz-Signature=...                 (DSQL)
    cache/?Action=connect&User=...[&ResourceType=ServerlessCache]&X-Amz-...         (ElastiCache)

RDS tokens are signed for service ``rds-db`` and live 900 seconds; DSQL tokens for service
``dsql``, without a port, with ``DbConnectAdmin`` for the ``admin`` role and a lifetime the
signer picks; ElastiCache (``elasticache``) and MemoryDB (``memorydb``) tokens for the cache's
name, not a host, 900 seconds. The output equals botocore's
``client("rds").generate_db_auth_token``, ``client("dsql").generate_db_connect_[admin_]auth_token``
and ``SigV4QueryAuth`` of the request AWS's ElastiCache and MemoryDB guides build, byte for
byte (same credentials, same instant), without importing botocore (half a second of cold
start) and about 20 times faster per token: one presigner serves them all, the fixed parts of
the canonical request are constants, and the SigV4 steps (signing-key cache included) are
:mod:`iamdb._aws.sigv4`'s.

botocore's rules reproduced here: the signed ``host`` header is the host name in lower
case, plus ``:port`` unless the port is 443 (the default of the ``https`` scheme
botocore signs under); bracketed IPv6 literals keep their brackets; query values are
percent-encoded as UTF-8 with only ``-_.~`` left alone; the canonical query string
sorts the parameters by name; the payload hash is the SHA-256 of an empty body.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from iamdb._aws import chain as _chain
from iamdb._aws import credentials as _credentials
from iamdb._aws.sigv4 import (
    ALNUM,
    encodable,
    is_region,
    percent_encode,
    scope,
    signature,
    timestamp,
)
from iamdb.errors import ConfigError

__all__ = [
    "DSQL_MAX_EXPIRES_SECONDS",
    "TOKEN_LIFETIME_SECONDS",
    "VALKEY_SERVICES",
    "generate_db_auth_token",
    "generate_dsql_auth_token",
    "generate_valkey_auth_token",
]

TOKEN_LIFETIME_SECONDS = 900
"""How long RDS accepts a token after its signing instant (``X-Amz-Expires``)."""

DSQL_MAX_EXPIRES_SECONDS = 604_800
"""The longest lifetime (``X-Amz-Expires``, one week) a DSQL token may be signed with."""

VALKEY_SERVICES = ("elasticache", "memorydb")
"""The services a Valkey / Redis OSS token is signed for: ElastiCache's, MemoryDB's."""

_RDS_SERVICE = "rds-db"
_DSQL_SERVICE = "dsql"
_EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()
_FIXED_QUERY = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="

# Character sets are checked with ``not text.strip(chars)`` (empty when only those
# characters occur): compiling regular expressions at import costs more than the checks.
_HOST_CHARS = ALNUM + "._-"
# The zone of an IPv6 literal as RFC 6874 (and botocore) accept it: "%25" or "%" then
# unreserved characters or percent-escapes.
_IPV6_ZONE = r"%(?:[A-Za-z0-9._!~-]|%[0-9A-Fa-f]{2})+\Z"  # compiled on use: IPv6 is rare


def generate_db_auth_token(
    hostname: str,
    port: int,
    username: str,
    region: str,
    *,
    credentials: object | None = None,
    now: datetime | None = None,
) -> str:
    """An RDS IAM auth token for ``username`` at ``hostname:port`` in ``region``.

    ``hostname`` must be the real RDS endpoint name (or a bracketed IPv6 literal): the
    signature covers it. ``credentials`` is any object with ``access_key``,
    ``secret_key`` and ``token`` attributes; None resolves them with
    :data:`iamdb._aws.chain.default_resolver` (environment first). ``now`` is the
    timezone-aware signing instant; None means the current time. The token is valid for
    :data:`TOKEN_LIFETIME_SECONDS` from that instant.

    Raises ConfigError naming the bad argument, or CredentialsError.
    """
    creds = _held(credentials)
    del credentials  # the caller's object may show its secrets: no frame keeps it from here
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ConfigError("port", "must be an integer from 1 to 65535")
    host = _signed_host(hostname)
    user = _encode("username", username)
    query = _presign(
        host if port == 443 else f"{host}:{port}",
        f"Action=connect&DBUser={user}",
        _RDS_SERVICE,
        region,
        TOKEN_LIFETIME_SECONDS,
        creds,
        now,
    )
    return f"{hostname}:{port}/?{query}"


def generate_dsql_auth_token(
    hostname: str,
    region: str,
    *,
    admin: bool = False,
    expires_in: int = 900,
    credentials: object | None = None,
    now: datetime | None = None,
) -> str:
    """An Aurora DSQL auth token for the cluster endpoint ``hostname`` in ``region``.

    ``admin=True`` signs ``DbConnectAdmin``, the action DSQL requires for the ``admin``
    role; every other role needs ``DbConnect`` (``admin=False``). The signed host has no
    port. ``expires_in`` is the lifetime in seconds, 1 to :data:`DSQL_MAX_EXPIRES_SECONDS`
    (botocore's default is 900). ``credentials`` and ``now`` as in
    :func:`generate_db_auth_token`.

    Raises ConfigError naming the bad argument, or CredentialsError.
    """
    creds = _held(credentials)
    del credentials  # as in generate_db_auth_token
    host = _signed_host(hostname)
    if not isinstance(admin, bool):
        raise ConfigError("admin", "must be True or False")
    if (
        not isinstance(expires_in, int)
        or isinstance(expires_in, bool)
        or not 1 <= expires_in <= DSQL_MAX_EXPIRES_SECONDS
    ):
        raise ConfigError(
            "expires_in", f"must be an integer from 1 to {DSQL_MAX_EXPIRES_SECONDS} (seconds)"
        )
    action = "Action=DbConnectAdmin" if admin else "Action=DbConnect"
    query = _presign(host, action, _DSQL_SERVICE, region, expires_in, creds, now)
    return f"{hostname}/?{query}"


def generate_valkey_auth_token(
    cache_name: str,
    user: str,
    region: str,
    *,
    service: str = "elasticache",
    serverless: bool = False,
    credentials: object | None = None,
    now: datetime | None = None,
) -> str:
    """An IAM auth token for ``user`` of the ElastiCache cache (replication group or serverless
    cache) or MemoryDB cluster ``cache_name`` in ``region``: the password of ``AUTH <user>
    <token>`` or ``HELLO 3 AUTH <user> <token>``.

    ``service`` is ``"elasticache"`` or ``"memorydb"``; ``serverless=True`` (ElastiCache only)
    adds ``ResourceType=ServerlessCache``. The signed request is ``GET http://<cache_name>/``
    with ``Action``, ``User`` and ``ResourceType`` in that order, as AWS's guides build it; the
    token lives :data:`TOKEN_LIFETIME_SECONDS`. ``credentials`` and ``now`` as in
    :func:`generate_db_auth_token`.

    Raises ConfigError naming the bad argument, or CredentialsError.
    """
    creds = _held(credentials)
    del credentials  # as in generate_db_auth_token
    host = _signed_host(cache_name)
    name = _encode("user", user)
    if service not in VALKEY_SERVICES:
        raise ConfigError("service", f"must be one of {', '.join(VALKEY_SERVICES)}")
    if not isinstance(serverless, bool) or (serverless and service != "elasticache"):
        raise ConfigError("serverless", "must be True or False, and True only for elasticache")
    listed = f"Action=connect&User={name}"
    if serverless:  # the canonical query sorts it before User; the URL lists it last
        sorted_params = f"Action=connect&ResourceType=ServerlessCache&User={name}"
        listed += "&ResourceType=ServerlessCache"
    else:
        sorted_params = listed
    query = _presign(
        host, sorted_params, service, region, TOKEN_LIFETIME_SECONDS, creds, now, listed=listed
    )
    return f"{cache_name}/?{query}"


def _held(credentials: object | None) -> _credentials.Credentials | None:
    """The caller's credentials as iamdb's :class:`~iamdb._aws.credentials.Credentials`, whose repr
    hides the secrets (None: resolve them when signing)."""
    return None if credentials is None else _credentials.as_credentials(credentials)


def _presign(
    host_header: str,
    action: str,
    service: str,
    region: str,
    expires_in: int,
    credentials: _credentials.Credentials | None,
    now: datetime | None,
    *,
    listed: str | None = None,
) -> str:
    """The token's query string, ``X-Amz-Signature`` last (SigV4 query presigning).

    ``action`` holds the already encoded parameters that precede ``X-Amz-*`` in sorted
    order (``Action=...`` and, for RDS, ``DBUser=...``); ``listed`` the same parameters in
    the order the URL lists them, when that differs (ElastiCache's ``ResourceType``).
    Validates region, instant and credentials, in that order, after the caller validated its
    own arguments.
    """
    if not is_region(region):
        raise ConfigError("region", "must be an AWS region name such as 'us-east-1'")
    stamp = timestamp(now)
    creds = _chain.default_resolver.resolve() if credentials is None else credentials
    if not encodable(creds):  # checked before any local holds a secret
        raise ConfigError("credentials", "keys and token must be encodable as UTF-8")
    return _signed_query(
        host_header, action, service, region, stamp, expires_in, creds, listed or action
    )


def _signed_query(
    host_header: str,
    action: str,
    service: str,
    region: str,
    stamp: str,
    expires_in: int,
    creds: _credentials.Credentials,
    listed: str,
) -> str:
    """SigV4 query presigning of ``GET /`` with only the ``host`` header signed (``action``
    sorted for the canonical query, ``listed`` as the URL lists it)."""
    # The credential is "key/scope" percent-encoded; the scope's only escapes are its "/".
    credential_scope = scope(stamp, region, service).replace("/", "%2F")
    credential = f"{percent_encode(creds.access_key)}%2F{credential_scope}"
    tail = f"&{_FIXED_QUERY}{credential}&X-Amz-Date={stamp}&X-Amz-Expires={expires_in}"
    head, url_head = action + tail, listed + tail
    if creds.token is None:
        canonical_query = f"{head}&X-Amz-SignedHeaders=host"
        query = f"{url_head}&X-Amz-SignedHeaders=host"
    else:
        security = f"X-Amz-Security-Token={_encoded_session_token(creds.token)}"
        # The URL lists the token last; the canonical form sorts it before SignedHeaders.
        query = f"{url_head}&X-Amz-SignedHeaders=host&{security}"
        canonical_query = f"{head}&{security}&X-Amz-SignedHeaders=host"
    canonical_request = (
        f"GET\n/\n{canonical_query}\nhost:{host_header}\n\nhost\n{_EMPTY_BODY_SHA256}"
    )
    signed_with = signature(canonical_request, creds.secret_key, stamp, region, service)
    return f"{query}&X-Amz-Signature={signed_with}"


def _signed_host(hostname: object) -> str:
    """The host name as the signed ``host`` header carries it (before any ``:port``)."""
    if not isinstance(hostname, str) or not hostname:
        raise ConfigError("hostname", "must be a non-empty string")
    if not hostname.strip(_HOST_CHARS):
        return hostname.lower()
    if hostname.startswith("[") and hostname.endswith("]"):
        return _ipv6_host(hostname)
    raise ConfigError(
        "hostname",
        "must be a DNS name or IP address (letters, digits, '.', '-', '_'; IPv6 in brackets)",
    )


def _ipv6_host(hostname: str) -> str:
    """``[address%zone]`` with the address lower-cased exactly as ``urlsplit`` does."""
    import ipaddress
    import re
    from urllib.parse import urlsplit

    inner = hostname[1:-1]
    _, percent, zone = inner.partition("%")
    lowered = None
    try:
        ipaddress.IPv6Address(inner)
        if not percent or re.match(_IPV6_ZONE, percent + zone):
            # urlsplit lower-cases the address but (on recent Pythons) not the zone.
            lowered = urlsplit(f"https://{hostname}/").hostname
    except ValueError:
        pass
    if lowered is None:
        raise ConfigError("hostname", "not a valid bracketed IPv6 address")
    return f"[{lowered}]"


def _encode(name: str, value: object) -> str:
    """Percent-encode a query value as UTF-8 (``-_.~`` and alphanumerics stay)."""
    if not isinstance(value, str) or not value:
        raise ConfigError(name, "must be a non-empty string")
    try:
        return percent_encode(value)
    except UnicodeEncodeError:  # lone surrogates
        pass
    raise ConfigError(name, "cannot be encoded as UTF-8")


_token_memo: tuple[str, str] = ("", "")


def _encoded_session_token(token: str) -> str:
    """The percent-encoded session token, memoized: it is long (~1,000 chars on Lambda)
    and the same for every token signed until the credentials rotate."""
    global _token_memo
    memo = _token_memo
    if memo[0] != token:
        memo = _token_memo = (token, percent_encode(token))
    return memo[1]
