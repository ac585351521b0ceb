"""Check RDS IAM auth tokens the way RDS does, for devstack's database servers.

A token is a SigV4 presigned URL without its scheme (``host:port/?Action=connect&DBUser=...``).
The databases hand every login (user name + token) to :meth:`Verifier.verify`, which checks
shape, endpoint, scope, user, lifetime, credentials, signature and (optionally) RDS's
per-instance throttling of new IAM logins. This is an independent implementation on purpose:
iamdb is the thing under test, so nothing here imports it.

Refusals are logged at INFO on ``devstack.verifier`` with server, user, access key id and
reason; tokens, session tokens and signatures never appear in logs or events.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

log = logging.getLogger("devstack.verifier")

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "rds-db"
MAX_EXPIRES = 900  # RDS tokens live at most 15 minutes
SKEW = 300  # seconds of clock skew tolerated either way
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_REQUIRED = (
    "Action",
    "DBUser",
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)
_ALLOWED = {*_REQUIRED, "X-Amz-Security-Token"}


@dataclass(frozen=True)
class KeyInfo:
    """What AWS knows about an access key id: its secret, session token and principal."""

    secret_key: str
    session_token: str | None
    arn: str
    expires_at: float | None = None  # epoch seconds; None for long-term keys

    def __repr__(self) -> str:  # never show the secret or session token
        return f"KeyInfo(arn={self.arn!r}, session={self.session_token is not None})"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str


@dataclass(frozen=True)
class Event:
    """One login that reached the verifier (what tests assert on)."""

    server: str
    user: str
    ok: bool
    reason: str
    access_key: str


@dataclass
class _Server:
    host: str
    port: int
    region: str
    iam_rate: float | None
    accepted_at: deque[float]  # when new tokens were accepted (rolling one-second window)
    live_tokens: dict[str, float]  # signature -> time after which the token is dead


class Refused(Exception):
    """Internal: a check failed. ``reason`` is a short fixed code, ``detail`` is safe to log."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class _Token:
    host: str
    port: int
    params: dict[str, str]
    access_key: str
    scope_date: str
    region: str
    service: str
    signed_at: float
    expires: int


class Verifier:
    """Verify RDS IAM tokens for registered servers.

    ``lookup(access_key_id)`` returns the key's :class:`KeyInfo` or None (devstack reads
    moto's state; unit tests pass a dict's ``get``). ``clock`` returns epoch seconds.
    """

    def __init__(
        self,
        lookup: Callable[[str], KeyInfo | None],
        *,
        clock: Callable[[], float] = time.time,
        max_events: int = 10_000,
        authorize: Callable[[str, str, str], tuple[bool, str]] | None = None,
    ) -> None:
        self._lookup = lookup
        # (principal ARN, server, user) -> (ok, detail): the IAM policy check AWS makes
        self.authorize = authorize
        self._clock = clock
        self._servers: dict[str, _Server] = {}
        self._lock = threading.Lock()
        self.events: deque[Event] = deque(maxlen=max_events)

    def register_server(
        self, name: str, endpoint_host: str, port: int, region: str, iam_rate: float | None = None
    ) -> None:
        """Declare the ``host:port`` and region that tokens for ``name`` must be signed for."""
        with self._lock:
            self._servers[name] = _Server(
                endpoint_host.lower(), port, region, iam_rate, deque(), {}
            )

    def set_iam_rate(self, name: str, iam_rate: float | None) -> None:
        """Change the new-login limit (per rolling second) of a registered server."""
        with self._lock:
            self._servers[name].iam_rate = iam_rate
            self._servers[name].accepted_at.clear()

    def verify(self, server: str, user: str, token: str) -> Verdict:
        """Check one login; record an :class:`Event`; log refusals (without secrets)."""
        access_key = ""
        try:
            parsed = _parse(token)
            access_key = parsed.access_key
            self._check(server, user, parsed)
            verdict = Verdict(True, "ok")
        except Refused as refused:
            verdict = Verdict(False, refused.reason)
            log.info(
                "refused IAM login: server=%s user=%s access_key=%s reason=%s%s",
                server,
                user,
                access_key or "-",
                refused.reason,
                f" ({refused.detail})" if refused.detail else "",
            )
        self.events.append(Event(server, user, verdict.ok, verdict.reason, access_key))
        return verdict

    def _check(self, server: str, user: str, token: _Token) -> None:
        spec = self._servers.get(server)
        if spec is None:
            raise Refused("unknown server", server)
        _check_endpoint(spec, token)
        _check_scope(spec, token)
        if token.params["DBUser"] != user:
            raise Refused("wrong user", f"token is for {token.params['DBUser']!r:.80}")
        now = self._clock()
        _check_time(token, now)
        key = self._lookup(token.access_key)
        if key is None:
            raise Refused("unknown access key")
        _check_credentials(key, token, now)
        _check_signature(key, token)
        if self.authorize is not None:
            allowed, detail = self.authorize(key.arn, server, user)
            if not allowed:
                raise Refused("not authorized", detail)
        self._admit(spec, token, now)

    def _admit(self, spec: _Server, token: _Token, now: float) -> None:
        """RDS throttles new IAM logins per instance; a reused live token is not counted."""
        signature = token.params["X-Amz-Signature"]
        with self._lock:
            live = spec.live_tokens
            for sig in [s for s, dead_at in live.items() if dead_at < now]:
                del live[sig]
            if signature in live or spec.iam_rate is None:
                live.setdefault(signature, token.signed_at + token.expires + SKEW)
                return
            window = spec.accepted_at
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= spec.iam_rate:
                raise Refused("throttled", f"more than {spec.iam_rate:g} new IAM logins/s")
            window.append(now)
            live[signature] = token.signed_at + token.expires + SKEW


