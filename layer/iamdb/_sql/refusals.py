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
from iamdb.errors import AuthError, ConnectError, ThrottleError

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


def auth_refused(cfg: SqlConfig, detail: str, token: Token) -> AuthError:
    """The server refused the IAM login."""
    if cfg.engine == "dsql":
        return _dsql_refused(cfg, detail, token)
    setup = _DB_USER_SETUP[cfg.engine].format(user=cfg.user)
    return AuthError(
        f"{cfg.label}: the server at {cfg.host}:{cfg.port} refused the IAM login of user "
        f"{cfg.user!r} (token signed for {cfg.signing_host}:{cfg.signing_port}, region "
        f"{cfg.region}): {scrub(detail, token.value).strip()}. Usual causes: the database user "
        f"is not set up for IAM ({setup}); the function's IAM policy lacks rds-db:connect on "
        f"arn:aws:rds-db:{cfg.region}:<account>:dbuser:<DbiResourceId>/{cfg.user}; IAM "
        "connection throttling (CloudWatch metric IamDbAuthConnectionFailureThrottling); the "
        "token was signed for another name than the RDS endpoint (set "
        f"{cfg.prefix}IAM_HOST when connecting through a CNAME, an IP or a tunnel) or region "
        f"(set {cfg.prefix}REGION).",
        **where(cfg),
    )


def _dsql_refused(cfg: SqlConfig, detail: str, token: Token) -> AuthError:
    action = cfg.target.action
    grant = ""
    if cfg.user != _dsql.ADMIN_ROLE:
        grant = f"the role is not granted to it (as admin: AWS IAM GRANT {cfg.user} TO '<ARN>'); "
    return AuthError(
        f"{cfg.label}: the Aurora DSQL cluster at {cfg.host}:{cfg.port} refused the IAM login "
        f"of role {cfg.user!r} (token dsql:{action}, signed for {cfg.signing_host}, region "
        f"{cfg.region}): {scrub(detail, token.value).strip()}. Usual causes: the function's IAM "
        f"policy lacks dsql:{action} on arn:aws:dsql:{cfg.region}:<account>:cluster/<cluster id> "
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
    elif cfg.engine == "dsql" and any(m in lowered for m in _dsql.TOO_MANY_CONNECTIONS):
        hint = (
            " The cluster has as many open connections as its quota allows (10,000 by default,"
            " SQLSTATE 53300): connections left open elsewhere count too."
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


def pool_exhausted(
    cfg: SqlConfig, pool: str, size: int, waited: float, advice: str
) -> ConnectError:
    """A pool (``pool`` says which) had none of its ``size`` connections free for ``waited``
    seconds; ``advice`` says how its connections are given back."""
    return ConnectError(
        f"{cfg.label}: no connection from {pool} within {waited:.2f} s: its {size} "
        f"connection(s) are in use, or none could be made in time ({advice}). The wait ends "
        "with the invocation's deadline.",
        **where(cfg),
    )
