"""Share RDS's IAM login budget across a fleet of Lambda environments: a ticket queue on DynamoDB.

A deploy or a traffic spike starts hundreds of environments at once; each paces only itself,
so together they exceed the instance's limit. With ``IAMDB_THROTTLE_TABLE`` set, every new
IAM login first takes a ticket from one DynamoDB item per database server (:mod:`iamdb._sql.queue`:
the item and its writes). ``n`` is the instant (epoch microseconds) of the next free slot;
slots are ``s = 1 / (0.9 R)`` apart. A login takes its slot with **one** conditional
``UpdateItem`` (``SET n = if_not_exists(n, :start) + :s``, the new ``n`` returned), then
sleeps until the slot begins.

- **The deadline is part of the condition** (``n BETWEEN :now - 50 ms AND :deadline``): a caller
  never takes a slot it could not use in time. When the queue reaches past its deadline, the
  failed condition returns the item (``ALL_OLD``) and the caller gets ThrottleError at once.
- **A queue that is not legitimate is restarted** at the caller's instant by a second write,
  conditional on the queue still not being legitimate (concurrent restarts happen once): stale
  (``n`` more than 50 ms past: a steady trickle within 50 ms reuses the queue), reaching further
  than any deadline lets a taker push it (900 s), written from the future (``w``, the writer's
  clock, after the latest DynamoDB's time can be plus the tolerated skew), or not numbers.
  A restart refreshes ``expires_at``, so no item outlives its use.
- **Clocks**: every answer's ``Date`` bounds this process's clock error (:mod:`iamdb._sql.skew`).
  Within :data:`~iamdb._sql.skew.SKEW_SECONDS` (1 s) the clock is trusted; beyond it, once proven,
  the limiter goes by DynamoDB's time and warns once per process. A ticket taken on a clock
  the answer proved wrong is not used, and what the process wrote before it knew is restarted:
  a process whose clock is off harms at most itself.
- **An idle queue costs the next burst nothing**: the caller that started a run marks it idle
  after its login, if nobody took a ticket since: ``n`` is removed and ``f`` (fence) keeps its
  end, so the next login takes its slot with one write at ``max(now, f)``. That write is sent
  without waiting for its answer.
- **Every wait ends by the deadline and is checked after** (:class:`iamdb._sql.limits.Waits`): a
  process frozen while asleep (Lambda freezes environments between invocations) wakes to
  ThrottleError past its deadline, and a slot it missed is not used: it takes another.
- **Back-pressure is not an outage**: DynamoDB throttling and 5xx answers are retried with
  jittered backoff inside the deadline, then ThrottleError. Only when the table cannot be used at
  all (access denied, no such table, endpoint unreachable or not answering within
  :data:`CALL_SECONDS` twice in a row, an answer that makes no sense) does the limiter fail
  open: the login goes ahead under the per-process limiter, one warning per process, and
  DynamoDB is left alone for :data:`COOLDOWN_SECONDS`.

No exception that crossed the AWS client is kept or chained (its frames hold the signed
request): each is detached (:func:`iamdb.errors._detached`) where it is caught, and errors are
raised outside ``except`` blocks.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, NamedTuple, TypeGuard

from iamdb._aws.client import AwsError, retryable
from iamdb._aws.http import TransportError
from iamdb._core.backoff import DecorrelatedJitter
from iamdb._core.log import WarnOnce, logger
from iamdb._sql import queue as queue
from iamdb._sql.pace import paced_rate
from iamdb._sql.skew import SKEW_SECONDS, ClockCheck
from iamdb.errors import ConfigError, IamDbError, ThrottleError, _detached

if TYPE_CHECKING:
    from iamdb._aws.client import AwsClient, DynamoAnswer
    from iamdb._core.runtime import Runtime
    from iamdb._sql.pace import Waits

CALL_SECONDS = 1.0
"""No single DynamoDB call waits longer: a table that slow is not usable (fail open)."""

COOLDOWN_SECONDS = 30.0
"""After failing open, logins skip DynamoDB for this long."""

TRIES = 8
"""Writes one login makes to the queue at most (back-pressure retries aside)."""

_SKEW_US = round(SKEW_SECONDS * 1e6)


class Ticket(NamedTuple):
    """A slot taken in a server's queue (epoch microseconds, DynamoDB's time)."""

    key: str
    slot: int
    next: int  # the queue's next free slot right after this ticket
    started: bool  # this ticket began a run: mark the queue idle after the login
    until: int  # the latest instant the login may begin: later, the slot is missed


class FleetLimiter:
    """Fleet-wide pacing of new IAM logins through one DynamoDB table."""

    def __init__(self, table: str, aws: AwsClient, runtime: Runtime, warn_once: WarnOnce) -> None:
        self.table = table
        self.clock = ClockCheck(runtime.clock, warn_once)
        self._aws = aws
        self._rt = runtime
        self._warn_once = warn_once
        self._lock = threading.Lock()
        self._skip_until = 0.0

    def acquire(self, server: str, rate: float, waits: Waits) -> Ticket | None:
        """Take a slot for one login to ``server`` and sleep until it begins (``waits``: the
        login's deadline, and where its sleeps go).

        Returns the ticket (for :meth:`release`), or None when the limiter failed open.
        Raises ThrottleError when no slot begins before the deadline.
        """
        if self._rt.clock() < self._skip_until:
            return None
        spacing = round(1e6 / paced_rate(rate))
        key = f"q#{server}"
        backoff = DecorrelatedJitter(0.2, 2.0, uniform=self._rt.uniform)
        start, tries, stalled = 0, 0, False
        while tries < TRIES:
            found = self._attempt(server, rate, key, spacing, start, waits)
            if isinstance(found, Ticket):
                if self._use(found, waits):
                    return found
                start, tries = 0, tries + 1
            elif isinstance(found, int):
                start, tries = found, tries + 1
            elif isinstance(found, ConfigError):
                raise found
            elif isinstance(found, AwsError) and retryable(found):
                delay = backoff.next_delay()  # DynamoDB pushes back: slow down, inside the deadline
                if self._rt.clock() + delay > waits.deadline:
                    raise self._pushed_back(server, found, waits)
                waits.sleep(delay, f"DynamoDB table {self.table} to take writes again")
            elif isinstance(found, TransportError) and found.sent and not stalled:
                stalled = True  # one answer late: a stall, maybe; ask once more
                delay = min(backoff.next_delay(), waits.deadline - self._rt.clock())
                if delay > 0:
                    waits.sleep(delay, f"DynamoDB table {self.table} to answer")
            else:  # unreachable, no credentials, makes no sense: the table is not usable
                self._fail_open(found)
                return None
        spent = self._rt.clock() - waits.began
        raise ThrottleError(
            f"the fleet's queue of new IAM logins to {server} changed under each of {TRIES} "
            f"writes of this login ({spent:.2f} s): no permit was taken. Something other than "
            f"iamdb may be writing DynamoDB table {self.table}"
        )

    def _attempt(
        self, server: str, rate: float, key: str, spacing: int, start: int, waits: Waits
    ) -> Ticket | int | IamDbError:
        """One try at a ticket: the ticket, the earliest slot to try again from, or what went
        wrong (detached). Raises ThrottleError when the queue reaches past the deadline."""
        failure = self._warm(waits.deadline)  # TLS before reading the clock
        if failure is not None:
            return failure
        offset, asked = self.clock.offset(), _us(self.clock.now())
        view = self._view(start, spacing, waits.deadline)
        if view.start > view.hi:
            raise self._too_late(server, rate, view.start - view.now, view, waits)
        answer, took = self._update(key, queue.take(view, spacing), waits.deadline)
        if not isinstance(answer, IamDbError):
            n = queue.number(answer.get("Attributes"), "n")
            if not isinstance(n, float):
                return AwsError("dynamodb", "MalformedResponse", "no number n in the answer")
            if self._misled(offset):
                return 0  # taken on a clock this answer proved wrong: not used, take again
            slot = int(n) - spacing
            return Ticket(key, slot, int(n), slot == view.start, _until(slot, asked, took))
        if not _refused(answer):
            return answer
        view = self._view(start, spacing, waits.deadline)  # the clock as this answer left it
        found = queue.verdict(answer.item, view)
        if found is None:
            return self._restart(key, spacing, waits)
        if found > view.hi:
            raise self._too_late(server, rate, found - view.now, view, waits)
        return found

    def _restart(self, key: str, spacing: int, waits: Waits) -> Ticket | int | IamDbError:
        """Restart a queue that is not legitimate at this instant; 0 (take again) when another
        caller restarted it first."""
        offset, asked = self.clock.offset(), _us(self.clock.now())
        view = self._view(0, spacing, waits.deadline)
        answer, took = self._update(key, queue.restart(view, spacing), waits.deadline)
        if isinstance(answer, IamDbError):
            return 0 if _refused(answer) else answer
        if self._misled(offset):
            return 0
        return Ticket(key, view.now, view.now + spacing, True, _until(view.now, asked, took))

    def _use(self, ticket: Ticket, waits: Waits) -> bool:
        """Sleep until the ticket's slot; False when the slot was missed (the process was
        suspended, or the answer came too late): the ticket is not used."""
        wait = ticket.slot - _us(self.clock.now())
        if wait > 0:
            waits.sleep(wait / 1e6, "its slot in the fleet's queue")
        else:
            waits.check("DynamoDB's answer")
        late = _us(self.clock.now()) - ticket.until
        if late <= 0:
            return True
        logger.debug("fleet limiter: slot missed by %.3f s; taking another", late / 1e6)
        return False

    def release(self, ticket: Ticket) -> None:
        """After the login: mark the queue idle when this ticket began its run and nobody
        took a ticket since (sent without waiting for the answer)."""
        if not ticket.started:
            return
        payload = {"TableName": self.table, "Key": {"pk": {"S": ticket.key}}}
        payload.update(queue.idle(ticket.next))
        try:
            self._aws.dynamodb_send("UpdateItem", payload, self._call_deadline())
        except IamDbError as exc:  # best effort: the next login restarts a stale queue
            logger.debug("fleet limiter: marking the queue idle failed (%s)", _shown(exc))

    def _view(self, start: int, spacing: int, deadline: float) -> queue.View:
        # What it writes and what it calls stale go by the earliest DynamoDB's time can be
        # (never in the future, never a live queue restarted); from the future by the latest.
        now, latest = _us(self.clock.earliest()), _us(self.clock.latest())
        hi = min(_us(deadline - self.clock.offset()), now + queue.HORIZON_US)
        lo, wlim = now - queue.TOLERANCE_US, latest + _SKEW_US
        return queue.View(now, max(start, now), lo, hi, wlim, wlim + queue.HORIZON_US + spacing)

    def _misled(self, offset: float) -> bool:
        """Whether the clock correction moved beyond the tolerance since ``offset``."""
        return abs(self.clock.offset() - offset) > SKEW_SECONDS

    def _warm(self, deadline: float) -> IamDbError | None:
        try:
            self._aws.warm("dynamodb", self._call_deadline(deadline))
        except IamDbError as exc:
            return _detached(exc)
        return None

    def _update(
        self, key: str, payload: dict[str, Any], deadline: float
    ) -> tuple[DynamoAnswer | IamDbError, float]:
        """One conditional write: its answer or its error (detached), and how long it took.
        Every answer's Date goes to the clock check."""
        payload = {
            "TableName": self.table,
            "Key": {"pk": {"S": key}},
            **payload,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        answer: DynamoAnswer | IamDbError
        sent = self._rt.clock()
        try:
            answer = self._aws.dynamodb("UpdateItem", payload, self._call_deadline(deadline))
        except IamDbError as exc:
            answer = _detached(exc)
        received = self._rt.clock()
        self.clock.observe(sent, received, getattr(answer, "server_time", None))
        return answer, received - sent

    def _call_deadline(self, deadline: float | None = None) -> float:
        until = self._rt.clock() + CALL_SECONDS
        return until if deadline is None else min(until, deadline)

    def _fail_open(self, exc: IamDbError) -> None:
        with self._lock:
            self._skip_until = self._rt.clock() + COOLDOWN_SECONDS
        reason = _shown(exc.code if isinstance(exc, AwsError) else f"{type(exc).__name__}: {exc}")
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

    def _too_late(
        self, server: str, rate: float, wait_us: int, view: queue.View, waits: Waits
    ) -> ThrottleError:
        return ThrottleError(
            f"the fleet's queue of new IAM logins to {server} reaches {wait_us / 1e6:.2f} s "
            f"ahead, past this login's deadline {(view.hi - view.now) / 1e6:.2f} s away: no "
            f"permit was taken ({self._rt.clock() - waits.began:.2f} s spent). The whole fleet "
            f"shares {rate:g} logins/s to this instance: keep connections across invocations, "
            "start fewer environments at once, or raise IAMDB_CONNECT_RATE if the instance "
            "admits more"
        )

    def _pushed_back(self, server: str, exc: AwsError, waits: Waits) -> ThrottleError:
        return ThrottleError(
            f"DynamoDB table {self.table} kept pushing back ({_shown(exc.code)}) until this "
            f"login's deadline: no fleet-wide permit for a new IAM login to {server} after "
            f"{self._rt.clock() - waits.began:.2f} s. Give the table more write capacity "
            "(on-demand billing) or start fewer environments at once"
        )


def _refused(failure: IamDbError) -> TypeGuard[AwsError]:
    return isinstance(failure, AwsError) and failure.code == "ConditionalCheckFailedException"


def _until(slot: int, asked: int, took: float) -> int:
    """The latest instant the login of ``slot``, asked for at ``asked``, may begin: 50 ms after
    the slot or the answer, whichever is later (an answer counts at most :data:`CALL_SECONDS`:
    one later than that, the process was suspended while waiting for it)."""
    return max(slot, asked + _us(min(took, CALL_SECONDS))) + queue.TOLERANCE_US


def _us(seconds: float) -> int:
    return int(seconds * 1_000_000)


def _shown(text: object, limit: int = 120) -> str:
    """Text from a remote answer as a log line may show it: one line, at most ``limit``."""
    found = str(text)
    line = "".join(c if c.isprintable() else " " for c in found[:limit])
    return line + "..." if len(found) > limit else line
