"""Reuse RDS and Aurora DSQL IAM tokens until shortly before they expire.

AWS recommends reusing tokens, and new IAM logins are throttled (about 200 per second
per instance), so every new connection of a process should present the same token
while it is fresh. A token is re-signed when it reaches ``refresh_seconds`` of age
(default 840: one minute before RDS's 15-minute lifetime ends; a DSQL token, whose lifetime
the signer picks, at the same fraction of its own), at once when the credentials change
(rotation on Lambda, a renewed assumed role), and after the server refused it
(:meth:`TokenCache.invalidate`).

A target with a role (``<P>ROLE_ARN``) is signed with that role's credentials, from the
registry's :class:`~iamdb._aws.leases.Leases`, asked for credentials that outlive the token by
:data:`~iamdb._aws.roles.LEASE_MARGIN_SECONDS`; without one, the execution role's
(:mod:`iamdb._aws.chain`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, NamedTuple

from iamdb._aws.chain import CredentialResolver, default_resolver
from iamdb._aws.credentials import Credentials
from iamdb._aws.roles import LEASE_MARGIN_SECONDS, Role
from iamdb._aws.signer import (
    TOKEN_LIFETIME_SECONDS,
    generate_db_auth_token,
    generate_dsql_auth_token,
)
from iamdb.errors import ConfigError

if TYPE_CHECKING:
    from iamdb._aws.leases import Leases

__all__ = ["Target", "Token", "TokenCache"]


RDS_CONNECT = "connect"  # rds-db:connect
DSQL_CONNECT = "DbConnect"  # dsql:DbConnect, every role but admin
DSQL_CONNECT_ADMIN = "DbConnectAdmin"  # dsql:DbConnectAdmin, the admin role only


class Target(NamedTuple):
    """What a token is signed for: the endpoint name and port, the database user, the region,
    and the token's ``action`` and lifetime: RDS's ``connect`` (900 s, fixed), or Aurora DSQL's
    ``DbConnect`` / ``DbConnectAdmin`` with the lifetime the signer chooses; and by whom: the
    ``role`` to assume, or None for the execution role."""

    host: str
    port: int
    user: str
    region: str
    action: str = RDS_CONNECT
    lifetime: int = TOKEN_LIFETIME_SECONDS
    role: Role | None = None

    @property
    def dsql(self) -> bool:
        """An Aurora DSQL cluster: it limits every new connection, not only new tokens."""
        return self.action != RDS_CONNECT

    @property
    def key(self) -> str:
        """What the server throttles, so what the limiters pace, in lower case: ``host:port``
        for RDS (the instance), the cluster endpoint name for DSQL (its tokens have no port)."""
        return self.host.lower() if self.dsql else f"{self.host.lower()}:{self.port}"

    def sign(self, credentials: Credentials, now: datetime) -> str:
        """A token for this endpoint, signed at ``now``."""
        if self.dsql:
            return generate_dsql_auth_token(
                self.host,
                self.region,
                admin=self.action == DSQL_CONNECT_ADMIN,
                expires_in=self.lifetime,
                credentials=credentials,
                now=now,
            )
        return generate_db_auth_token(
            self.host, self.port, self.user, self.region, credentials=credentials, now=now
        )


@dataclass(frozen=True, repr=False)
class Token:
    """A signed token, when it was signed (cache clock) and with which access key."""

    value: str
    signed_at: float
    access_key: str

    def age(self, now: float) -> float:
        """Seconds since signing, on the clock that produced ``signed_at``."""
        return now - self.signed_at

    def __repr__(self) -> str:
        return (
            f"Token(signed_at={self.signed_at!r}, access_key={self.access_key!r}, "
            f"value=<hidden, {len(self.value)} chars>)"
        )


class _Entry(NamedTuple):
    token: Token
    identity: tuple[str, str]  # access key and fingerprint of the credentials that signed it


class TokenCache:
    """One token per target (signing host, port, user, region, role), reused while fresh.

    A token is reused until it is ``refresh_seconds`` old (default 840: one minute
    before RDS's 15-minute lifetime ends; an endpoint with another lifetime, DSQL's, at the
    same fraction of it: 3,360 s of 3,600) and re-signed at once when the credentials
    change (a new access key, or the same key with a different secret or session
    token); one entry per target, so the cache never grows beyond the targets in use.
    Thread-safe: concurrent callers wanting the same token get one signature.

    The clock (epoch seconds) drives both the age check and the signing instant, so
    tests can move time.
    """

    def __init__(
        self,
        *,
        resolver: CredentialResolver | None = None,
        clock: Callable[[], float] = time.time,
        refresh_seconds: float = 840.0,
        leases: Callable[[], Leases] | None = None,
    ) -> None:
        """``leases``: where roles' credentials come from (the registry's, made on first use);
        None: a target with a role is a ConfigError."""
        if not 0 < refresh_seconds <= TOKEN_LIFETIME_SECONDS:
            raise ConfigError(
                "IAMDB_TOKEN_REFRESH_SECONDS",
                f"must be more than 0 and at most {TOKEN_LIFETIME_SECONDS} (the token lifetime)",
            )
        self._resolver = default_resolver if resolver is None else resolver
        self._clock = clock
        self._refresh_fraction = refresh_seconds / TOKEN_LIFETIME_SECONDS
        self._leases = leases
        self._lock = threading.Lock()
        self._entries: dict[Target, _Entry] = {}

    def get(
        self,
        endpoint: Target,
        *,
        deadline: float | None = None,
        on_sign: Callable[[], None] | None = None,
        on_assume: Callable[[], None] | None = None,
    ) -> Token:
        """A fresh token for ``endpoint``; signs only when needed.

        ``endpoint.host`` is the name the token is signed for (the real RDS endpoint);
        ``deadline`` bounds fetching credentials (AssumeRole included), if that is needed;
        ``on_sign`` is called when this call signed a new token (the ``TokensSigned`` metric:
        the only count of them), ``on_assume`` when it assumed the target's role.
        """
        creds = self._credentials(endpoint, deadline, on_assume)
        identity = (creds.access_key, creds.fingerprint())
        with self._lock:
            now = self._clock()
            entry = self._entries.get(endpoint)
            # A negative age means the clock went back: sign again rather than trust it.
            if (
                entry is not None
                and entry.identity == identity
                and 0 <= entry.token.age(now) < self.refresh_age(endpoint)
            ):
                return entry.token
            value = endpoint.sign(creds, datetime.fromtimestamp(now, timezone.utc))
            token = Token(value, now, creds.access_key)
            self._entries[endpoint] = _Entry(token, identity)
        if on_sign is not None:
            on_sign()
        return token

    def _credentials(
        self, endpoint: Target, deadline: float | None, on_assume: Callable[[], None] | None
    ) -> Credentials:
        """The credentials that sign ``endpoint``: its role's (valid past the token's lifetime),
        else the execution role's."""
        if endpoint.role is None:
            return self._resolver.resolve(deadline)
        if self._leases is None:
            raise ConfigError(endpoint.role.setting, "no way to assume a role here")
        lease = self._leases().get(
            endpoint.role,
            needed=endpoint.lifetime + LEASE_MARGIN_SECONDS,
            deadline=self._clock() + 10.0 if deadline is None else deadline,
            on_assume=on_assume,
        )
        return lease.credentials

    def refresh_age(self, endpoint: Target) -> float:
        """The age at which ``endpoint``'s token is re-signed (840 s of RDS's 900 by default)."""
        return self._refresh_fraction * endpoint.lifetime

    def invalidate(self, endpoint: Target) -> None:
        """Forget the token(s) of an endpoint, e.g. after the server refused one."""
        with self._lock:
            self._entries.pop(endpoint, None)

    def clear(self) -> None:
        """Forget every token."""
        with self._lock:
            self._entries.clear()
