"""Connection slots: the idle limit that gives a frozen environment's slot back, and what a full
server says.

A database takes a fixed number of connections, and Lambda keeps idle environments frozen for
minutes to hours, each holding its connection (environments Lambda destroyed too, until the server
notices). So iamdb asks the server to close a session once it has sat idle longer than any
invocation can last (:class:`IdleLimit`): PostgreSQL >= 14 ``idle_session_timeout`` as a startup
option, MySQL and MariaDB ``SET SESSION wait_timeout`` after the login. A frozen environment's
connection is then closed by the server, and its next invocation reconnects transparently (the
health check of :mod:`iamdb._sql.managed`).

The limit is the function's timeout plus a margin. Lambda tells a function its timeout nowhere
but in the context: the time an invocation has left when :func:`iamdb.set_lambda_context` is
called is at most the timeout, so iamdb takes the longest seen (rounded up to whole seconds);
before any context, Lambda's maximum, 900 s. A connection never serves an invocation that could
outlast its limit: at every ``get_*()`` and checkout, one whose remaining budget is shorter than
the invocation's remaining time is confirmed with a round trip (which restarts the server's idle
clock). Between invocations, one whose limit is not a new one's (a longer timeout seen since, or
made before the timeout was known) has it set anew (``get_*()``: :meth:`IdleLimit.for_new`) or is
replaced (pools and SQLAlchemy's checkouts: :meth:`IdleLimit.misfit`).

Between invocations of a handler wrapped by :func:`iamdb.lambda_handler`, iamdb knows the
connection sits unused until the next invocation, so it asks for a shorter limit
(``<P>IDLE_BETWEEN_INVOCATIONS``, 60 s: :meth:`IdleLimit.between`), and the next invocation's
first ``get_*()`` sets the long one again in the round trip that confirms the connection.

Off: outside Lambda (no frozen environments), for Aurora DSQL (sessions end after an hour, and
its quota is 10,000 connections), for RDS Proxy endpoints (``SET`` and startup options pin a
proxy's session to its database connection), and once a server refused it (PostgreSQL < 14 does
not know ``idle_session_timeout``: logged once, the login tried again at once without it).

A full server refuses a login with PostgreSQL's SQLSTATE 53300 (:data:`FULL`) or MySQL's 1040,
1203, 1226 (:data:`MYSQL_FULL`): the drivers make it a
:class:`~iamdb.errors.TooManyConnectionsError`, which the login waits out like any failure a later
attempt may not meet.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from iamdb._core.env import INTEGER, env_value
from iamdb._core.log import logger
from iamdb.errors import ConfigError

if TYPE_CHECKING:
    from iamdb._core.invocation import Deadline

SUFFIX = "IDLE_SESSION_TIMEOUT"
"""The setting, after an instance's prefix: ``auto``, ``off`` or seconds."""

BETWEEN_SUFFIX = "IDLE_BETWEEN_INVOCATIONS"
"""The limit between invocations, after an instance's prefix: seconds or ``off``."""

BETWEEN_SECONDS = 60
"""The default limit between invocations: a frozen environment gives its slot back after a
minute; an environment invoked again within it keeps its connection."""

LAMBDA_MAX_TIMEOUT = 900
"""Seconds: the longest timeout a Lambda function can have (the limit when none is known)."""

MARGIN_CAP = 60
"""Seconds: the most added to the function's timeout (the margin is the timeout itself below)."""

GUARD = 1.0
"""Seconds a connection's idle budget must exceed what an invocation may still need of it."""

MAX_SECONDS = 86_400

IN_USE = "in use by another thread"
"""What a driver's ``set_idle_limit`` answers for a connection a command of another thread is
using (nothing sent): between invocations it keeps its limit; at an invocation's start, it is
replaced (left to that thread)."""

