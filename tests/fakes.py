"""Fakes for tests: time, a recording probe, runtimes.

Everything time-based in iamdb and devstack takes a clock (and sleep). ``FakeClock`` is epoch
seconds that move only when told to; ``FakeTime`` adds a ``sleep`` that records every wait
and, unless frozen, advances the clock by it. ``RecordingProbe`` records the metrics a
connection counts; ``runtime()`` builds an iamdb Runtime from these. ``SocketDriver`` stands in
for a database driver over socket pairs, and ``managed_connection()`` builds a
ManagedConnection over it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from xml.etree import ElementTree

from iamdb._aws.chain import CredentialResolver
from iamdb._aws.client import AwsError
from iamdb._aws.tokens import Token, TokenCache
from iamdb._core.invocation import Deadline, Invocation
from iamdb._core.runtime import Runtime
from iamdb._core.telemetry import Telemetry
from iamdb._sql.config import SqlConfig
from iamdb._sql.limits import Limits
from iamdb._sql.login import Login, Until
from iamdb._sql.managed import ManagedConnection
from iamdb._sql.slots import IN_USE

START = 1_700_000_000.0


class FakeClock:
    """A ``clock()`` callable: epoch seconds that move only when told to."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def clock(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeTime(FakeClock):
    """``clock`` plus a ``sleep`` that records each wait (and advances unless ``frozen``)."""

    def __init__(self, now: float = START, *, frozen: bool = False) -> None:
        super().__init__(now)
        self.frozen = frozen
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        assert seconds > 0, "never asked to sleep for nothing"
        self.sleeps.append(seconds)
        if not self.frozen:
            self.now += seconds


