"""One new IAM login, written once for blocking and for asyncio callers.

A login reads top to bottom (:meth:`Login._steps`): for each attempt before the deadline, get
the token, take the permits if the server counts this login (RDS: a token it has not accepted
yet; Aurora DSQL: every connection), connect; a refusal (an RDS one may be throttling, a DSQL
one can say so) is retried with backoff, at most ``IAMDB_AUTH_RETRIES`` times. The
steps are a generator that yields what must happen (a permit, a connect, a sleep) and is told
what happened, as psycopg 3 shares its blocking and async code: :meth:`Login.connect` runs the
steps blocking, :meth:`Login.connect_async` awaits them (permits in a worker thread, the
driver's async connect, ``asyncio.sleep``). The singletons, the pools and the async getters all
log in through one :class:`Login` per instance, so they share its token cache, permits, retry
rules, TLS settings and the token the server last accepted.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, TypeVar

from iamdb._config import SqlConfig
from iamdb._errors import locate
from iamdb._log import logger
from iamdb._retry import THROTTLING_HINT, DecorrelatedJitter, final_refusal
from iamdb._telemetry import Probe
from iamdb._tokens import Token, TokenCache
from iamdb.errors import AuthError, ConnectError, ThrottleError

if TYPE_CHECKING:
    from iamdb._limiter import Deadline, Limits
    from iamdb._runtime import Runtime

C = TypeVar("C")


class Driver(Protocol[C]):
    """What a login needs from a database driver (and a managed connection, to check it)."""

    engine: str

    def connect(self, cfg: SqlConfig, token: Token, **options: Any) -> C: ...
    def fileno(self, conn: C) -> int: ...
    def is_closed(self, conn: C) -> bool: ...
    def in_transaction(self, conn: C) -> bool: ...
    def ping(self, conn: C) -> None: ...
    def close(self, conn: C) -> None: ...


class _Permit(NamedTuple):
    endpoint: str
    deadline: float
    rate: float | None  # logins/s the server admits (None: IAMDB_CONNECT_RATE)


class _Connect(NamedTuple):
    token: Token


class _Sleep(NamedTuple):
    seconds: float


_Step = _Permit | _Connect | _Sleep
_REFUSALS = (AuthError, ThrottleError)  # the server said no (ThrottleError: for the rate)
_FAILURES = (*_REFUSALS, ConnectError)  # what a step may raise: thrown into the steps


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

    def connect(self, **options: Any) -> C:
        """Log in once more (blocking): a new connection, or AuthError / ThrottleError /
        ConnectError when none could be had before the deadline.

        ``options`` go to the driver's connect (``autocommit=False`` for the pools and
        SQLAlchemy, the settings a SQLAlchemy dialect passes); they cannot replace iamdb's
        connection, TLS or login parameters."""
        with self.probe.span("connect"):
            steps = self._steps()
            step = next(steps)
            while True:
                failure: Exception | None = None
                result: Any = None
                try:
                    if isinstance(step, _Permit):
                        result = self._limits.permit(
                            step.endpoint, step.deadline, self.probe, rate=step.rate
                        )
                    elif isinstance(step, _Connect):
                        result = self.driver.connect(self.cfg, step.token, **options)
                    else:
                        self._rt.sleep(step.seconds)
                except _FAILURES as exc:
                    failure = exc
                try:  # outside the except: nothing raised from here chains the refusal
                    step = steps.send(result) if failure is None else steps.throw(failure)
                except StopIteration as done:
                    conn: C = done.value
                    return conn

    async def connect_async(self, connect: Callable[[SqlConfig, Token], Awaitable[Any]]) -> Any:
        """Log in once more without blocking the event loop: ``connect`` is the driver's async
        connect (``PgDriver.connect_async``); permits are waited for in a worker thread."""
        import asyncio

        with self.probe.span("connect"):
            steps = self._steps()
            step = next(steps)
            while True:
                failure: Exception | None = None
                result: Any = None
                try:
                    if isinstance(step, _Permit):
                        result = await asyncio.to_thread(
                            self._limits.permit,
                            step.endpoint,
                            step.deadline,
                            self.probe,
                            rate=step.rate,
                        )
                    elif isinstance(step, _Connect):
                        result = await connect(self.cfg, step.token)
                    else:
                        await asyncio.sleep(step.seconds)
                except _FAILURES as exc:
                    failure = exc
                try:
                    step = steps.send(result) if failure is None else steps.throw(failure)
                except StopIteration as done:
                    return done.value

    def _steps(self) -> Generator[_Step, Any, Any]:
        """The login's steps; the runner sends back each step's result or throws its refusal."""
        cfg, endpoint = self.cfg, self.cfg.endpoint
        deadline = self._deadline.at(cfg.connect_timeout)
        started = self._rt.clock()
        backoff = DecorrelatedJitter(uniform=self._rt.uniform)
        for attempt in itertools.count(1):
            if attempt > 1:
                self.probe.count("AuthRetries")
            token = self._tokens.get(endpoint, deadline=deadline, on_sign=self._signed)
            ticket = None
            # RDS does not count a token it accepted before; DSQL counts every connection.
            if endpoint.dsql or token is not self.accepted:
                try:
                    ticket = yield _Permit(endpoint.key, deadline, cfg.connect_rate)
                except ThrottleError as exc:  # the limiters know the endpoint, not the instance
                    locate(exc, cfg, attempt)
                    raise
            try:
                conn = yield _Connect(token)
            except _REFUSALS as exc:
                refusal = exc.with_traceback(None)  # its frames hold the token
            except ConnectError as exc:
                locate(exc, cfg, attempt)
                raise
            else:
                self._limits.release(ticket)
                self.accepted, self.last_login = token, self._rt.clock()
                self._logged_in(token)
                return conn
            self.probe.count("AuthFailures" if type(refusal) is AuthError else "ServerThrottled")
            self._tokens.invalidate(endpoint)  # the next attempt signs anew
            delay = backoff.next_delay()
            if attempt > self._retries or self._rt.clock() + delay > deadline:
                # DSQL tells throttling apart (SQLSTATE 53400); an RDS refusal may be throttling.
                hint = "" if endpoint.dsql else THROTTLING_HINT
                elapsed = self._rt.clock() - started
                raise final_refusal(refusal, attempt, elapsed, hint)
            yield _Sleep(delay)
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