FULL = (
    "too many clients",  # every slot taken ("sorry, ... already", before authentication)
    "remaining connection slots are reserved",  # the rest is the superusers' (after it)
    "too many connections for role",  # the role's CONNECTION LIMIT
    "too many connections for database",  # the database's CONNECTION LIMIT
    "too many open connections",  # Aurora DSQL's quota
    "53300",
)
"""PostgreSQL's (and Aurora DSQL's) words for SQLSTATE 53300, too_many_connections, as libpq
reports a failed connect (the text only: no SQLSTATE comes with it)."""

MYSQL_FULL = {1040: "08004", 1203: "42000", 1226: "42000"}
"""MySQL's error numbers for a full server (1040), ``max_user_connections`` (1203) and a user's
resource limits (1226), with their SQLSTATE."""

_REFUSED = ('"idle_session_timeout"', "'wait_timeout'")
"""How a server that does not take the limit says so (PostgreSQL < 14: unrecognized
configuration parameter; a MySQL look-alike: unknown system variable)."""

_PROXY = re.compile(r"[^.]+\.proxy-[a-z0-9]+\.[a-z0-9-]+\.rds\.amazonaws\.com(?:\.cn)?\.?", re.I)


@dataclass(frozen=True)
class IdleSetting:
    """What ``<P>IDLE_SESSION_TIMEOUT`` says for one instance."""

    var: str  # the variable, for messages
    seconds: int | None = None  # a fixed limit (None: from the function's timeout)
    off: str | None = None  # why there is none (None: there is one)
    between: int | None = BETWEEN_SECONDS  # the limit between invocations (None: the same)


UNSET = IdleSetting(SUFFIX, off="not configured")


def load_idle(
    env: Mapping[str, str], prefix: str, engine: str, hosts: tuple[str, str]
) -> IdleSetting:
    """``<prefix>IDLE_SESSION_TIMEOUT`` for an instance of ``engine`` whose ``HOST`` and
    ``IAM_HOST`` are ``hosts``: ``auto`` (the default), ``off``, or whole seconds 1-86400."""
    var = prefix + SUFFIX
    value = (env_value(env, var) or "auto").lower()
    between_var = prefix + BETWEEN_SUFFIX
    between = _seconds(between_var, env_value(env, between_var) or str(BETWEEN_SECONDS), "off or")
    if value in ("off", "0"):
        return IdleSetting(var, off=f"{var}={value}")
    if value != "auto":
        seconds = _seconds(var, value, "auto, off or")
        if engine == "dsql":
            raise ConfigError(
                var, "Aurora DSQL ends every session after an hour itself: leave it unset or off"
            )
        return IdleSetting(var, seconds=seconds, between=between)
    if engine == "dsql":
        return IdleSetting(var, off="Aurora DSQL ends sessions itself, after an hour")
    if any(_PROXY.fullmatch(host) for host in hosts):
        return IdleSetting(
            var, off="an RDS Proxy endpoint (its IdleClientTimeout closes idle clients)"
        )
    if env_value(env, "AWS_LAMBDA_FUNCTION_NAME") is None:
        return IdleSetting(var, off="not in Lambda (no AWS_LAMBDA_FUNCTION_NAME)")
    return IdleSetting(var, between=between)


def _seconds(var: str, value: str, words: str) -> int | None:
    """``var``'s ``value`` as whole seconds 1-86400; None for ``off`` or ``0``."""
    value = value.lower()
    if value in ("off", "0"):
        return None
    if not INTEGER.fullmatch(value) or not 1 <= int(value) <= MAX_SECONDS:
        raise ConfigError(
            var, f"expected {words} whole seconds from 1 to {MAX_SECONDS}, got {value!r:.40}"
        )
    return int(value)


