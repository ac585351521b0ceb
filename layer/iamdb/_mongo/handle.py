"""The credentials and clients behind ``get_mongo()``: renewed before expiry, swapped safely.

pymongo fixes a client's credentials for its whole life, and every socket it opens after they
expired fails to log in (code 18). So when the credentials enter the refresh window
(``IAMDB_MONGO_REFRESH_SECONDS``), the next call assumes the role again, logs a new client in,
and hands that out from then on. The old client is closed on the following call, not at once,
so a caller still iterating one of its cursors is not broken; it is always closed well before
its credentials expire, so no socket ever authenticates with expired credentials.

One instance has one set of credentials (:class:`MongoHandle`) and clients per runner
(:class:`~iamdb._mongo.runner.Clients`): the blocking ``get_mongo()``'s, and one
``AsyncMongoClient`` per event loop for :mod:`iamdb.aio`. What a call does is written once, as
the generator :meth:`MongoHandle.steps`, which each runner drives with its own I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, NamedTuple

from iamdb._core.log import logger
from iamdb._core.steps import run
from iamdb._core.telemetry import Probe
from iamdb._mongo import client as _mongo_client
from iamdb._mongo.client import Until, check_client, open_client
from iamdb._mongo.refusals import refusal_watch
from iamdb._mongo.runner import (
    CheckClient,
    Clients,
    CloseClient,
    FetchLease,
    Held,
    MongoStep,
    OpenClient,
)
from iamdb.errors import AuthError, ConnectError, IamDbError

if TYPE_CHECKING:
    from pymongo import MongoClient

    from iamdb._aws.chain import CredentialResolver
    from iamdb._aws.client import AwsClient
    from iamdb._aws.sts import Lease
    from iamdb._core.invocation import Deadline
    from iamdb._core.runtime import Runtime
    from iamdb._mongo.config import MongoConfig

# Keep a retired client's credentials at least this far from expiry; a failed refresh
# falls back to the current client only while it has this much left.
MIN_LEFT_SECONDS = 60.0
_RETRY_REFRESH_SECONDS = 10.0
_CONNECT_SECONDS = 5.0  # waits for credentials end by twice this without a Lambda context


class _Term(NamedTuple):
    lease: Lease
    renew_at: float  # when the credentials are due for renewal
    since: float  # when they were fetched


class MongoHandle:
    """One instance's credentials and blocking client: assumed on first use, renewed and the
    client swapped before they expire.

    What a call does is one generator (:meth:`steps`) over a :class:`Clients`: this handle's
    blocking :meth:`get` runs it with blocking I/O, :mod:`iamdb.aio` with awaits for each event
    loop's ``AsyncMongoClient``, so both renew the same credentials by the same rules.
    """

    def __init__(
        self,
        cfg: MongoConfig,
        *,
        aws: AwsClient,
        resolver: CredentialResolver,
        runtime: Runtime,
        deadline: Deadline,
        probe: Probe,
        idle_seconds: float,
        opener: Callable[[MongoConfig, Lease, Until], MongoClient[Any]] = open_client,
        checker: Callable[[Any, Until], str | None] = check_client,
    ) -> None:
        self.cfg = cfg
        self.probe = probe  # metrics and subsegments
        self._aws, self._resolver, self._runtime = aws, resolver, runtime
        self._deadline = deadline
        self._clock = self.clock = runtime.clock
        self._idle_seconds = idle_seconds
        self._opener = opener
        self._checker = checker
        self._lock = threading.Lock()
        self._term: _Term | None = None  # replaced whole: readers need no lock
        self._clients = Clients()
        self.reused = False  # whether the last get() handed out the client it already had
        self.last_login: float | None = None  # epoch seconds of the current client's login

    def fresh_lease(self, deadline: float | None = None) -> Lease:
        """New credentials for this instance (blocking; also the admin helpers' way in)."""
        if deadline is None:
            deadline = self._deadline.at(_CONNECT_SECONDS)
        return _mongo_client.fetch_lease(
            self.cfg, deadline, aws=self._aws, runtime=self._runtime, resolver=self._resolver
        )

    @property
    def lease(self) -> Lease | None:
        """The instance's current credentials (never printed: the repr hides secrets)."""
        term = self._term
        return None if term is None else term.lease

    @property
    def credentials_since(self) -> float | None:
        """When the current credentials were fetched (None: none yet)."""
        term = self._term
        return None if term is None else term.since

    def get(self) -> MongoClient[Any]:
        """The current client; assumes again and swaps when the credentials are due."""
        client: MongoClient[Any] | None = self.ready(self._clients)
        self.reused = client is not None
        if client is None:
            with self._lock:
                previous = self._clients.current
                client = self._run(self.steps(self._clients))
                self.reused = previous is not None and client is previous.client
        return client

    def ready(self, clients: Clients) -> Any:
        """``clients``' current client when it can be handed out with nothing to do (no client to
        close, valid credentials, used less than ``IAMDB_HEALTHCHECK_IDLE_SECONDS`` ago), else
        None."""
        now = self._clock()
        if clients.retired or now - clients.last_used >= self._idle_seconds:
            return None
        client = self._usable(clients, now)
        if client is not None:
            clients.last_used = now
        return client

    def close(self) -> None:
        """Close every blocking client this handle made, forget the credentials (reset)."""
        with self._lock:
            clients, self._clients, self._term = self._clients, Clients(), None
        for held in clients.all():
            self._close_client(held)

    def before_close(self, held: Held) -> None:
        """Before closing a client whose credentials are (nearly) expired: drop its sessions,
        so ``close()`` sends no ``endSessions``, which opens a new socket when the idle ones
        were dropped (``maxIdleTimeMS``) and that login would fail. Sessions not ended expire
        on the server by themselves (30 minutes)."""
        if held.lease.left(self._clock()) <= MIN_LEFT_SECONDS:
            topology = getattr(held.client, "_topology", None)
            if topology is not None:
                topology.pop_all_sessions()

    def steps(self, clients: Clients) -> Generator[MongoStep, Any, Any]:
        """One call's steps for ``clients``: close the retired clients, then hand out the
        current one, or renew the credentials and/or log a new client in. The runner does
        each step and sends its result back (or throws its IamDbError in)."""
        retired, clients.retired = clients.retired, []
        for old in retired:
            yield CloseClient(old)
        now = self._clock()
        deadline = self._deadline.at(_CONNECT_SECONDS)
        current = self._usable(clients, now)
        if current is not None and clients.current is not None:
            idle = now - clients.last_used
            problem = None
            if idle >= self._idle_seconds:  # frozen a while: sockets may have died meanwhile
                problem = yield CheckClient(clients.current, deadline)
            if problem is None:
                clients.last_used = now
                return current
            raise self._unanswered(problem, idle, self._clock() - now)
        held, term = clients.current, self._term
        refused_now = held is not None and held.refused()
        if refused_now:
            # The role was revoked or its user removed: assume again once (new credentials
            # may be accepted); if the server refuses those too, the caller gets AuthError.
            logger.warning(
                "%s: MongoDB refused a new login; assuming the role again", self.cfg.label
            )
            self.probe.count("AuthFailures")
            self.probe.count("AuthRetries")
        try:
            if refused_now or term is None or not self._valid(term, now):
                with self.probe.span("credentials"):
                    term = self._renewed((yield FetchLease(deadline)), now)
            with self.probe.span("connect"):
                try:
                    client = yield OpenClient(term.lease, deadline)
                except AuthError:
                    self.probe.count("AuthFailures")
                    raise
        except IamDbError as exc:
            if not refused_now and held is not None and held.lease.left(now) > MIN_LEFT_SECONDS:
                logger.warning(
                    "%s: renewing credentials failed (%s: %s); keeping the current client, "
                    "%.0f s of validity left",
                    self.cfg.label,
                    type(exc).__name__,
                    exc,
                    held.lease.left(now),
                )
                clients.hold_until = now + _RETRY_REFRESH_SECONDS
                return held.client
            raise
        self.probe.count("ConnectionsOpened")
        self.last_login = now
        if held is not None:
            clients.retired.append(held)  # closed on the next call: maybe mid-cursor
        clients.current, clients.hold_until = Held(client, term.lease, refusal_watch(client)), 0.0
        clients.last_used = now
        lease = term.lease
        logger.info(
            "%s: logged in to %s as %s (access key %s%s)",
            self.cfg.label,
            ",".join(self.cfg.hosts),
            lease.principal,
            lease.credentials.access_key,
            "" if lease.expires_at is None else f", credentials expire in {lease.left(now):.0f} s",
        )
        return client

    def _run(self, steps: Generator[MongoStep, Any, Any]) -> Any:
        """Run :meth:`steps` blocking."""
        return run(steps, self._do, IamDbError)

    def _do(self, step: MongoStep) -> Any:
        if isinstance(step, OpenClient):
            return self._opener(self.cfg, step.lease, (self._clock, step.deadline))
        if isinstance(step, CheckClient):
            return self._checker(step.held.client, (self._clock, step.deadline))
        if isinstance(step, CloseClient):
            return self._close_client(step.held)
        return self.fresh_lease(step.deadline)

    def _close_client(self, held: Held) -> None:
        try:
            self.before_close(held)
            held.client.close()
        except Exception as exc:  # closing must never break the caller
            logger.info("%s: closing a client: %s", self.cfg.label, exc)

    def _usable(self, clients: Clients, now: float) -> Any:
        held, term = clients.current, self._term
        if held is None or held.refused():
            return None
        if now < clients.hold_until or (
            term is not None and held.lease == term.lease and self._valid(term, now)
        ):
            return held.client
        return None

    def _unanswered(self, problem: str, idle: float, spent: float) -> ConnectError:
        hosts = ",".join(self.cfg.hosts)
        return ConnectError(
            f"{self.cfg.label}: MongoDB at {hosts} did not answer a ping (twice) within "
            f"{spent:.2f} s after {idle:.0f} s idle: {problem}. The server may be down or "
            "failing over, or the network path died while the environment was frozen.",
            engine="mongo",
            instance=self.cfg.label,
            host=hosts,
            attempts=2,
        )

    def _renewed(self, lease: Lease, now: float) -> _Term:
        """The term of freshly fetched credentials (AuthError when they expire too soon)."""
        if self.cfg.role_arn is not None:
            self.probe.count("CredentialRefreshes")
        left = lease.left(now)
        if left <= self.cfg.refresh_seconds:
            raise AuthError(
                f"{self.cfg.label}: STS issued credentials for {lease.principal} that expire in "
                f"{left:.0f} s, within {self.cfg.prefix}REFRESH_SECONDS={self.cfg.refresh_seconds}"
            )
        self._term = _Term(lease, now + left - self.cfg.refresh_seconds, now)
        return self._term

    def _valid(self, term: _Term, now: float) -> bool:
        """Whether credentials may still be used as they are."""
        return now < term.renew_at and (
            self.cfg.role_arn is not None or self._same_credentials(term.lease)
        )

    def _same_credentials(self, lease: Lease) -> bool:
        try:
            return self._resolver.resolve() == lease.credentials
        except IamDbError:
            return False
