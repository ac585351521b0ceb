"""One new IAM login, written once for blocking and for asyncio callers.

A login reads top to bottom (:meth:`Login._steps`): for each attempt before the deadline, get
the token (assuming the instance's role first when its credentials are due), take the permits
if the server counts this login (RDS: a token it has not accepted yet; Aurora DSQL: every
connection), connect, and for an instance meant to take writes confirm that the server does
(:mod:`iamdb._sql.writer`: a read-only one is closed and tried again until the deadline); a
refusal (an RDS one may be throttling, a DSQL one can say so) is retried with backoff, at most
``IAMDB_AUTH_RETRIES`` times, and a refusal of the very token the server accepted before (the
name now leads to another server: a failover, a Blue/Green switchover behind stale DNS) for
up to :data:`MOVED_SECONDS`. The
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
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, TypeVar, cast

from iamdb._aws.tokens import Token, TokenCache
from iamdb._core.backoff import DecorrelatedJitter, final_error
from iamdb._core.log import logger
from iamdb._core.steps import run, run_async
from iamdb._core.telemetry import Probe
from iamdb._sql.config import SqlConfig
from iamdb._sql.refusals import THROTTLING_HINT, locate
from iamdb._sql.slots import IdleLimit
from iamdb._sql.writer import MOVED_HINT, read_only_failure
from iamdb.errors import (
    AuthError,
    ConnectError,
    ThrottleError,
    TooManyConnectionsError,
    _detached,
)

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
    def idle_limit(self, conn: C) -> int | None: ...
    def is_closed(self, conn: C) -> bool: ...
    def transaction(self, conn: C) -> str | None: ...
    def ping(self, conn: C, until: Until) -> str | None: ...
    def set_idle_limit(self, conn: C, seconds: int, until: Until) -> str | None: ...
    def close(self, conn: C, wait: float = 0.0) -> bool: ...
    def read_only(self, conn: C, until: Until) -> str | None: ...
    def refused_write(self, conn: C) -> bool: ...


class AsyncChecks(Protocol):
    """What an asyncio login needs beyond the driver's async connect (psycopg's driver)."""

    async def read_only_async(self, conn: Any, until: Until) -> str | None: ...


MOVED_SECONDS = 30.0
"""How long one login keeps trying after the server refused the token it accepted before: the
name leads to another server for as long as DNS takes to follow a failover or a switchover."""
MOVING_CAP = 0.5
"""The longest pause between attempts while the writer moves (a read-only server, a refusal of
the token accepted before): the new writer is there as soon as DNS follows, so a login waits at
most this long past it. The fleet queue and the per-process limiter still pace these logins
(each takes a permit)."""


class _Token(NamedTuple):
    deadline: float


class _Permit(NamedTuple):
    server: str
    deadline: float
    rate: float | None  # logins/s the server admits (None: IAMDB_CONNECT_RATE)


class _Connect(NamedTuple):
    token: Token
    deadline: float
    idle: int | None  # the server closes the session after this long idle (None: never)


class _Confirm(NamedTuple):
    conn: Any
    deadline: float


class _Sleep(NamedTuple):
    seconds: float


_Step = _Token | _Permit | _Connect | _Confirm | _Sleep
_FAILURES = (AuthError, ThrottleError, ConnectError)  # what a step may raise: thrown into the steps


def _cut_short(failure: Exception) -> bool:
    """A connection attempt that failed in a way a later one may not (a timeout, a reset): while
    waiting for a slot or for the writer, the deadline cutting one short says nothing new about
    the server."""
    return isinstance(failure, ConnectError) and failure._transient


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
        self.idle = IdleLimit(cfg.idle, deadline, cfg.label)
        """The idle limit the server enforces on this instance's sessions."""
        self.no_slot: tuple[float, TooManyConnectionsError] | None = None
        """When a login last found the server without a free slot, and its words (never
        raised: no frames): what a pool's checkout that timed out meanwhile says."""

    def connect(self, deadline: float | None = None, **options: Any) -> C:
        """Log in once more (blocking): a new connection, or AuthError / ThrottleError /
        ConnectError when none could be had before ``deadline`` (clock seconds; None: the
        registry's deadline for a login starting now).

        ``options`` go to the driver's connect (``autocommit=False`` for the pools and
        SQLAlchemy, the settings a SQLAlchemy dialect passes); they cannot replace iamdb's
        connection, TLS or login parameters."""

        def do(step: _Step) -> Any:
            if isinstance(step, _Token):
                return self._token(step.deadline)
            if isinstance(step, _Permit):
                return self._limits.permit(step.server, step.deadline, self.probe, rate=step.rate)
            if isinstance(step, _Connect):
                until = (self._rt.clock, step.deadline)
                return self.driver.connect(
                    self.cfg, step.token, until, idle_limit=step.idle, **options
                )
            if isinstance(step, _Confirm):
                return self.driver.read_only(step.conn, (self._rt.clock, step.deadline))
            self._rt.sleep(step.seconds)
            return None

        with self.probe.span("connect"):
            conn: C = run(self._steps(deadline), do, _FAILURES)
            return conn

    async def connect_async(
        self,
        connect: Callable[..., Awaitable[Any]],
        deadline: float | None = None,
    ) -> Any:
        """Log in once more without blocking the event loop: ``connect`` is the driver's async
        connect (``PgDriver.connect_async``); permits are waited for in a worker thread."""
        import asyncio

        async def do(step: _Step) -> Any:
            if isinstance(step, _Token):  # an AssumeRole is a wait: off the event loop
                if self.cfg.role is None:
                    return self._token(step.deadline)
                return await asyncio.to_thread(self._token, step.deadline)
            if isinstance(step, _Permit):
                return await asyncio.to_thread(
                    self._limits.permit, step.server, step.deadline, self.probe, rate=step.rate
                )
            if isinstance(step, _Connect):
                until = (self._rt.clock, step.deadline)
                return await connect(self.cfg, step.token, until, idle_limit=step.idle)
            if isinstance(step, _Confirm):
                checks = cast(AsyncChecks, self.driver)  # asyncio logins are psycopg's
                return await checks.read_only_async(step.conn, (self._rt.clock, step.deadline))
            await asyncio.sleep(step.seconds)
            return None

        with self.probe.span("connect"):
            return await run_async(self._steps(deadline), do, _FAILURES)

    def _steps(self, deadline: float | None) -> Generator[_Step, Any, Any]:
        """The login's steps; the runner sends back each step's result or throws its failure.

        A refusal is tried again at most ``IAMDB_AUTH_RETRIES`` times with a new token; a
        connection that failed in a way a later attempt may not meet (nothing listening yet,
        a restart, a timeout, no slot free on the server) is tried again while the deadline
        allows. Every wait (permits, the connect, backoff) ends by the deadline, which is
        checked again after each wait: a process frozen in between finds it passed and stops.
        A server that refuses the idle limit is asked again at once without it (once per
        instance: :mod:`iamdb._sql.slots`)."""
        cfg, server, clock = self.cfg, self.cfg.target, self._rt.clock
        if deadline is None:
            deadline = self._deadline.at(cfg.connect_timeout)
        started = clock()
        backoff = DecorrelatedJitter(uniform=self._rt.uniform)
        moving = DecorrelatedJitter(cap=MOVING_CAP, uniform=self._rt.uniform)
        refusals = 0
        moved = False  # the server refused a token it had accepted: see MOVED_SECONDS
        full: TooManyConnectionsError | None = None  # the server's last "no slot free"
        full_since = 0.0  # when the server first said it
        read_only: ConnectError | None = None  # the last "does not take writes"
        try:
            for attempt in itertools.count(1):
                try:
                    token = yield _Token(deadline)
                except _FAILURES as exc:  # assuming the role failed: say which instance asked
                    locate(exc, cfg, attempt)
                    raise
                reused = token is self.accepted
                ticket, permitted = None, True
                # RDS does not count a token it accepted before; DSQL counts every connection.
                if server.dsql or not reused:
                    try:
                        ticket = yield _Permit(server.key, deadline, cfg.connect_rate)
                    except ThrottleError as exc:  # the limiters know the server, not the instance
                        locate(exc, cfg, attempt)
                        if full is None:
                            raise
                        permitted = False  # out of time while waiting for a slot
                if not permitted and full is not None:  # the full server is the cause
                    raise final_error(full, attempt - 1, clock() - started, self.idle.advice())
                idle = self.idle.for_new()
                answer = None  # the writer check's: why the server does not take writes
                try:
                    conn = yield _Connect(token, deadline, idle)
                except _FAILURES as exc:
                    failure = _detached(exc)  # its frames held the token
                else:
                    self._limits.release(ticket)
                    self.accepted, self.last_login = token, clock()
                    answer = (yield _Confirm(conn, deadline)) if cfg.writer else None
                    if answer is None:
                        self._logged_in(token)
                        return conn
                    failure = read_only = self._read_only(conn, answer)
                locate(failure, cfg, attempt)
                if self.idle.refuses(failure, idle):
                    continue  # at once, without the limit
                if isinstance(failure, TooManyConnectionsError):
                    full_since = full_since if full is not None else clock()
                    full, retry = failure, True
                    self.no_slot = (clock(), failure)
                elif isinstance(failure, ConnectError):
                    retry = failure._transient
                    self.probe.count("ConnectRetries" if retry else "ConnectFailures")
                elif moved or (reused and type(failure) is AuthError and not server.dsql):
                    # Refused the token it accepted before: the name leads to another server.
                    moved, self.accepted = True, None  # keep the token; take permits from now on
                    retry = clock() - started < MOVED_SECONDS
                    self.probe.count("AuthFailures")
                else:
                    refusals += 1
                    retry = refusals <= self._retries
                    self.probe.count(
                        "AuthFailures" if type(failure) is AuthError else "ServerThrottled"
                    )
                    self._tokens.invalidate(server)  # the next attempt signs anew
                delay = (moving if moved or answer is not None else backoff).next_delay()
                if retry and clock() + delay <= deadline:
                    yield _Sleep(delay)
                    if clock() < deadline:  # not frozen past it while sleeping
                        if not isinstance(failure, ConnectError):
                            self.probe.count("AuthRetries")
                        continue
                if full is not None and (failure is full or _cut_short(failure)):
                    # the full server is the cause, not the last attempt the deadline cut short
                    raise final_error(full, attempt, clock() - started, self.idle.advice())
                if read_only is not None and _cut_short(failure):
                    failure = read_only  # the writer moving is the cause, not the cut attempt
                # DSQL tells throttling apart (SQLSTATE 53400); an RDS refusal may be throttling.
                hint = THROTTLING_HINT if refusals and not server.dsql else ""
                if moved and isinstance(failure, AuthError):
                    hint = MOVED_HINT
                raise final_error(failure, attempt, clock() - started, hint)
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            if full is not None:  # one count per login that waited for a slot, and how long
                self.probe.count("SlotWaits")
                self.probe.count("SlotWaitMs", 1000.0 * (clock() - full_since))

    def _token(self, deadline: float) -> Token:
        return self._tokens.get(
            self.cfg.target, deadline=deadline, on_sign=self._signed, on_assume=self._assumed
        )

    def _read_only(self, conn: C, answer: str) -> ConnectError:
        """Close a connection to a server that does not take writes; the next attempt takes a
        permit (the server behind the name is changing, and counts new tokens anew)."""
        self.driver.close(conn)
        self.accepted = None
        logger.info("%s: %s:%s does not take writes (%s): trying again",
                    self.cfg.label, self.cfg.host, self.cfg.port, answer)  # fmt: skip
        return read_only_failure(self.cfg, answer)

    def _signed(self) -> None:
        self.probe.count("TokensSigned")

    def _assumed(self) -> None:
        self.probe.count("CredentialRefreshes")

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