class IdleLimit:
    """The idle limit of an instance's connections: what a new one gets, whether a held one
    still fits the invocation, and whether the server refused it (then never again)."""

    def __init__(self, setting: IdleSetting, deadline: Deadline, label: str) -> None:
        self.setting = setting
        self._deadline = deadline
        self._label = label
        self.refused: str | None = None  # the server's words, once it refused the limit

    def for_new(self) -> int | None:
        """Seconds of idleness after which the server should close a connection opened now
        (None: ask for none)."""
        if self.setting.off is not None or self.refused is not None:
            return None
        if self.setting.seconds is not None:
            return self.setting.seconds
        timeout = self.timeout()
        return timeout + min(timeout, MARGIN_CAP)

    def between(self) -> int | None:
        """Seconds of idleness after which the server should close a connection left between
        invocations (the handler returned; :func:`iamdb.lambda_handler`), or None to leave its
        limit as it is: none in force, ``<P>IDLE_BETWEEN_INVOCATIONS=off``, or not shorter."""
        during, between = self.for_new(), self.setting.between
        if during is None or between is None or between >= during:
            return None
        return between

    def timeout(self) -> int:
        """The function's timeout as far as iamdb knows it (seconds): the most an invocation had
        left when its context was set, rounded up; Lambda's maximum before any context."""
        seen = self._deadline.longest
        return LAMBDA_MAX_TIMEOUT if seen <= 0 else min(LAMBDA_MAX_TIMEOUT, math.ceil(seen))

    def quiet(self, limit: int | None, left: float | None) -> float:
        """How long a connection the server closes after ``limit`` s idle (None: never) may have
        sat unused and still serve an invocation with ``left`` s to go (None: unknown, so the
        function's timeout) without a round trip first, which restarts the server's idle clock.
        Negative: it needs one whatever its idleness."""
        if limit is None:
            return math.inf
        return limit - (self.timeout() if left is None else left) - GUARD

    def misfit(self, limit: int | None, left: float | None) -> str | None:
        """Why a connection opened with ``limit`` should be replaced before it serves a new
        invocation with ``left`` s to go (None: it may serve): its limit is shorter than the
        invocation could last while a new one's would not be (a longer timeout seen since), or
        more than twice a new one's (made before the timeout was known)."""
        wanted = self.for_new()
        if limit is None or wanted is None or wanted == limit:
            return None
        if limit < (self.timeout() if left is None else left) + GUARD < wanted + GUARD:
            return f"its idle limit, {limit} s, is shorter than the invocation can last"
        if limit > 2 * wanted:
            return f"its idle limit, {limit} s, is far longer than the function needs ({wanted} s)"
        return None

    def refuses(self, failure: Exception, asked: int | None) -> bool:
        """Whether ``failure`` is the server refusing the limit a login asked for (``asked``);
        then the instance asks for none from now on, and says so once."""
        if asked is None or not any(m in str(failure) for m in _REFUSED):
            return False
        self.refused = str(failure)[:300]
        logger.warning(
            "%s: the server does not take an idle limit on sessions (PostgreSQL < 14 has no "
            "idle_session_timeout): logging in without one, so idle connections of frozen "
            "environments keep their slots. Upgrade to PostgreSQL 14 or later, or set %s=off.",
            self._label,
            self.setting.var,
        )
        return True

    def advice(self) -> str:
        """What the idle limit does now, for the error of a server without a free slot."""
        var = self.setting.var
        if self.refused is not None:
            return f"The server refused an idle limit on sessions ({var}; PostgreSQL < 14)."
        if self.setting.off is not None:
            return (
                f"No idle limit on sessions ({self.setting.off}): idle connections keep their "
                f"slots until the server closes them; {var}=<seconds> sets one."
            )
        during = f"The server closes this function's sessions idle {self.for_new()} s ({var}"
        if self.setting.seconds is None:
            during += (
                f"=auto: the function's timeout, {self.timeout()} s, and as much again up to 60 s"
            )
        during += ")"
        between = self.between()
        if between is None:
            return during + "."
        return (
            f"{during}, and {between} s between invocations of a handler wrapped by "
            f"iamdb.lambda_handler ({self.setting.var[: -len(SUFFIX)]}{BETWEEN_SUFFIX})."
        )
