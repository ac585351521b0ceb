"""What a SQL driver's failure means: a refusal classified into :mod:`iamdb.errors`' types.

A refused IAM login looks like a bad password to the client, whatever the real cause.
The messages list the usual causes so the reader at 3 a.m. knows where to look. The
driver's own text is kept (scrubbed of the token, which drivers never print anyway). Every
error made here says where (``engine``, ``instance``, ``host``, ``port``); :func:`locate`
adds what only the login knows (``attempts``).

Not :mod:`iamdb.errors` itself: that module is loaded by ``import iamdb`` and stays free of
the configuration and token types this one reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

from iamdb._sql import dsql as _dsql
from iamdb.errors import AuthError, ConnectError, ThrottleError, TooManyConnectionsError

if TYPE_CHECKING:
    from iamdb._aws.tokens import Token
    from iamdb._sql.config import SqlConfig

# A throttled IAM login looks exactly like a bad password (PostgreSQL SQLSTATE 28000, MySQL
# 1045): refused logins are retried (IAMDB_AUTH_RETRIES), and the last refusal says this.
THROTTLING_HINT = (
    "IAM login throttling is one possible cause: RDS counts throttled IAM logins in the "
    "CloudWatch metric IamDbAuthConnectionFailureThrottling of the DB instance (non-zero at "
    "that time means throttling: lower IAMDB_CONNECT_RATE or set IAMDB_THROTTLE_TABLE; zero "
    "means look at the other causes)."
)


class Where(TypedDict):
    """Where a login went: the attributes of its errors (see :mod:`iamdb.errors`)."""

    engine: str
    instance: str
    host: str
    port: int


def where(cfg: SqlConfig) -> Where:
    """The attributes of an error about ``cfg``'s logins."""
    return Where(engine=cfg.engine, instance=cfg.label, host=cfg.host, port=cfg.port)


def locate(exc: AuthError | ConnectError | ThrottleError, cfg: SqlConfig, attempts: int) -> None:
    """Fill in what ``exc`` does not say yet of ``cfg`` and ``attempts``: errors made far from
    the configuration (the limiters', PyMySQL's TLS check) learn it here, before re-raising."""
    for key, value in {**where(cfg), "attempts": attempts}.items():
        if getattr(exc, key) is None:
            setattr(exc, key, value)


_DB_USER_SETUP = {
    "pg": "GRANT rds_iam TO {user}",
    "mysql": "CREATE USER '{user}' IDENTIFIED WITH AWSAuthenticationPlugin AS 'RDS'",
}


def scrub(text: str, *secrets: str) -> str:
    """Remove secrets (and the signature part of a token) from ``text``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text


_OWN_ACCOUNT = "(the database's own account: from another account, sign with a role there)"


def signer(cfg: SqlConfig) -> tuple[str, str]:
    """Who signed ``cfg``'s tokens, for messages: (``"the role <arn> (<P>ROLE_ARN)"`` or ``"the
    function"``, the account its policy must name: the role's, else ``<account>``)."""
    if cfg.role is None:
        return "the function", "<account>"
    return f"the role {cfg.role.arn} ({cfg.role.setting})", cfg.role.account


def auth_refused(cfg: SqlConfig, detail: str, token: Token) -> AuthError:
    """The server refused the IAM login."""
    if cfg.engine == "dsql":
        return _dsql_refused(cfg, detail, token)
    setup = _DB_USER_SETUP[cfg.engine].format(user=cfg.user)
    who, account = signer(cfg)
    return AuthError(
        f"{cfg.label}: the server at {cfg.host}:{cfg.port} refused the IAM login of user "
        f"{cfg.user!r} (token signed by {who} for {cfg.signing_host}:{cfg.signing_port}, region "
        f"{cfg.region}): {scrub(detail, token.value).strip()}. Usual causes: the database user "
        f"is not set up for IAM ({setup}); the IAM policy of {who} lacks rds-db:connect on "
        f"arn:aws:rds-db:{cfg.region}:{account}:dbuser:<DbiResourceId>/{cfg.user} "
        f"{_OWN_ACCOUNT}; IAM "
        "connection throttling (CloudWatch metric IamDbAuthConnectionFailureThrottling); the "
        "token was signed for another name than the RDS endpoint (set "
        f"{cfg.prefix}IAM_HOST when connecting through a CNAME, an IP or a tunnel) or region "
        f"(set {cfg.prefix}REGION).",
        **where(cfg),
    )


