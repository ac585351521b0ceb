"""One new IAM login, written once for blocking and for asyncio callers.

A login reads top to bottom (:meth:`Login._steps`): for each attempt before the deadline, get
the token, take the permits if the server counts this login (RDS: a token it has not accepted
yet; Aurora DSQL: every connection), connect; a refusal (an RDS one may be throttling, a DSQL
one can say so) is retried with backoff, at most ``IAMDB_AUTH_RETRIES`` times. The
steps are a generator that yields what must happen (a permit, a connect, a sleep) and is told
what happened (:mod:`iamdb._core.steps`): :meth:`Login.connect` runs them blocking,
:meth:`Login.connect_async` awaits them (permits in a worker thread, the driver's async
connect, ``asyncio.sleep``). The singletons, the pools and the async getters all
log in through one :class:`Login` per instance, so they share its token cache, permits, retry
rules, TLS settings and the token the server last accepted.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, TypeVar

from iamdb._aws.tokens import Token, TokenCache
from iamdb._core.backoff import DecorrelatedJitter, final_error
from iamdb._core.log import logger
from iamdb._core.steps import run, run_async
from iamdb._core.telemetry import Probe
from iamdb._sql.config import SqlConfig
from iamdb._sql.refusals import THROTTLING_HINT, locate
from iamdb.errors import AuthError, ConnectError, ThrottleError, _detached

if TYPE_CHECKING:
    from iamdb._core.invocation import Deadline
    from iamdb._core.runtime import Runtime
    from iamdb._sql.limits import Limits

C = TypeVar("C")


Until = tuple[Callable[[], float], float]
"""A clock and a deadline (seconds on that clock): what bounds a driver's wait."""


class Driver(Protocol[C]):
    """What a login needs from a database driver (and a managed connection, to check it)."""

    engine: str

    def connect(self, cfg: SqlConfig, token: Token, until: Until, **options: Any) -> C: ...
    def fileno(self, conn: C) -> int: ...
    def is_closed(self, conn: C) -> bool: ...
    def transaction(self, conn: C) -> str | None: ...
    def ping(self, conn: C, until: Until) -> str | None: ...
    def close(self, conn: C, wait: float = 0.0) -> bool: ...


class _Permit(NamedTuple):
    server: str
    deadline: float
    rate: float | None  # logins/s the server admits (None: IAMDB_CONNECT_RATE)


class _Connect(NamedTuple):
    token: Token
    deadline: float


class _Sleep(NamedTuple):
    seconds: float


_Step = _Permit | _Connect | _Sleep
_FAILURES = (AuthError, ThrottleError, ConnectError)  # what a step may raise: thrown into the steps


