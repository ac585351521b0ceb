"""Turn a driver's refusal into iamdb's errors, with the causes worth checking.

A refused IAM login looks like a bad password to the client, whatever the real cause.
The messages list the usual causes so the reader at 3 a.m. knows where to look. The
driver's own text is kept (scrubbed of the token, which drivers never print anyway).
"""

from __future__ import annotations

from iamdb.config import SqlConfig
from iamdb.errors import AuthError, ConnectError
from iamdb.tokens import Token

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
        f"(set {cfg.prefix}REGION)."
    )


def connect_failed(cfg: SqlConfig, detail: str, token: Token) -> ConnectError:
    """The connection failed before or around the login: network, timeout or TLS."""
    hint = ""
    lowered = detail.lower()
    if "certificate" in lowered or "ssl" in lowered or "tls" in lowered:
        hint = (
            f" TLS is verified ({cfg.prefix}SSLMODE={cfg.sslmode}) against "
            f"{cfg.prefix}SSLROOTCERT={cfg.sslrootcert}; the host name must match the "
            "server certificate."
        )
    return ConnectError(
        f"{cfg.label}: could not connect to {cfg.host}:{cfg.port} as {cfg.user!r} within "
        f"{cfg.connect_timeout} s: {scrub(detail, token.value).strip()}.{hint}"
    )