def _dsql_refused(cfg: SqlConfig, detail: str, token: Token) -> AuthError:
    action = cfg.target.action
    who, account = signer(cfg)
    grant = ""
    if cfg.user != _dsql.ADMIN_ROLE:
        arn = "<ARN>" if cfg.role is None else cfg.role.arn
        grant = f"the role is not granted to it (as admin: AWS IAM GRANT {cfg.user} TO '{arn}'); "
    return AuthError(
        f"{cfg.label}: the Aurora DSQL cluster at {cfg.host}:{cfg.port} refused the IAM login "
        f"of role {cfg.user!r} (token dsql:{action}, signed by {who} for {cfg.signing_host}, "
        f"region {cfg.region}): {scrub(detail, token.value).strip()}. Usual causes: the IAM "
        f"policy of {who} lacks dsql:{action} on "
        f"arn:aws:dsql:{cfg.region}:{account}:cluster/<cluster id> {_OWN_ACCOUNT} "
        f"(the admin role needs dsql:DbConnectAdmin, every other role dsql:DbConnect); {grant}"
        "the credentials the token was signed with expired; the token was signed for another "
        f"name than the cluster endpoint (set {cfg.prefix}IAM_HOST when connecting through a "
        f"tunnel or an IP) or region (set {cfg.prefix}REGION).",
        **where(cfg),
    )


def rate_refused(cfg: SqlConfig, detail: str, token: Token) -> ThrottleError:
    """Aurora DSQL refused a new connection for the cluster's connection rate (53400)."""
    return ThrottleError(
        f"{cfg.label}: the Aurora DSQL cluster at {cfg.host}:{cfg.port} refused a new "
        f"connection for its rate (SQLSTATE 53400): {scrub(detail, token.value).strip()}. "
        f"DSQL admits {_dsql.CONNECT_RATE:g} new connections per second per cluster, whoever "
        f"makes them: lower {cfg.prefix}CONNECT_RATE (now {cfg.connect_rate:g}) to leave room "
        "for other clients, or set IAMDB_THROTTLE_TABLE to pace the whole fleet.",
        **where(cfg),
    )


def connect_failed(cfg: SqlConfig, detail: str, token: Token, *, transient: bool) -> ConnectError:
    """The connection failed before or around the login: network, timeout or TLS. ``transient``:
    a later attempt may succeed (nothing listening yet, a restart, a timeout), so the login
    tries again while its deadline allows."""
    lowered = detail.lower()
    if "certificate" in lowered or "ssl" in lowered or "tls" in lowered:
        hint = (
            f" TLS is verified ({cfg.prefix}SSLMODE={cfg.sslmode}) against "
            f"{cfg.prefix}SSLROOTCERT={cfg.sslrootcert}; the host name must match the "
            "server certificate."
        )
    elif transient:
        hint = (
            " The server did not take the connection: it may be down, restarting or failing "
            "over, or a security group or network ACL drops the packets. iamdb tries again "
            f"until the invocation's deadline ({cfg.prefix}CONNECT_TIMEOUT bounds each try)."
        )
    else:
        hint = ""
    failure = ConnectError(
        f"{cfg.label}: could not connect to {cfg.host}:{cfg.port} as {cfg.user!r}: "
        f"{scrub(detail, token.value).strip()}.{hint}",
        **where(cfg),
    )
    failure._transient = transient
    return failure


def slots_full(
    cfg: SqlConfig, detail: str, token: Token, *, sqlstate: str, errno: int | None = None
) -> TooManyConnectionsError:
    """The server had no connection slot free (PostgreSQL and DSQL: SQLSTATE 53300; MySQL:
    ``errno`` 1040, 1203 or 1226). Leads with the server's own words (libpq's come after
    "FATAL:"); the login adds how long it waited and what the idle limit does."""
    said = scrub(detail.rpartition("FATAL:")[2], token.value).strip().rstrip(".")
    code = f"SQLSTATE {sqlstate}" if errno is None else f"error {errno}"
    if cfg.engine == "dsql":
        room = (
            "Aurora DSQL admits 10,000 connections per cluster by default (a quota that can be "
            "raised); connections left open elsewhere count too."
        )
    else:
        room = (
            "Every open connection holds a slot, idle ones of frozen Lambda environments too: "
            "keep the function's reserved concurrency at most the slots the server leaves this "
            "user, or connect through RDS Proxy with end-to-end IAM authentication."
        )
    return TooManyConnectionsError(
        f"{cfg.label}: no connection slot free for {cfg.user!r} on {cfg.host}:{cfg.port} "
        f"({code}: {said}). {room}",
        sqlstate=sqlstate,
        errno=errno,
        **where(cfg),
    )


def pool_exhausted(
    cfg: SqlConfig,
    pool: str,
    size: int,
    waited: float,
    advice: str,
    full: TooManyConnectionsError | None = None,
) -> ConnectError:
    """A pool (``pool`` says which) had none of its ``size`` connections free for ``waited``
    seconds; ``advice`` says how its connections are given back. ``full``: the server refused
    a new connection for want of a slot meanwhile, the cause (a TooManyConnectionsError)."""
    if full is not None:
        return TooManyConnectionsError(
            f"{cfg.label}: no connection from {pool} after {waited:.2f} s: a new one found no "
            f"slot free on the server: {full}",
            sqlstate=full.sqlstate,
            errno=full.errno,
            **where(cfg),
        )
    return ConnectError(
        f"{cfg.label}: no connection from {pool} after {waited:.2f} s: its {size} "
        f"connection(s) are in use, or none could be made in time ({advice}). The wait ends "
        "with the invocation's deadline.",
        **where(cfg),
    )
