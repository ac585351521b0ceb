"""FROZEN COPY of iamdb's fleet limiter at main f5b3399 (before the clock-skew guard).

The fleet bench runs it beside today's limiter as the strategy ``main``: ``FleetLimiter`` of
``layer/iamdb/_sql/fleet.py`` and ``Limits`` of ``layer/iamdb/_sql/limits.py`` at that commit, code
unchanged; only the module docstrings were cut (they are in git). The rest (login loop, token
bucket, AWS error types) is today's iamdb. Do not fix bugs here: the point is to measure them.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, NamedTuple

from iamdb._aws.client import AwsError, retryable
from iamdb._aws.http import TransportError
from iamdb._core.backoff import DecorrelatedJitter
from iamdb._core.log import WarnOnce, logger
from iamdb._sql.limits import TokenBucket
from iamdb._sql.pace import paced_rate
from iamdb.errors import ConfigError, IamDbError, ThrottleError

if TYPE_CHECKING:
    from iamdb._aws.client import AwsClient
    from iamdb._core.runtime import Runtime
    from iamdb._core.telemetry import Probe

TOLERANCE_US = 50_000
"""A slot up to 50 ms in the past is still taken (logged in at once)."""

TTL_SECONDS = 3600
"""How long after its last use an item lives (DynamoDB deletes it through TTL)."""

CALL_SECONDS = 1.0
"""No single DynamoDB call waits longer: a table that slow is not usable (fail open)."""

COOLDOWN_SECONDS = 30.0
"""After failing open, logins skip DynamoDB for this long."""

_NAMES = {"#n": "n", "#f": "f", "#x": "expires_at"}
_TAKE = (
    "(attribute_not_exists(#n) AND (attribute_not_exists(#f) OR #f <= :start)) "
    "OR #n BETWEEN :lo AND :hi"
)


class Ticket(NamedTuple):
    """A slot taken in an endpoint's queue (epoch microseconds)."""

    key: str
    slot: int
    next: int  # the queue's next free slot right after this ticket
    started: bool  # this ticket began a run: mark the queue idle after the login


