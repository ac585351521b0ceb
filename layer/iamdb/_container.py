"""Credentials from the container credentials endpoint (Lambda SnapStart, ECS, EKS Pod Identity).

With SnapStart, Lambda sets no ``AWS_ACCESS_KEY_ID``: it sets
``AWS_CONTAINER_CREDENTIALS_FULL_URI`` and ``AWS_CONTAINER_AUTHORIZATION_TOKEN`` (or
``..._TOKEN_FILE``), and the function fetches its credentials over HTTP. iamdb does that
itself (botocore's import would be paid after every restore), caches them, and fetches again
shortly before their ``Expiration``. The rules are botocore's: a plain-HTTP full URI must point
at loopback or the documented link-local addresses (the authorization token must not leave
the host), a relative URI goes to ``169.254.170.2``; each fetch is bounded (2 s, or less when
the caller's deadline is nearer).
"""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Callable, Mapping

from iamdb._credentials import Credentials, expiry_seconds
from iamdb._http import HttpConnection, TransportError
from iamdb._log import logger
from iamdb._net import split_url
from iamdb.errors import ConfigError, CredentialsError

FULL_URI = "AWS_CONTAINER_CREDENTIALS_FULL_URI"
RELATIVE_URI = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"
TOKEN = "AWS_CONTAINER_AUTHORIZATION_TOKEN"
TOKEN_FILE = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
FETCH_SECONDS = 2.0  # botocore's container fetch timeout
REFRESH_SECONDS = 300.0  # fetch again this long before expiry (or at half-life if sooner)
KEEP_SECONDS = 60.0  # a failed refresh keeps credentials that have this much left
_LINK_LOCAL = {"169.254.170.2", "169.254.170.23", "fd00:ec2::23"}


def configured(environ: Mapping[str, str]) -> bool:
    """Whether the environment names a container credentials endpoint."""
    return bool((environ.get(FULL_URI) or environ.get(RELATIVE_URI) or "").strip())


class ContainerCredentials:
    """Fetches and caches one endpoint's credentials. Thread-safe."""

    def __init__(self, environ: Mapping[str, str], clock: Callable[[], float]) -> None:
        self._environ = environ
        self._clock = clock
        self._lock = threading.Lock()
        self._current: Credentials | None = None
        self._expires_at = 0.0
        self._refresh_at = 0.0

    def get(self, deadline: float | None = None) -> Credentials:
        """The cached credentials, fetched first when missing or due for refresh."""
        current = self._current
        if current is not None and self._clock() < self._refresh_at:
            return current
        with self._lock:
            now = self._clock()
            if self._current is not None and now < self._refresh_at:
                return self._current
            try:
                creds, expires_at = self._fetch(deadline)
            except CredentialsError as exc:
                if self._current is not None and self._expires_at - now > KEEP_SECONDS:
                    logger.warning("iamdb: refreshing container credentials failed (%s)", exc)
                    self._refresh_at = now + 10.0
                    return self._current
                raise
            lifetime = max(0.0, expires_at - now)
            self._current, self._expires_at = creds, expires_at
            self._refresh_at = expires_at - min(REFRESH_SECONDS, lifetime / 2)
            return creds

    def _fetch(self, deadline: float | None) -> tuple[Credentials, float]:
        scheme, host, port, path = _target(self._environ)
        named = host if ":" not in host else f"[{host}]"
        default = 443 if scheme == "https" else 80
        headers = {
            "host": named if port == default else f"{named}:{port}",
            "accept": "application/json",
        }
        token = _authorization(self._environ)
        if token is not None:
            headers["authorization"] = token
        now = self._clock()
        until = now + FETCH_SECONDS if deadline is None else min(deadline, now + FETCH_SECONDS)
        connection = HttpConnection(scheme, host, port, clock=self._clock, environ=self._environ)
        try:
            answer = connection.request("GET", path, headers, b"", until)
        except TransportError as exc:
            raise CredentialsError(f"container credentials endpoint: {exc}") from None
        finally:
            connection.close()
        try:
            data = json.loads(answer.body)
        except (ValueError, RecursionError):  # RecursionError: garbage nested past the stack
            data = None
        if answer.status != 200 or not isinstance(data, dict):
            why = data.get("message") or data.get("Message") if isinstance(data, dict) else None
            raise CredentialsError(
                f"container credentials endpoint {host}:{port} answered HTTP {answer.status}"
                + (f": {str(why)[:200]}" if why else "")
            )
        key, secret = data.get("AccessKeyId"), data.get("SecretAccessKey")
        session, expiration = data.get("Token"), data.get("Expiration")
        expires_at = expiry_seconds(expiration) if isinstance(expiration, str) else None
        if not (isinstance(key, str) and key and isinstance(secret, str) and secret):
            raise CredentialsError("container credentials endpoint answered without credentials")
        if (session is not None and not isinstance(session, str)) or expires_at is None:
            raise CredentialsError(
                "container credentials endpoint answered a malformed Expiration or Token"
            )
        return Credentials(key, secret, session or None), expires_at


def _target(environ: Mapping[str, str]) -> tuple[str, str, int, str]:
    """(scheme, host, port, path?query) of the endpoint; ConfigError when not allowed."""
    relative = (environ.get(RELATIVE_URI) or "").strip()  # botocore: it wins over FULL_URI
    var, url = (RELATIVE_URI, "") if relative else (FULL_URI, (environ.get(FULL_URI) or "").strip())
    if relative:
        if not relative.startswith("/"):
            raise ConfigError(RELATIVE_URI, "expected a path starting with '/'")
        url = f"http://169.254.170.2{relative}"
    parts, host, port = split_url(var, url)
    if parts.scheme == "http" and not _allowed_http_host(host):
        raise ConfigError(
            var,
            f"plain http is allowed only to loopback or {', '.join(sorted(_LINK_LOCAL))}, "
            f"got host {host!r:.80}",
        )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, host, port, path


def _allowed_http_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or str(address) in _LINK_LOCAL


def _authorization(environ: Mapping[str, str]) -> str | None:
    path = (environ.get(TOKEN_FILE) or "").strip()
    if path:
        try:
            with open(path, encoding="utf-8") as file:
                token = file.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = type(exc).__name__
            raise ConfigError(TOKEN_FILE, f"cannot read {path!r:.200}: {why}") from None
    else:
        token = (environ.get(TOKEN) or "").strip()
    if not token:
        return None
    if "\r" in token or "\n" in token or not token.isprintable():
        var = TOKEN_FILE if path else TOKEN
        raise ConfigError(var, "the authorization token has control characters")
    return token
