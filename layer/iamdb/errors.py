"""The one exception hierarchy of iamdb.

Every error iamdb raises derives from :class:`IamDbError`, so a handler can catch
them all in one place. Messages name what went wrong and what to check; they never
contain a token, secret key, session token or signature.

Login failures (:class:`AuthError`, :class:`ConnectError`, :class:`ThrottleError`) also say
where, as attributes a handler can read without parsing the message, as botocore's
``ClientError`` carries its operation: ``engine`` (``pg``, ``mysql``, ``dsql``, ``mongo``),
``instance`` (``pg`` or ``pg:reporting``, as log lines name it), ``host`` and ``port`` (the
server connected to; a MongoDB replica set lists its hosts, comma-separated, with no port),
and ``attempts`` (how many logins were tried). Each is None where it is not known.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    E = TypeVar("E", bound=BaseException)


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


class MissingDependencyError(ConfigError, ImportError):
    """A driver or extra that what was asked for needs is not installed.

    ``module`` (also ImportError's ``name``) is the module that is missing, ``extra`` the
    iamdb extra that brings it (the message says ``pip install 'iamdb[<extra>]'``),
    ``variable`` the setting of the instance (or the module, e.g. ``iamdb.sqlalchemy``) that
    asked for it. A :class:`ConfigError` (raised before any network call: the deployment
    lacks a package) and an ``ImportError`` (what code that probes for drivers catches).
    """

    def __init__(self, variable: str, module: str, extra: str, detail: str = "") -> None:
        detail = f" ({detail})" if detail else ""
        super().__init__(
            variable, f"{module} is not installed{detail}: pip install 'iamdb[{extra}]'"
        )
        self.name = module
        self.module = module
        self.extra = extra


class _LoginFailure(IamDbError):
    """What :class:`AuthError`, :class:`ConnectError` and :class:`ThrottleError` share: where
    the login went (see the module's docstring). Keyword-only, all optional."""

    def __init__(
        self,
        message: str = "",
        *,
        engine: str | None = None,
        instance: str | None = None,
        host: str | None = None,
        port: int | None = None,
        attempts: int | None = None,
    ) -> None:
        super().__init__(message)
        self.engine = engine
        self.instance = instance
        self.host = host
        self.port = port
        self.attempts = attempts


class AuthError(_LoginFailure):
    """The server (or STS) refused the login."""


class ConnectError(_LoginFailure):
    """The connection could not be made or kept: network, timeout or TLS."""

    _transient = False  # iamdb's own mark: a later attempt may succeed (the login retries)


class TooManyConnectionsError(ConnectError):
    """The server had no connection slot free for the login, until the deadline.

    Every connection takes a slot (PostgreSQL's ``max_connections`` less its reserved ones,
    MySQL's ``max_connections``, a role's or user's own limit), idle ones of frozen Lambda
    environments included. iamdb waits for a slot, trying again with jittered backoff, and
    raises this when none freed in time. ``sqlstate`` is the server's (PostgreSQL and Aurora
    DSQL ``53300``; MySQL ``08004`` or ``42000``), ``errno`` MySQL's error number (1040 too
    many connections, 1203 ``max_user_connections``, 1226 a user resource limit; None for
    PostgreSQL).
    """

    _transient = True  # a slot may free: the login tries again while its deadline allows

    def __init__(
        self, message: str = "", *, sqlstate: str | None = None, errno: int | None = None,
        **where: Any,
    ) -> None:  # fmt: skip
        super().__init__(message, **where)
        self.sqlstate = sqlstate
        self.errno = errno


class CredentialsError(IamDbError):
    """No AWS credentials could be found to sign with."""


class ThrottleError(_LoginFailure):
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


def _detached(exc: E) -> E:
    """``exc`` without traceback, cause or context, ready to be kept or raised elsewhere.

    What iamdb does to an exception it caught before keeping it: its traceback's frames (and
    those of its ``__context__``) may hold a token, a secret key or a signed request, and a
    crash reporter serialises every frame's locals. Private: iamdb's modules share it.
    """
    exc.__traceback__ = None
    exc.__cause__ = None
    exc.__context__ = None
    exc.__suppress_context__ = False
    return exc