class FleetLimiter:
    """Fleet-wide pacing of new IAM logins through one DynamoDB table."""

    def __init__(self, table: str, aws: AwsClient, runtime: Runtime, warn_once: WarnOnce) -> None:
        self.table = table
        self._aws = aws
        self._rt = runtime
        self._warn_once = warn_once
        self._lock = threading.Lock()
        self._skip_until = 0.0

    def acquire(self, endpoint: str, rate: float, deadline: float) -> Ticket | None:
        """Take a slot for one login to ``endpoint`` and sleep until it begins.

        Returns the ticket (for :meth:`release`), or None when the limiter failed open.
        Raises ThrottleError when no slot begins before ``deadline``.
        """
        if self._rt.clock() < self._skip_until:
            return None
        spacing = round(1e6 / paced_rate(rate))
        key = f"q#{endpoint}"
        start = 0  # the earliest slot this caller may take (a fence raises it)
        backoff = DecorrelatedJitter(0.2, 2.0, uniform=self._rt.uniform)
        stalled = False
        while True:
            try:
                outcome = self._attempt(endpoint, rate, key, spacing, start, deadline)
            except (ThrottleError, ConfigError):
                raise
            except AwsError as exc:
                if not retryable(exc):
                    self._fail_open(exc)
                    return None
                delay = backoff.next_delay()  # DynamoDB pushes back: slow down, inside the deadline
                if self._rt.clock() + delay > deadline:
                    raise ThrottleError(
                        f"no fleet-wide permit for a new IAM login to {endpoint} before the "
                        f"deadline: DynamoDB table {self.table} is pushing back ({exc.code})"
                    ) from None
                self._rt.sleep(delay)
                continue
            except IamDbError as exc:  # unreachable, no credentials: the table is not usable
                if isinstance(exc, TransportError) and exc.sent and not stalled:
                    stalled = True  # one answer late: a stall, maybe; ask once more
                    self._rt.sleep(min(backoff.next_delay(), max(0.0, deadline - self._rt.clock())))
                    continue
                self._fail_open(exc)
                return None
            if isinstance(outcome, int):
                start = outcome
                continue
            wait = outcome.slot / 1e6 - self._rt.clock()
            if wait > 0:
                self._rt.sleep(wait)
            return outcome

    def _attempt(
        self, endpoint: str, rate: float, key: str, spacing: int, start: int, deadline: float
    ) -> Ticket | int:
        """One try at a ticket: the ticket, or the earliest slot to try again from."""
        self._aws.warm("dynamodb", self._call_deadline(deadline))  # TLS before reading the clock
        now, hi = _us(self._rt.clock()), _us(deadline)
        start = max(start, now)
        if start > hi:
            raise _too_late(endpoint, rate, start - now)
        try:
            answer = self._update(key, _take(start, spacing, now, hi), deadline)
        except AwsError as exc:
            if exc.code != "ConditionalCheckFailedException":
                raise
            old_n, fence = _number(exc.item, "n", None), _number(exc.item, "f", None)
        else:
            n = _number(answer.get("Attributes"), "n")
            return Ticket(key, n - spacing, n, started=n - spacing == start)
        if old_n is None:  # idle but fenced beyond our start: the fence is the next slot
            return fence if fence is not None else now
        if old_n > hi:
            raise _too_late(endpoint, rate, old_n - now)
        return self._restart(key, spacing, deadline) or now  # stale: restart it, or take again

    def release(self, ticket: Ticket) -> None:
        """After the login: mark the queue idle when this ticket began its run and nobody
        took a ticket since (sent without waiting for the answer)."""
        if not ticket.started:
            return
        payload = {
            "Key": {"pk": {"S": ticket.key}},
            "UpdateExpression": "REMOVE #n SET #f = :f, #x = :ttl",
            "ConditionExpression": "#n = :mine",
            "ExpressionAttributeNames": _NAMES,
            "ExpressionAttributeValues": {
                ":f": {"N": str(ticket.next)},
                ":mine": {"N": str(ticket.next)},
                ":ttl": {"N": str(ticket.next // 1_000_000 + TTL_SECONDS)},
            },
        }
        try:
            self._aws.dynamodb_send(
                "UpdateItem", {"TableName": self.table, **payload}, self._call_deadline()
            )
        except IamDbError as exc:  # best effort: the next login restarts a stale queue
            logger.debug("fleet limiter: marking the queue idle failed (%s)", exc)

    def _restart(self, key: str, spacing: int, deadline: float) -> Ticket | None:
        """Restart a stale queue at this instant; None when another caller restarted it."""
        now = _us(self._rt.clock())
        payload = {
            "UpdateExpression": "SET #n = :next, #x = :ttl REMOVE #f",
            "ConditionExpression": "#n < :lo",
            "ExpressionAttributeNames": _NAMES,
            "ExpressionAttributeValues": {
                ":next": {"N": str(now + spacing)},
                ":lo": {"N": str(now - TOLERANCE_US)},
                ":ttl": {"N": str(now // 1_000_000 + TTL_SECONDS)},
            },
        }
        try:
            self._update(key, payload, deadline)
        except AwsError as exc:
            if exc.code == "ConditionalCheckFailedException":
                return None
            raise
        return Ticket(key, now, now + spacing, started=True)

    def _update(self, key: str, payload: dict[str, Any], deadline: float) -> Any:
        payload = {
            "TableName": self.table,
            "Key": {"pk": {"S": key}},
            **payload,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        return self._aws.dynamodb("UpdateItem", payload, self._call_deadline(deadline))

    def _call_deadline(self, deadline: float | None = None) -> float:
        until = self._rt.clock() + CALL_SECONDS
        return until if deadline is None else min(until, deadline)

    def _fail_open(self, exc: IamDbError) -> None:
        with self._lock:
            self._skip_until = self._rt.clock() + COOLDOWN_SECONDS
        reason = exc.code if isinstance(exc, AwsError) else f"{type(exc).__name__}: {exc}"
        self._warn_once(
            f"fleet:{self.table}",
            "iamdb: the fleet limiter's DynamoDB table %s is not usable (%s): new IAM logins "
            "are paced by this process alone for %.0f s (IAM policy needs dynamodb:UpdateItem "
            "on the table; AWS_ENDPOINT_URL_DYNAMODB, AWS_REGION)",
            self.table,
            reason,
            COOLDOWN_SECONDS,
        )
        logger.debug("fleet limiter failed open (%s)", reason)


def _take(start: int, spacing: int, now: int, hi: int) -> dict[str, Any]:
    return {
        "UpdateExpression": "SET #n = if_not_exists(#n, :start) + :s, #x = :ttl",
        "ConditionExpression": _TAKE,
        "ExpressionAttributeNames": _NAMES,
        "ExpressionAttributeValues": {
            ":start": {"N": str(start)},
            ":s": {"N": str(spacing)},
            ":lo": {"N": str(now - TOLERANCE_US)},
            ":hi": {"N": str(hi)},
            ":ttl": {"N": str(hi // 1_000_000 + TTL_SECONDS)},
        },
        "ReturnValues": "UPDATED_NEW",
    }


def _us(seconds: float) -> int:
    return int(seconds * 1_000_000)


_MISSING: Any = object()


def _number(item: Any, name: str, default: Any = _MISSING) -> Any:
    """An integer attribute of a DynamoDB item (``{"N": "..."}``)."""
    try:
        return int(item[name]["N"])
    except (KeyError, TypeError, ValueError):
        if default is not _MISSING and (not isinstance(item, dict) or name not in item):
            return default
        why = f"no number {name!r} in the answer"
        raise AwsError("dynamodb", "MalformedResponse", why) from None


def _too_late(endpoint: str, rate: float, wait_us: int) -> ThrottleError:
    return ThrottleError(
        f"no fleet-wide permit for a new IAM login to {endpoint} before the deadline: the "
        f"queue reaches {wait_us / 1e6:.2f} s ahead at {rate:g} logins/s for the whole fleet"
    )


class Limits:
    """The permits of new IAM logins: one :class:`TokenBucket` per signing endpoint
    (RDS ``host:port``, a DSQL cluster endpoint) shared by the whole process, then the fleet's
    ticket queue when set.

    Waiting is ``runtime.sleep``, never past the caller's deadline.
    """

    def __init__(self, rate: float, fleet: FleetLimiter | None, runtime: Runtime) -> None:
        self.rate = rate
        self.fleet = fleet
        self._rt = runtime
        self._lock = threading.Lock()
        self._buckets: dict[str, TokenBucket] = {}

    def permit(
        self, endpoint: str, deadline: float, probe: Probe, *, rate: float | None = None
    ) -> Ticket | None:
        """Wait for the permits of one new login to ``endpoint`` (an :attr:`Target.key
        <iamdb._sql.tokens.Target.key>`), whose server admits ``rate`` logins per second (None:
        this limiter's own rate, ``IAMDB_CONNECT_RATE``).

        Returns the fleet ticket to :meth:`release` after the login (None without one).
        Raises ThrottleError, without waiting, when no permit comes before ``deadline``.
        """
        rate = self.rate if rate is None else rate
        started = self._rt.clock()
        ready = self._bucket(endpoint, rate).reserve(deadline)
        wait = ready - self._rt.clock()
        if wait > 0:
            self._rt.sleep(wait)
        ticket = None
        if self.fleet is not None:
            with probe.span("fleet ticket"):
                ticket = self.fleet.acquire(endpoint, rate, deadline)
            if ticket is None:
                probe.count("LimiterFailOpen")
        probe.count("ThrottleWaitMs", 1000.0 * max(0.0, self._rt.clock() - started))
        return ticket

    def release(self, ticket: Ticket | None) -> None:
        """After a successful login: let the fleet queue know when it is idle again."""
        if ticket is not None and self.fleet is not None:
            self.fleet.release(ticket)

    def _bucket(self, endpoint: str, rate: float) -> TokenBucket:
        with self._lock:
            found = self._buckets.get(endpoint)
            if found is None:
                found = TokenBucket(paced_rate(rate), clock=self._rt.clock)
                self._buckets[endpoint] = found
            return found