def _parse(token: str) -> _Token:
    """Split ``host:port/?query`` and check the query has exactly the expected parameters."""
    hostport, sep, query = token.partition("/?")
    host, colon, port_text = hostport.rpartition(":")
    if not sep or not colon or not host or not port_text.isdigit() or len(port_text) > 5:
        raise Refused("malformed", "expected host:port/?query")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise Refused("malformed", "bad query string") from None
    params = dict(pairs)
    if len(params) != len(pairs):
        raise Refused("malformed", "repeated parameter")
    missing = [k for k in _REQUIRED if not params.get(k)]
    extra = sorted(set(params) - _ALLOWED)
    if missing or extra:
        raise Refused("malformed", f"missing {missing} unexpected {extra}")
    if params["Action"] != "connect" or params["X-Amz-Algorithm"] != ALGORITHM:
        raise Refused("malformed", "Action must be connect, algorithm AWS4-HMAC-SHA256")
    if params["X-Amz-SignedHeaders"] != "host":
        raise Refused("malformed", "signed headers must be exactly 'host'")
    parts = params["X-Amz-Credential"].split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not parts[0]:
        raise Refused("malformed", "bad credential scope")
    try:
        signed_at = float(calendar.timegm(time.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ")))
        expires = int(params["X-Amz-Expires"])
    except ValueError:
        raise Refused("malformed", "bad X-Amz-Date or X-Amz-Expires") from None
    return _Token(
        host, int(port_text), params, parts[0], parts[1], parts[2], parts[3], signed_at, expires
    )


def _check_endpoint(spec: _Server, token: _Token) -> None:
    if token.host.lower() != spec.host:
        raise Refused("wrong host", f"signed for {token.host!r:.100}, server is {spec.host}")
    if token.port != spec.port:
        raise Refused("wrong port", f"signed for port {token.port}, server is {spec.port}")


def _check_scope(spec: _Server, token: _Token) -> None:
    if token.service != SERVICE:
        raise Refused("wrong service", f"signed for {token.service!r:.40}")
    if token.region != spec.region:
        raise Refused("wrong region", f"signed for {token.region!r:.40}, server is {spec.region}")
    if token.scope_date != token.params["X-Amz-Date"][:8]:
        raise Refused("wrong scope date", "credential date differs from X-Amz-Date")


def _check_time(token: _Token, now: float) -> None:
    if not 1 <= token.expires <= MAX_EXPIRES:
        raise Refused("bad expiry", f"X-Amz-Expires={token.expires}, allowed 1..{MAX_EXPIRES}")
    if token.signed_at > now + SKEW:
        raise Refused("future-dated", f"signed {token.signed_at - now:.0f} s in the future")
    if now > token.signed_at + token.expires + SKEW:
        raise Refused("expired", f"signed {now - token.signed_at:.0f} s ago")


def _check_credentials(key: KeyInfo, token: _Token, now: float) -> None:
    presented = token.params.get("X-Amz-Security-Token")
    if key.session_token is None:
        if presented is not None:
            raise Refused("wrong session token", "long-term key with a session token")
    elif presented is None or not hmac.compare_digest(
        presented.encode(), key.session_token.encode()
    ):
        raise Refused("wrong session token")
    if key.expires_at is not None and now > key.expires_at:
        raise Refused("credentials expired")


def _check_signature(key: KeyInfo, token: _Token) -> None:
    expected = signature_for(key.secret_key, token)
    if not hmac.compare_digest(expected.encode(), token.params["X-Amz-Signature"].encode()):
        raise Refused("bad signature")


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


def signature_for(secret_key: str, token: _Token) -> str:
    """Recompute the SigV4 query signature of a ``GET /`` with only the ``host`` header."""
    query = "&".join(
        f"{k}={v}"
        for k, v in sorted(
            (_encode(k), _encode(v)) for k, v in token.params.items() if k != "X-Amz-Signature"
        )
    )
    # As SigV4 clients do: lower-case host, no port when it is HTTPS's default.
    host = token.host.lower() if token.port == 443 else f"{token.host.lower()}:{token.port}"
    canonical = "\n".join(["GET", "/", query, f"host:{host}\n", "host", _EMPTY_SHA256])
    scope = f"{token.scope_date}/{token.region}/{token.service}/aws4_request"
    to_sign = "\n".join(
        [
            ALGORITHM,
            token.params["X-Amz-Date"],
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = f"AWS4{secret_key}".encode()
    for part in (token.scope_date, token.region, token.service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
