"""Reuse IAM auth tokens until shortly before they expire: one cache for every kind of token.

AWS recommends reusing tokens (RDS throttles new IAM logins, about 200 per second per instance;
a token re-signed for every connection is wasted work everywhere), so every new connection of a
process presents the same token while it is fresh. A token is re-signed when it reaches
``refresh_seconds`` of age (default 840: one minute before the usual 15-minute lifetime ends; a
token whose lifetime the signer picks, DSQL's, at the same fraction of its own), at once when
the credentials change (rotation on Lambda, a refreshed assumed role), and after the server
refused it (:meth:`TokenCache.invalidate`).

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
from typing import Protocol

from iamdb._aws.chain import CredentialResolver, default_resolver
from iamdb._aws.credentials import Credentials
from iamdb._aws.signer import TOKEN_LIFETIME_SECONDS
from iamdb.errors import ConfigError

__all__ = ["Signable", "Token", "TokenCache"]


class Signable(Hashable, Protocol):
    """What a token is signed for: hashable (the cache's key), with the token's lifetime and
    the signature itself."""

    @property
    def lifetime(self) -> int:
        """Seconds the server accepts the token after its signing instant (``X-Amz-Expires``)."""

    def sign(self, credentials: Credentials, now: datetime) -> str:
        """A token signed at ``now``."""


_Key = tuple[Signable, str]  # what the token is for, access key


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


class TokenCache:
    """One token per (signing host, port, user, region, access key), reused while fresh.

    A token is reused until it is ``refresh_seconds`` old (default 840: one minute
    before RDS's 15-minute lifetime ends; an endpoint with another lifetime, DSQL's, at the
    same fraction of it: 3,360 s of 3,600) and re-signed at once when the credentials
    change (a new access key, or the same key with a different secret or session
    token); entries of credentials that are no longer current are dropped, so the cache
    never grows beyond the endpoints in use. Thread-safe: concurrent callers wanting
    the same token get one signature.

    The clock (epoch seconds) drives both the age check and the signing instant, so
    tests can move time.
    """

    def __init__(
        self,
        *,
        resolver: CredentialResolver | None = None,
        clock: Callable[[], float] = time.time,
        refresh_seconds: float = 840.0,
    ) -> None:
        if not 0 < refresh_seconds <= TOKEN_LIFETIME_SECONDS:
            raise ConfigError(
                "IAMDB_TOKEN_REFRESH_SECONDS",
                f"must be more than 0 and at most {TOKEN_LIFETIME_SECONDS} (the token lifetime)",
            )
        self._resolver = default_resolver if resolver is None else resolver
        self._clock = clock
        self._refresh_fraction = refresh_seconds / TOKEN_LIFETIME_SECONDS
        self._lock = threading.Lock()
        self._entries: dict[_Key, Token] = {}
        self._identity: tuple[str, str] | None = None  # (access key, fingerprint)

    def get(
        self,
        endpoint: Signable,
        *,
        deadline: float | None = None,
        on_sign: Callable[[], None] | None = None,
    ) -> Token:
        """A fresh token for ``endpoint``; signs only when needed.

        ``endpoint.host`` is the name the token is signed for (the real RDS endpoint);
        ``deadline`` bounds fetching credentials, if that is needed; ``on_sign`` is called
        when this call signed a new token (the ``TokensSigned`` metric: the only count of them).
        """
        creds = self._resolver.resolve(deadline)
        identity = (creds.access_key, creds.fingerprint())
        key = (endpoint, creds.access_key)
        with self._lock:
            if identity != self._identity:
                self._entries.clear()
                self._identity = identity
            now = self._clock()
            token = self._entries.get(key)
            # A negative age means the clock went back: sign again rather than trust it.
            if token is not None and 0 <= token.age(now) < self.refresh_age(endpoint):
                return token
            value = endpoint.sign(creds, datetime.fromtimestamp(now, timezone.utc))
            token = Token(value, now, creds.access_key)
            self._entries[key] = token
        if on_sign is not None:
            on_sign()
        return token

    def refresh_age(self, endpoint: Signable) -> float:
        """The age at which ``endpoint``'s token is re-signed (840 s of RDS's 900 by default)."""
        return self._refresh_fraction * endpoint.lifetime

    def peek(self, endpoint: Signable) -> Token | None:
        """The token cached for ``endpoint`` with the current credentials, if any (no signing,
        no credential lookup: what :func:`iamdb.info` reports)."""
        with self._lock:
            identity = self._identity
            return None if identity is None else self._entries.get((endpoint, identity[0]))

    def invalidate(self, endpoint: Signable) -> None:
        """Forget the token(s) of an endpoint, e.g. after the server refused one."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == endpoint]:
                del self._entries[key]

    def clear(self) -> None:
        """Forget every token."""
        with self._lock:
            self._entries.clear()
            self._identity = None
