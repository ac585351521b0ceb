"""The client behind ``get_valkey()``: logged in on first use, checked between invocations,
its connections re-authenticated before AWS closes them.

Lambda freezes an environment between invocations; AWS closes an IAM-authenticated connection
12 hours after its last ``AUTH``. So the first :meth:`ValkeyHandle.get` of an invocation (outside
Lambda: the first after ``IAMDB_HEALTHCHECK_IDLE_SECONDS`` idle, or when a re-authentication is
due) looks at every idle connection of the client, never at one a command holds (a pipeline,
``MULTI``/``EXEC``, pub/sub, another thread):

1. a socket with something to read while idle was closed by the server (or it spoke out of
   turn): the connection is dropped, without a round trip;
2. idle longer than ``IAMDB_HEALTHCHECK_IDLE_SECONDS``: a ``PING``, bounded, confirms it (a path
   that died silently, a NAT that forgot the flow, shows nothing to a look at the socket);
3. logged in ``IAMDB_VALKEY_REAUTH_SECONDS`` ago (11 hours): ``AUTH`` with a fresh token, which
   AWS takes as a new start of the 12 hours.

When no connection is left, one logs in at once (:meth:`ValkeyHandle._login`), within the
deadline, so a refused login is ``get_valkey()``'s AuthError and not a later command's. Every
other call returns the client after two comparisons. The steps are a generator run by
:func:`iamdb._core.steps.run`.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Generator
from typing import TYPE_CHECKING, Any, NamedTuple

from iamdb._core.backoff import DecorrelatedJitter, final_error
from iamdb._core.log import logger
from iamdb._core.steps import run
from iamdb._valkey import client as _client
from iamdb._valkey.refusals import login_failure
from iamdb.errors import AuthError, ConnectError, _detached

if TYPE_CHECKING:
    from iamdb._aws.tokens import TokenCache
    from iamdb._core.invocation import Deadline, Invocation
    from iamdb._core.runtime import Runtime
    from iamdb._core.telemetry import Probe
    from iamdb._valkey.config import ValkeyConfig

PING_SECONDS = 1.0
"""The longest a liveness PING may take (a healthy cache answers in a millisecond)."""


class _Check(NamedTuple):
    """Step: look at one idle connection; send back why it must go (None: it stays)."""

    conn: Any
    idle_for: float
    deadline: float


class _Login(NamedTuple):
    """Step: one connection logged in by ``deadline`` (the client made first if need be)."""

    deadline: float


class _Sleep(NamedTuple):
    seconds: float


_Step = _Check | _Login | _Sleep
_FAILURES = (AuthError, ConnectError)


class ValkeyHandle:
    """One instance's client: made and logged in on first use, checked, re-authenticated."""

    def __init__(
        self,
        cfg: ValkeyConfig,
        *,
        tokens: TokenCache,
        runtime: Runtime,
        deadline: Deadline,
        invocation: Invocation,
        probe: Probe,
        idle_seconds: float,
        retries: int,
    ) -> None:
        self.cfg, self.probe = cfg, probe
        self.provider = _client.IamCredentials(cfg, tokens, runtime.clock, probe)
        self._tokens, self._rt = tokens, runtime
        self._deadline, self._invocation = deadline, invocation
        self._idle_seconds, self._retries = idle_seconds, retries
        self._lock = threading.Lock()
        self._client: Any = None
        self._served: str | None = None  # the invocation the last get() served
        self._last_used = 0.0
        self._due = 0.0  # when the oldest connection's login is REAUTH_SECONDS old
        self.reused = False  # whether the last get() handed out the client it already had
        self.last_login: float | None = None  # epoch seconds of the last new connection

    @property
    def connected(self) -> bool:
        return self._client is not None

    def get(self) -> Any:
        """The client, checked as the module docstring says."""
        clock = self._rt.clock
        now, client = clock(), self._client
        if (
            client is not None
            and now - self._last_used < self._idle_seconds
            and now < self._due
            and self._invocation.current() == self._served
        ):
            self._last_used, self.reused = now, True
            return client
        deadline = self._deadline.at(self.cfg.connect_timeout)
        if not self._lock.acquire(timeout=max(0.0, deadline - now)):
            raise ConnectError(
                f"{self.cfg.label}: another thread's login did not end before the deadline",
                engine="valkey",
                instance=self.cfg.label,
                host=self.cfg.host,
                port=self.cfg.port,
            )
        try:
            found: Any = run(self._steps(now, deadline), self._do, _FAILURES)
            return found
        finally:
            self._lock.release()

    def close(self) -> None:
        """Close every connection and forget the client (reset); the next get() logs in."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                for pool in _client.pools(client):  # valkey-py closes only pools it made itself
                    pool.disconnect()
                client.close()
            except Exception as exc:  # closing must never break the caller
                logger.info("%s: closing the client: %s", self.cfg.label, exc)

    def _steps(self, now: float, deadline: float) -> Generator[_Step, Any, Any]:
        self._served = self._invocation.current()
        idle_for = now - self._last_used
        client, live, dropped = self._client, 0, 0
        for pool in _client.pools(client) if client is not None else ():
            for conn in _client.take_idle(pool):
                try:
                    if conn._sock is not None:
                        why = yield _Check(conn, idle_for, deadline)
                        if why is None:
                            live += 1
                        else:
                            logger.info("%s: dropping a connection (%s)", self.cfg.label, why)
                            conn.disconnect()
                            dropped += 1
                finally:
                    pool.release(conn)
        self.reused = client is not None and live > 0
        if not self.reused:
            client = yield from self._login(deadline)
            if dropped:
                self.probe.count("Reconnects")
        self._last_used = self._rt.clock()
        self._due = self._next_due(client)
        return client

    def _login(self, deadline: float) -> Generator[_Step, Any, Any]:
        """Log one connection in; a refusal is tried again with a new token at most
        ``IAMDB_AUTH_RETRIES`` times, a transient failure while the deadline allows."""
        clock, started = self._rt.clock, self._rt.clock()
        backoff = DecorrelatedJitter(uniform=self._rt.uniform)
        refusals = 0
        for attempt in itertools.count(1):
            try:
                client = yield _Login(deadline)
            except _FAILURES as exc:
                failure = _detached(exc)
            else:
                self.last_login = clock()
                self.probe.count("ConnectionsOpened")
                logger.info(
                    "%s: logged in to %s:%s as %s (cache %s)",
                    self.cfg.label,
                    self.cfg.host,
                    self.cfg.port,
                    self.cfg.user,
                    self.cfg.cache_name,
                )
                return client
            failure.attempts = attempt
            if isinstance(failure, AuthError):
                refusals += 1
                retry = refusals <= self._retries
                self.probe.count("AuthFailures")
                self._tokens.invalidate(self.cfg.target)  # the next attempt signs anew
            else:
                retry = failure._transient
                self.probe.count("ConnectRetries" if retry else "ConnectFailures")
            delay = backoff.next_delay()
            if retry and clock() + delay <= deadline:
                yield _Sleep(delay)
                if clock() < deadline:
                    if isinstance(failure, AuthError):
                        self.probe.count("AuthRetries")
                    continue
            raise final_error(failure, attempt, clock() - started)
        raise AssertionError("unreachable")  # pragma: no cover

    def _do(self, step: _Step) -> Any:
        if isinstance(step, _Check):
            return self._check(step)
        if isinstance(step, _Login):
            with self.probe.span("connect"):  # a login, not an invocation's look at its sockets
                return self._connect(step.deadline)
        self._rt.sleep(step.seconds)
        return None

    def _check(self, step: _Check) -> str | None:
        if _client.suspect(step.conn):
            return "the server closed it, or spoke while it was idle"
        now = self._rt.clock()
        if step.idle_for >= self._idle_seconds:
            seconds = min(PING_SECONDS, max(0.001, (step.deadline - now) / 2))
            problem = _client.ping(step.conn, seconds)
            if problem is not None:
                return f"idle {step.idle_for:.0f} s, then {problem}"
        logged_in = step.conn.logged_in_at
        if logged_in is not None and now - logged_in >= self.cfg.reauth_seconds:
            problem = _client.reauthenticate(step.conn, self.provider)
            if problem is not None:
                return f"re-authentication failed: {problem}"
            self.probe.count("Reauthentications")
            logger.info(
                "%s: re-authenticated a connection logged in %.0f s ago",
                self.cfg.label,
                now - logged_in,
            )
        return None

    def _connect(self, deadline: float) -> Any:
        reset = _client.LOGIN_UNTIL.set((self._rt.clock, deadline))
        failure = None
        try:
            client = self._client or _client.new_client(self.cfg, self.provider)
            _client.login(_client.first_pool(client))
        except Exception as exc:
            failure = login_failure(self.cfg, exc)
        finally:
            _client.LOGIN_UNTIL.reset(reset)
        if failure is not None:
            raise failure
        self._client = client
        return client

    def _next_due(self, client: Any) -> float:
        """When the oldest login among the client's connections needs re-authenticating."""
        logins = [
            conn.logged_in_at
            for pool in _client.pools(client)
            for conn in [*pool._available_connections, *pool._in_use_connections]
            if conn.logged_in_at is not None
        ]
        return min(logins, default=self._rt.clock()) + self.cfg.reauth_seconds
