"""Check IAM auth tokens the way RDS and Aurora DSQL do, for devstack's database servers.

A token is a SigV4 presigned URL without its scheme: ``host:port/?Action=connect&DBUser=...``
for RDS, ``host/?Action=DbConnect`` (``DbConnectAdmin`` for the ``admin`` role) for DSQL,
``cache-name/?Action=connect&User=...`` for ElastiCache (devstack's Valkey front).
Each server is registered with its :class:`Kind` (:data:`RDS` or :data:`DSQL`), the names it
answers to (an Aurora instance answers to its cluster's writer and reader endpoints and to its
own; :meth:`Verifier.rename` plays a Blue/Green switchover) and the account it lives in. The
databases hand every login (user name + token) to :meth:`Verifier.verify`, which checks
shape, scope, endpoint, action and user, lifetime, credentials, signature, the account (RDS
and DSQL admit only principals of the database's own account: another account's function
signs with a role it assumes there), the IAM policy, DSQL's ``AWS IAM GRANT`` of custom roles
and (optionally) the throttling of new IAM logins.
This is an independent implementation on purpose: iamdb is the thing under test, so nothing
here imports it.

Refusals are logged at INFO on ``devstack.verifier`` with server, user, access key id and
reason; tokens, session tokens and signatures never appear in logs or events.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from devstack.sigv4 import OPTIONAL_PARAMS, SIGV4_PARAMS, Refused, Token, parse, signature_for

log = logging.getLogger("devstack.verifier")

SKEW = 300  # seconds of clock skew tolerated either way
DSQL_ADMIN = "admin"  # the one DSQL role that logs in with DbConnectAdmin


@dataclass(frozen=True)
class Kind:
    """What a server's tokens must look like: the service they are signed for, their
    longest lifetime, whether the signed host carries the port, the ``Action`` each user
    needs and the parameter naming the user (if any)."""

    name: str
    service: str
    max_expires: int
    signs_port: bool
    action: str
    admin_action: str | None = None  # the action the admin role needs instead
    user_param: str | None = None

    def action_for(self, user: str) -> str:
        return self.admin_action if self.admin_action and user == DSQL_ADMIN else self.action

    @property
    def params(self) -> frozenset[str]:
        """The parameters a token must carry (besides the optional session token)."""
        return frozenset(SIGV4_PARAMS + ((self.user_param,) if self.user_param else ()))


RDS = Kind("rds", "rds-db", 900, True, "connect", user_param="DBUser")
"""RDS and Aurora (and RDS Proxy): ``rds-db``, 15 minutes, ``host:port``, ``DBUser``."""
DSQL = Kind("dsql", "dsql", 604_800, False, "DbConnect", admin_action="DbConnectAdmin")
"""Aurora DSQL: ``dsql``, up to a week, host without port, ``DbConnectAdmin`` for admin."""
ELASTICACHE = Kind("elasticache", "elasticache", 900, False, "connect", user_param="User")
"""ElastiCache (node-based): ``elasticache``, 15 minutes, the cache's name as the host, ``User``
(a serverless cache's tokens carry ``ResourceType=ServerlessCache``, refused here as malformed)."""


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
    kind: Kind
    hosts: frozenset[str]  # the names tokens may be signed for, lower case
    port: int | None  # None: tokens are signed without a port (DSQL)
    region: str
    account: str | None  # None: any account's principals (unit tests)
    iam_rate: float | None
    iam_grants: dict[str, frozenset[str]]  # DSQL: role -> IAM ARNs (AWS IAM GRANT)
    accepted_at: deque[float]  # when new tokens were accepted (rolling one-second window)
    live_tokens: dict[str, float]  # signature -> time after which the token is dead


class Verifier:
    """Verify IAM auth tokens for registered servers.

    ``lookup(access_key_id)`` returns the key's :class:`KeyInfo` or None (devstack reads
    moto's state; unit tests pass a dict's ``get``). ``clock`` returns epoch seconds.
    ``authorize(principal_arn, server, user, action)`` is the IAM policy check AWS makes
    (``action`` is ``rds-db:connect``, ``dsql:DbConnect`` or ``dsql:DbConnectAdmin``).
    """

    def __init__(
        self,
        lookup: Callable[[str], KeyInfo | None],
        *,
        clock: Callable[[], float] = time.time,
        max_events: int = 10_000,
        authorize: Callable[[str, str, str, str], tuple[bool, str]] | None = None,
    ) -> None:
        self._lookup = lookup
        self.authorize = authorize
        self._clock = clock
        self._servers: dict[str, _Server] = {}
        self._lock = threading.Lock()
        self.events: deque[Event] = deque(maxlen=max_events)
        self.new_tokens: dict[str, int] = {}
        """Per server, logins accepted with a token it had not accepted before: what RDS counts
        against its IAM login rate (a reused token is not throttled)."""

    def register_server(
        self,
        name: str,
        endpoint_host: str,
        port: int | None,
        region: str,
        iam_rate: float | None = None,
        *,
        kind: Kind = RDS,
        iam_grants: Mapping[str, Iterable[str]] | None = None,
        also: Iterable[str] = (),
        account: str | None = None,
    ) -> None:
        """Declare the endpoint (``host:port``; DSQL: the host, ``port=None``) and region
        that tokens for ``name`` must be signed for (``also``: other names of the server, on the
        same port), and the ``account`` whose principals alone may log in. ``iam_grants``
        (DSQL only) maps each custom role to the IAM role or user ARNs granted it (``AWS IAM
        GRANT``)."""
        if kind.signs_port != (port is not None):
            raise ValueError(
                f"{kind.name} servers need port={'a number' if kind.signs_port else None}"
            )
        if iam_grants and kind is not DSQL:
            raise ValueError("iam_grants are DSQL's")
        grants = {role: frozenset(arns) for role, arns in (iam_grants or {}).items()}
        hosts = frozenset(h.lower() for h in (endpoint_host, *also))
        with self._lock:
            self._servers[name] = _Server(
                kind, hosts, port, region, account, iam_rate, grants, deque(), {}
            )

    def rename(self, name: str, hosts: Iterable[str]) -> None:
        """The names ``name`` answers to from now on (a Blue/Green switchover renames)."""
        with self._lock:
            self._servers[name].hosts = frozenset(h.lower() for h in hosts)

    def names(self, name: str) -> frozenset[str]:
        """The names ``name`` answers to now."""
        return self._servers[name].hosts

    def set_iam_rate(self, name: str, iam_rate: float | None) -> None:
        """Change the new-login limit (per rolling second) of a registered server."""
        with self._lock:
            self._servers[name].iam_rate = iam_rate
            self._servers[name].accepted_at.clear()

    def verify(self, server: str, user: str, token: str) -> Verdict:
        """Check one login; record an :class:`Event`; log refusals (without secrets)."""
        access_key = ""
        try:
            parsed = parse(token)
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

    def _check(self, server: str, user: str, token: Token) -> None:
        spec = self._servers.get(server)
        if spec is None:
            raise Refused("unknown server", server)
        _check_scope(spec, token)
        _check_endpoint(spec, token)
        _check_request(spec.kind, user, token)
        now = self._clock()
        _check_time(spec.kind, token, now)
        key = self._lookup(token.access_key)
        if key is None:
            raise Refused("unknown access key")
        _check_credentials(key, token, now)
        _check_signature(key, token)
        _check_account(spec, key)
        if self.authorize is not None:
            action = f"{token.service}:{token.params['Action']}"
            allowed, detail = self.authorize(key.arn, server, user, action)
            if not allowed:
                raise Refused("not authorized", detail)
        _check_grant(spec, user, key)
        self._admit(server, spec, token, now)

    def _admit(self, server: str, spec: _Server, token: Token, now: float) -> None:
        """RDS throttles new IAM logins per instance; a reused live token is not counted."""
        signature = token.params["X-Amz-Signature"]
        with self._lock:
            live = spec.live_tokens
            for sig in [s for s, dead_at in live.items() if dead_at < now]:
                del live[sig]
            if signature in live or spec.iam_rate is None:
                if signature not in live:
                    self.new_tokens[server] = self.new_tokens.get(server, 0) + 1
                live.setdefault(signature, token.signed_at + token.expires + SKEW)
                return
            window = spec.accepted_at
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= spec.iam_rate:
                raise Refused("throttled", f"more than {spec.iam_rate:g} new IAM logins/s")
            window.append(now)
            live[signature] = token.signed_at + token.expires + SKEW
            self.new_tokens[server] = self.new_tokens.get(server, 0) + 1


def _check_scope(spec: _Server, token: Token) -> None:
    if token.service != spec.kind.service:
        raise Refused(
            "wrong service", f"signed for {token.service!r:.40}, server wants {spec.kind.service}"
        )
    if token.region != spec.region:
        raise Refused("wrong region", f"signed for {token.region!r:.40}, server is {spec.region}")
    if token.scope_date != token.params["X-Amz-Date"][:8]:
        raise Refused("wrong scope date", "credential date differs from X-Amz-Date")


def _check_endpoint(spec: _Server, token: Token) -> None:
    if token.host.lower() not in spec.hosts:
        names = ", ".join(sorted(spec.hosts))
        raise Refused("wrong host", f"signed for {token.host!r:.100}, server is {names}")
    if spec.kind.signs_port and token.port is None:
        raise Refused("malformed", "expected host:port/?query")
    if token.port != spec.port:
        wanted = "no port" if spec.port is None else f"port {spec.port}"
        raise Refused("wrong port", f"signed for port {token.port}, server wants {wanted}")


def _check_request(kind: Kind, user: str, token: Token) -> None:
    """The parameters are exactly the kind's, and the action and user are this login's."""
    params = token.params
    missing = sorted(kind.params - set(params))
    extra = sorted(set(params) - kind.params - set(OPTIONAL_PARAMS))
    if missing or extra:
        raise Refused("malformed", f"missing {missing} unexpected {extra}")
    if params["Action"] not in (kind.action, kind.admin_action):
        raise Refused("malformed", f"Action {params['Action']!r:.40} is not a {kind.name} action")
    if kind.user_param and params[kind.user_param] != user:
        raise Refused("wrong user", f"token is for {params[kind.user_param]!r:.80}")
    needed = kind.action_for(user)
    if params["Action"] != needed:
        raise Refused("wrong action", f"{user!r:.80} logs in with {needed}")


def _check_grant(spec: _Server, user: str, key: KeyInfo) -> None:
    """DSQL: a custom role admits only the IAM identities ``AWS IAM GRANT`` mapped to it."""
    if spec.kind is not DSQL or user == DSQL_ADMIN:
        return
    identity = iam_identity(key.arn)
    if identity not in spec.iam_grants.get(user, frozenset()):
        raise Refused("no IAM grant", f"no AWS IAM GRANT {user:.80} TO '{identity}'")


def _check_account(spec: _Server, key: KeyInfo) -> None:
    """A database admits principals of its own account only."""
    account = principal_account(key.arn)
    if spec.account is not None and account != spec.account:
        raise Refused(
            "wrong account",
            f"{key.arn:.120} is in account {account}, the database in {spec.account}: "
            "sign with a role of the database's account",
        )


def principal_account(arn: str) -> str:
    """The 12-digit account of a principal ARN (``arn:aws:sts::<account>:assumed-role/...``)."""
    parts = arn.split(":")
    return parts[4] if len(parts) > 4 else ""


def iam_identity(arn: str) -> str:
    """The IAM role or user ARN behind a principal (an assumed-role session maps to its role)."""
    prefix, sep, rest = arn.partition(":assumed-role/")
    if not sep:
        return arn
    return f"{prefix.replace(':sts:', ':iam:', 1)}:role/{rest.split('/', 1)[0]}"


def _check_time(kind: Kind, token: Token, now: float) -> None:
    if not 1 <= token.expires <= kind.max_expires:
        raise Refused("bad expiry", f"X-Amz-Expires={token.expires}, allowed 1..{kind.max_expires}")
    if token.signed_at > now + SKEW:
        raise Refused("future-dated", f"signed {token.signed_at - now:.0f} s in the future")
    if now > token.signed_at + token.expires + SKEW:
        raise Refused("expired", f"signed {now - token.signed_at:.0f} s ago")


def _check_credentials(key: KeyInfo, token: Token, now: float) -> None:
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


def _check_signature(key: KeyInfo, token: Token) -> None:
    expected = signature_for(key.secret_key, token)
    if not hmac.compare_digest(expected.encode(), token.params["X-Amz-Signature"].encode()):
        raise Refused("bad signature")