class Login(Generic[C]):
    """New logins to one instance (``cfg``), blocking or awaited. Thread-safe."""

    def __init__(
        self,
        cfg: SqlConfig,
        driver: Driver[C],
        tokens: TokenCache,
        *,
        runtime: Runtime,
        limits: Limits,
        deadline: Deadline,
        retries: int,
        probe: Probe,
    ) -> None:
        self.cfg = cfg
        self.driver = driver
        self.probe = probe  # metrics and subsegments
        self._tokens = tokens
        self._rt = runtime
        self._limits = limits
        self._deadline = deadline
        self._retries = retries
        self.accepted: Token | None = None
        """The token the server last accepted: logins reusing it need no permit."""
        self.last_login: float | None = None  # epoch seconds of the last new connection

    def connect(self, deadline: float | None = None, **options: Any) -> C:
        """Log in once more (blocking): a new connection, or AuthError / ThrottleError /
        ConnectError when none could be had before ``deadline`` (clock seconds; None: the
        registry's deadline for a login starting now).

        ``options`` go to the driver's connect (``autocommit=False`` for the pools and
        SQLAlchemy, the settings a SQLAlchemy dialect passes); they cannot replace iamdb's
        connection, TLS or login parameters."""

        def do(step: _Step) -> Any:
            if isinstance(step, _Permit):
                return self._limits.permit(step.server, step.deadline, self.probe, rate=step.rate)
            if isinstance(step, _Connect):
                until = (self._rt.clock, step.deadline)
                return self.driver.connect(self.cfg, step.token, until, **options)
            self._rt.sleep(step.seconds)
            return None

        with self.probe.span("connect"):
            conn: C = run(self._steps(deadline), do, _FAILURES)
            return conn

    async def connect_async(
        self,
        connect: Callable[[SqlConfig, Token, Until], Awaitable[Any]],
        deadline: float | None = None,
    ) -> Any:
        """Log in once more without blocking the event loop: ``connect`` is the driver's async
        connect (``PgDriver.connect_async``); permits are waited for in a worker thread."""
        import asyncio

        async def do(step: _Step) -> Any:
            if isinstance(step, _Permit):
                return await asyncio.to_thread(
                    self._limits.permit, step.server, step.deadline, self.probe, rate=step.rate
                )
            if isinstance(step, _Connect):
                return await connect(self.cfg, step.token, (self._rt.clock, step.deadline))
            await asyncio.sleep(step.seconds)
            return None

        with self.probe.span("connect"):
            return await run_async(self._steps(deadline), do, _FAILURES)

    def _steps(self, deadline: float | None) -> Generator[_Step, Any, Any]:
        """The login's steps; the runner sends back each step's result or throws its failure.

        A refusal is tried again at most ``IAMDB_AUTH_RETRIES`` times with a new token; a
        connection that failed in a way a later attempt may not meet (nothing listening yet,
        a restart, a timeout) is tried again while the deadline allows. Every wait (permits,
        the connect, backoff) ends by the deadline, which is checked again after each wait:
        a process frozen in between finds it passed and stops."""
        cfg, server, clock = self.cfg, self.cfg.target, self._rt.clock
        if deadline is None:
            deadline = self._deadline.at(cfg.connect_timeout)
        started = clock()
        backoff = DecorrelatedJitter(uniform=self._rt.uniform)
        refusals = 0
        for attempt in itertools.count(1):
            token = self._tokens.get(server, deadline=deadline, on_sign=self._signed)
            ticket = None
            # RDS does not count a token it accepted before; DSQL counts every connection.
            if server.dsql or token is not self.accepted:
                try:
                    ticket = yield _Permit(server.key, deadline, cfg.connect_rate)
                except ThrottleError as exc:  # the limiters know the server, not the instance
                    locate(exc, cfg, attempt)
                    raise
            try:
                conn = yield _Connect(token, deadline)
            except _FAILURES as exc:
                failure = _detached(exc)  # its frames held the token
            else:
                self._limits.release(ticket)
                self.accepted, self.last_login = token, clock()
                self._logged_in(token)
                return conn
            locate(failure, cfg, attempt)
            if isinstance(failure, ConnectError):
                retry = failure._transient
                self.probe.count("ConnectRetries" if retry else "ConnectFailures")
            else:
                refusals += 1
                retry = refusals <= self._retries
                self.probe.count(
                    "AuthFailures" if type(failure) is AuthError else "ServerThrottled"
                )
                self._tokens.invalidate(server)  # the next attempt signs anew
            delay = backoff.next_delay()
            if retry and clock() + delay <= deadline:
                yield _Sleep(delay)
                if clock() < deadline:  # not frozen past it while sleeping
                    if not isinstance(failure, ConnectError):
                        self.probe.count("AuthRetries")
                    continue
            # DSQL tells throttling apart (SQLSTATE 53400); an RDS refusal may be throttling.
            hint = THROTTLING_HINT if refusals and not server.dsql else ""
            raise final_error(failure, attempt, clock() - started, hint)
        raise AssertionError("unreachable")  # pragma: no cover

    def _signed(self) -> None:
        self.probe.count("TokensSigned")

    def _logged_in(self, token: Token) -> None:
        self.probe.count("ConnectionsOpened")
        logger.info(
            "%s: logged in to %s:%s as %s (token age %.0f s)",
            self.cfg.label,
            self.cfg.host,
            self.cfg.port,
            self.cfg.user,
            token.age(self._rt.clock()),
        )
