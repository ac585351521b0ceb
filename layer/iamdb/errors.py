"""The one exception hierarchy of iamdb.

Every error iamdb raises derives from :class:`IamDbError`, so a handler can catch
them all in one place. Messages name what went wrong and what to check; they never
contain a token, secret key, session token or signature.
"""

from __future__ import annotations


class IamDbError(Exception):
    """Base class of every error raised by iamdb."""


class ConfigError(IamDbError, ValueError):
    """A setting is missing or malformed.

    Raised before any network call. ``variable`` names the environment variable
    (or argument) at fault.
    """

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


class AuthError(IamDbError):
    """The server (or STS) refused the login."""


class ConnectError(IamDbError):
    """The connection could not be made or kept: network, timeout or TLS."""


class CredentialsError(IamDbError):
    """No AWS credentials could be found to sign with."""


class ThrottleError(IamDbError):
    """No permit for a new IAM login could be had before the deadline, or the server kept
    refusing new connections for their rate (Aurora DSQL's SQLSTATE 53400).

    RDS throttles new IAM logins per instance, DSQL new connections per cluster; iamdb paces
    them (``IAMDB_CONNECT_RATE``, ``IAMDB_DSQL_CONNECT_RATE``, ``IAMDB_THROTTLE_TABLE``) and
    raises this instead of waiting past the invocation's remaining time (see
    :func:`iamdb.set_lambda_context`) or the limiter's own bound.
    """


class ConflictError(IamDbError):
    """A transaction kept failing with SQLSTATE 40001 (Aurora DSQL's optimistic concurrency)
    after every attempt :func:`iamdb.dsql_transaction` was allowed."""
