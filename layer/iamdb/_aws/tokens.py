"""Reuse IAM auth tokens until shortly before they expire: one cache for every kind of token.

AWS recommends reusing tokens (RDS throttles new IAM logins, about 200 per second per instance;
a token re-signed for every connection is wasted work everywhere), so every new connection of a
process presents the same token while it is fresh. A token is re-signed when it reaches
``refresh_seconds`` of age (default 840: one minute before the usual 15-minute lifetime ends; a
token whose lifetime the signer picks, DSQL's, at the same fraction of its own), at once when
the credentials change (rotation on Lambda, a refreshed assumed role), and after the server
refused it (:meth:`TokenCache.invalidate`).

A target with a role (``<P>ROLE_ARN``) is signed with that role's credentials, from the
registry's :class:`~iamdb._aws.leases.Leases`, asked for credentials that outlive the token by
:data:`~iamdb._aws.roles.LEASE_MARGIN_SECONDS`; without one, the execution role's
(:mod:`iamdb._aws.chain`).

What a token is signed for is the caller's (:class:`Signable`): RDS and DSQL endpoints
(:class:`iamdb._sql.tokens.Target`), ElastiCache and MemoryDB caches
(:class:`iamdb._valkey.config.CacheTarget`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, NamedTuple, Protocol

from iamdb._aws.chain import CredentialResolver, default_resolver
from iamdb._aws.credentials import Credentials
from iamdb._aws.signer import TOKEN_LIFETIME_SECONDS
from iamdb.errors import ConfigError

if TYPE_CHECKING:
    from iamdb._aws.leases import Leases
    from iamdb._aws.roles import Role

__all__ = ["Signable", "Token", "TokenCache"]


class Signable(Hashable, Protocol):
    """What a token is signed for: hashable (the cache's key), with the token's lifetime and
    the signature itself."""

    @property
    def lifetime(self) -> int:
        """Seconds the server accepts the token after its signing instant (``X-Amz-Expires``)."""

    @property
    def role(self) -> Role | None:
        """The role whose credentials sign the token, or None for the execution role's."""

    def sign(self, credentials: Credentials, now: datetime) -> str:
        """A token signed at ``now``."""


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
    """One token per target (what it is signed for, and by which role), reused while fresh.

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
        self._entries: dict[Signable, _Entry] = {}

    def get(
        self,
        endpoint: Signable,
        *,
        deadline: float | None = None,
        on_sign: Callable[[], None] | None = None,
        on_assume: Callable[[], None] | None = None,
    ) -> Token:
        """A fresh token for ``endpoint``; signs only when needed.

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
        self, endpoint: Signable, deadline: float | None, on_assume: Callable[[], None] | None
    ) -> Credentials:
        """The credentials that sign ``endpoint``: its role's (valid past the token's lifetime),
        else the execution role's."""
        role = endpoint.role
        if role is None:
            return self._resolver.resolve(deadline)
        if self._leases is None:
            raise ConfigError(role.setting, "no way to assume a role here")
        from iamdb._aws.roles import LEASE_MARGIN_SECONDS  # only with a role: not on cold paths

        lease = self._leases().get(
            role,
            needed=endpoint.lifetime + LEASE_MARGIN_SECONDS,
            deadline=self._clock() + 10.0 if deadline is None else deadline,
            on_assume=on_assume,
        )
        return lease.credentials

    def refresh_age(self, endpoint: Signable) -> float:
        """The age at which ``endpoint``'s token is re-signed (840 s of RDS's 900 by default)."""
        return self._refresh_fraction * endpoint.lifetime

    def peek(self, endpoint: Signable) -> Token | None:
        """The token last signed for ``endpoint``, if any (no signing, no credential lookup:
        what :func:`iamdb.info` reports)."""
        with self._lock:
            entry = self._entries.get(endpoint)
            return None if entry is None else entry.token

    def invalidate(self, endpoint: Signable) -> None:
        """Forget the token(s) of an endpoint, e.g. after the server refused one."""
        with self._lock:
            self._entries.pop(endpoint, None)

    def clear(self) -> None:
        """Forget every token."""
        with self._lock:
            self._entries.clear()