class ScriptedSts:
    """Answers STS AssumeRole (as iamdb's AwsClient does) from a script of errors and expiries."""

    def __init__(self, *script: Exception | float) -> None:
        self.script = list(script)
        self.calls: list[dict[str, str]] = []
        self.serial = 0

    def sts(self, params: Mapping[str, str], deadline: float) -> ElementTree.Element:
        self.calls.append(dict(params))
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        self.serial += 1
        expiration = dt.datetime.fromtimestamp(step, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return ElementTree.fromstring(
            '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
            "<AssumeRoleResult><Credentials>"
            f"<AccessKeyId>ASIAKEY{self.serial}</AccessKeyId>"
            f"<SecretAccessKey>secret-{self.serial}</SecretAccessKey>"
            f"<SessionToken>token-{self.serial}</SessionToken>"
            f"<Expiration>{expiration}</Expiration>"
            "</Credentials><AssumedRoleUser>"
            "<Arn>arn:aws:sts::123456789012:assumed-role/MongoAccess/x</Arn>"
            "</AssumedRoleUser></AssumeRoleResult></AssumeRoleResponse>"
        )


def sts_error(code: str, status: int) -> AwsError:
    return AwsError("sts", code, "secret-free", status=status, request_id="req-1")


class RecordingProbe:
    """Stands in for :class:`iamdb._core.telemetry.Probe`: records every count, opens no
    subsegment."""

    def __init__(self) -> None:
        self.counts: dict[str, float] = {}
        self.points: dict[str, list[float]] = {}

    def count(self, metric: str, value: float = 1.0) -> None:
        self.counts[metric] = self.counts.get(metric, 0.0) + value
        self.points.setdefault(metric, []).append(value)

    def flush(self) -> None:
        pass

    def span(self, what: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def __getitem__(self, metric: str) -> float:
        return self.counts.get(metric, 0.0)


def runtime(environ: dict[str, str], t: FakeTime | None = None, *, random: float = 1.0) -> Runtime:
    """A Runtime over ``environ`` with ``t``'s clock and sleep (random fixed at ``random``)."""
    if t is None:
        return Runtime(environ=environ, random=lambda: random)
    return Runtime(environ=environ, clock=t.clock, sleep=t.sleep, random=lambda: random)


class RecordingTelemetry(Telemetry):
    """Telemetry that keeps what each flush would print, for tests: ``totals()`` sums it."""

    def __init__(self) -> None:
        super().__init__("IamDbTests")
        self.emitted: list[tuple[dict[str, str], dict[str, list[float]]]] = []

    def emit(self, dimensions: dict[str, str], values: dict[str, list[float]]) -> None:
        self.emitted.append((dict(dimensions), values))

    def totals(self, engine: str | None = None) -> dict[str, float]:
        out: dict[str, float] = {}
        for dims, values in self.emitted:
            if engine is None or dims["engine"] == engine:
                for metric, points in values.items():
                    out[metric] = out.get(metric, 0.0) + sum(points)
        return out


@dataclass
class SocketDriver:
    """Stands in for psycopg/PyMySQL at unit level: each connection is one end of a
    ``socketpair`` (the other end, in :attr:`pairs`, plays the server), so a zero-timeout poll
    sees exactly what a dead or chatty server produces. Refuses with the exceptions queued in
    :attr:`refusals`; :attr:`transactions` maps a connection's fileno to its transaction state;
    :attr:`ping_fails` makes every ping fail. The real drivers are exercised in
    tests/integration."""

    engine: str = "pg"
    refusals: list[Exception] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    pairs: list[tuple[socket.socket, socket.socket]] = field(default_factory=list)
    transactions: dict[int, str] = field(default_factory=dict)
    ping_fails: bool = False
    pings: int = 0
    read_only_answers: list[str | None] = field(default_factory=list)  # writer checks, in turn
    refused_writes: set[int] = field(default_factory=set)  # id() of connections marked read-only
    deadlines: list[float] = field(default_factory=list)  # each connect's deadline
    idle_limits: list[int | None] = field(default_factory=list)  # each connect's idle limit
    limits: dict[int, int | None] = field(default_factory=dict)  # fileno -> its idle limit
    in_use: set[int] = field(default_factory=set)  # filenos another thread's command holds

    def connect(
        self, cfg: object, token: Token, until: Until, idle_limit: int | None = None
    ) -> socket.socket:
        self.tokens.append(token.value)
        self.deadlines.append(until[1])
        self.idle_limits.append(idle_limit)
        if self.refusals:
            raise self.refusals.pop(0)
        pair = socket.socketpair()
        self.pairs.append(pair)
        self.limits[pair[0].fileno()] = idle_limit
        return pair[0]

    def fileno(self, conn: socket.socket) -> int:
        return conn.fileno()

    def idle_limit(self, conn: socket.socket) -> int | None:
        return self.limits.get(conn.fileno())

    def is_closed(self, conn: socket.socket) -> bool:
        return conn.fileno() == -1

    def transaction(self, conn: socket.socket) -> str | None:
        return self.transactions.get(conn.fileno())

    def ping(self, conn: socket.socket, until: Until) -> str | None:
        self.pings += 1
        return "ping failed: OSError" if self.ping_fails else None

    def set_idle_limit(self, conn: socket.socket, seconds: int, until: Until) -> str | None:
        if conn.fileno() in self.in_use:
            return IN_USE
        self.pings += 1  # a round trip, as a ping
        if self.ping_fails:
            return "SET idle_session_timeout failed: OSError"
        self.limits[conn.fileno()] = seconds
        return None

    def close(self, conn: socket.socket, wait: float = 0.0) -> bool:
        conn.close()
        return True

    def read_only(self, conn: socket.socket, until: Until) -> str | None:
        return self.read_only_answers.pop(0) if self.read_only_answers else None

    def refused_write(self, conn: socket.socket) -> bool:
        return id(conn) in self.refused_writes

    def server(self, conn: socket.socket) -> socket.socket:
        """The server's end of ``conn``."""
        return next(b for a, b in self.pairs if a is conn)

    def cleanup(self) -> None:
        for a, b in self.pairs:
            a.close(), b.close()


def managed_connection(
    driver: SocketDriver,
    cfg: SqlConfig,
    rt: Runtime,
    *,
    limits: Limits | None = None,
    retries: int = 3,
    probe: object | None = None,
    idle_seconds: float = 30.0,
    deadline: Deadline | None = None,
    invocation: Invocation | None = None,
) -> ManagedConnection[socket.socket]:
    """A ManagedConnection over ``driver`` with its own token cache (credentials from
    ``rt.environ``), limits (200/s unless given), deadline and invocation on ``rt``'s clock."""
    tokens = TokenCache(resolver=CredentialResolver(rt), clock=rt.clock)
    invocation = invocation or Invocation(rt.environ, rt.clock)
    deadline = deadline or invocation.deadline
    login = Login(
        cfg,
        driver,
        tokens,
        runtime=rt,
        limits=limits or Limits(200, None, rt),
        deadline=deadline,
        retries=retries,
        probe=probe or RecordingProbe(),  # type: ignore[arg-type]
    )
    return ManagedConnection(
        login,
        runtime=rt,
        idle_seconds=idle_seconds,
        deadline=deadline,
        invocation=invocation,
    )
