"""The fleet limiter's ticket queue on a fake clock, against the fleet simulation's DynamoDB model.

The model (bench/fleetsim/dynamodb.py) evaluates DynamoDB's expressions itself and is
cross-checked against moto (tests/bench/test_fleetsim_dynamodb.py); the same limiter runs
against moto in tests/integration/test_fleet_limiter.py. Here every answer is instant, carries
the fake clock's ``Date`` (DynamoDB's time), and the clock moves only when the limiter sleeps,
so each condition is checked exactly. Clock skew, corrupt items and frozen processes are in
test_fleet_faults.py.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import pytest

from bench.fleetsim.dynamodb import Table
from bench.fleetsim.values import DynamoError
from iamdb._aws.client import AwsError, DynamoAnswer
from iamdb._aws.http import TransportError
from iamdb._core.log import WarnOnce
from iamdb._core.runtime import Runtime
from iamdb._sql.fleet import COOLDOWN_SECONDS, FleetLimiter, Ticket
from iamdb._sql.pace import Waits, paced_rate
from iamdb._sql.queue import TOLERANCE_US
from iamdb.errors import ConfigError, CredentialsError, IamDbError, ThrottleError
from tests.fakes import FakeTime

EP = "db.c9akciq32.us-east-1.rds.amazonaws.com:5432"
KEY = f"q#{EP}"
SPACING = round(1e6 / paced_rate(10))


class FakeAws:
    """iamdb's AWS client over the model table: each call at the fake clock's instant (true
    time, DynamoDB's), its answer stamped with that instant's ``Date`` as HTTP does."""

    def __init__(self, t: FakeTime, table: Table) -> None:
        self.t, self.table = t, table
        self.calls: list[str] = []
        self.sent: list[dict[str, Any]] = []
        self.fail: list[IamDbError] = []  # raised instead of answering, one per call
        self.took: list[float] = []  # how long the next calls take (the fake clock moves)

    def warm(self, service: str, deadline: float) -> None:
        pass

    def dynamodb(self, operation: str, payload: dict[str, Any], deadline: float) -> Any:
        self.calls.append(payload["UpdateExpression"].split()[0])
        self.t.now += self.took.pop(0) if self.took else 0.0
        if self.fail:
            raise self.fail.pop(0)
        date = float(math.floor(self.t.now))
        failure: DynamoError | None = None
        try:
            found = self.table.call(operation, payload, self.t.now)
        except DynamoError as exc:
            failure = exc
        if failure is not None:
            raise AwsError(
                "dynamodb",
                failure.code,
                failure.message,
                status=failure.status,
                item=failure.item,
                server_time=date,
            )
        answer = DynamoAnswer(found)
        answer.server_time = date
        return answer

    def dynamodb_send(self, operation: str, payload: dict[str, Any], deadline: float) -> None:
        self.sent.append(payload)
        with contextlib.suppress(DynamoError):
            self.table.call(operation, payload, self.t.now)


class Fleet:
    """A FleetLimiter on FakeAws, its clock ``offset`` seconds off the fake (true) time."""

    def __init__(self, t: FakeTime, table: Table, offset: float = 0.0) -> None:
        self.t, self.aws, self.offset = t, FakeAws(t, table), offset
        self.rt = Runtime(environ={}, clock=self.clock, sleep=t.sleep, random=lambda: 0.0)
        self.limiter = FleetLimiter("iamdb-throttle", self.aws, self.rt, WarnOnce())  # type: ignore[arg-type]

    def clock(self) -> float:
        return self.t.now + self.offset

    def acquire(self, seconds: float = 5.0, *, rate: float = 10) -> Ticket | None:
        """A ticket for a login whose deadline is ``seconds`` away on this process's clock."""
        return self.limiter.acquire(EP, rate, Waits(self.rt, EP, self.clock() + seconds))


def setup(frozen: bool = True) -> tuple[Fleet, FakeAws, FakeTime, Table]:
    t = FakeTime(frozen=frozen)
    table = Table()
    fleet = Fleet(t, table)
    return fleet, fleet.aws, t, table


def us(seconds: float) -> int:
    return int(seconds * 1_000_000)


def put(table: Table, **numbers: int) -> None:
    item = {"pk": {"S": KEY}, **{k: {"N": str(v)} for k, v in numbers.items()}}
    table.call("PutItem", {"TableName": table.name, "Item": item}, 0.0)


def n_of(table: Table) -> int | None:
    item = table.items.get(KEY, {})
    return int(item["n"][1]) if "n" in item else None


def test_an_absent_queue_gives_the_first_caller_now_in_one_write() -> None:
    fleet, aws, t, table = setup()
    ticket = fleet.acquire()
    assert ticket is not None and ticket.slot == us(t.now) and ticket.started
    assert aws.calls == ["SET"] and t.sleeps == [] and n_of(table) == us(t.now) + SPACING


def test_concurrent_callers_queue_up_one_write_each() -> None:
    fleet, aws, t, _ = setup()
    slots = [fleet.acquire() for _ in range(6)]
    assert [s.slot for s in slots if s] == [us(t.now) + i * SPACING for i in range(6)]
    assert len(aws.calls) == 6


def test_the_deadline_is_in_the_condition() -> None:
    fleet, aws, t, table = setup()
    for _ in range(9):
        fleet.acquire()  # the queue reaches 1 s ahead
    before, slept = n_of(table), len(t.sleeps)
    with pytest.raises(ThrottleError, match=r"reaches 1\.00 s ahead"):
        fleet.acquire(0.5)
    assert n_of(table) == before and len(aws.calls) == 10 and len(t.sleeps) == slept
    with pytest.raises(ThrottleError):
        fleet.acquire(-1)  # a deadline already past: not even asked
    assert len(aws.calls) == 10


def test_a_stale_queue_is_restarted_and_a_just_stale_one_reused() -> None:
    fleet, aws, t, table = setup()
    put(table, n=us(t.now) - TOLERANCE_US - 1)
    ticket = fleet.acquire()
    assert ticket is not None and ticket.slot == us(t.now) and ticket.started
    assert aws.calls == ["SET", "SET"]  # the failed take, then the restart
    put(table, n=us(t.now) - TOLERANCE_US)
    ticket = fleet.acquire()
    assert ticket is not None and ticket.slot == us(t.now) - TOLERANCE_US and not ticket.started
    assert len(aws.calls) == 3


def test_losing_the_restart_race_takes_a_ticket_behind_the_winner() -> None:
    fleet, aws, t, table = setup()
    put(table, n=us(t.now) - 10_000_000)
    winner = us(t.now) + SPACING  # another environment restarted it between our two writes
    real = aws.dynamodb

    def racing(operation: str, payload: dict[str, Any], deadline: float) -> Any:
        if payload["UpdateExpression"].startswith("SET #n = :next"):
            put(table, n=winner)
        return real(operation, payload, deadline)

    aws.dynamodb = racing  # type: ignore[method-assign]
    ticket = fleet.acquire()
    assert ticket is not None and ticket.slot == winner and not ticket.started
    assert len(aws.calls) == 3  # take (stale), restart (lost), take


def test_release_fences_an_idle_queue_and_the_next_caller_waits_for_the_fence() -> None:
    fleet, aws, _t, table = setup()
    first = fleet.acquire()
    assert first is not None
    fleet.limiter.release(first)
    assert len(aws.sent) == 1 and n_of(table) is None
    assert int(table.items[KEY]["f"][1]) == first.next
    second = fleet.acquire()  # within the fence: one failed write, then its slot
    assert second is not None and second.slot == first.next and len(aws.calls) == 3
    fleet.limiter.release(fleet.acquire())  # type: ignore[arg-type]
    assert len(aws.sent) == 1  # only a ticket that started a run marks the queue idle


def test_throttling_is_back_pressure_then_a_throttle_error() -> None:
    fleet, aws, t, _ = setup(frozen=False)
    throttled = AwsError("dynamodb", "ThrottlingException", "slow down", status=400)
    aws.fail = [throttled, AwsError("dynamodb", "InternalServerError", "oops", status=500)]
    ticket = fleet.acquire()
    assert ticket is not None and len(t.sleeps) == 2 and all(0.2 <= s <= 2 for s in t.sleeps)
    aws.fail = [throttled] * 100
    with pytest.raises(ThrottleError, match="pushing back"):
        fleet.acquire(3)
    assert sum(t.sleeps[2:]) <= 3


@pytest.mark.parametrize(
    "error",
    [
        AwsError("dynamodb", "ResourceNotFoundException", "no table", status=400),
        AwsError("dynamodb", "AccessDeniedException", "no", status=400),
        AwsError("dynamodb", "UnrecognizedClientException", "bad key", status=400),
        AwsError("dynamodb", "MalformedResponse", "not JSON", status=200),
        TransportError("cannot connect to 127.0.0.1:1: refused", sent=False),
        CredentialsError("no AWS credentials found"),
    ],
    ids=lambda e: getattr(e, "code", type(e).__name__),
)
def test_a_table_that_cannot_be_used_fails_open_and_cools_down(error: IamDbError) -> None:
    fleet, aws, t, _ = setup()
    aws.fail = [error]
    assert fleet.acquire() is None
    assert fleet.acquire() is None and len(aws.calls) == 1  # left alone
    t.now += COOLDOWN_SECONDS
    assert fleet.acquire() is not None and len(aws.calls) == 2


def test_one_late_answer_is_asked_again_two_fail_open() -> None:
    fleet, aws, t, _ = setup()
    late = TransportError("no complete answer in time", sent=True)
    aws.fail = [late]
    assert fleet.acquire() is not None and len(aws.calls) == 2
    aws.fail = [late, late]
    t.now += 1
    assert fleet.acquire() is None and len(aws.calls) == 4


def test_a_configuration_error_is_raised_not_swallowed() -> None:
    fleet, aws, _t, _ = setup()
    aws.fail = [ConfigError("AWS_REGION", "not set")]
    with pytest.raises(ConfigError):
        fleet.acquire()


def test_an_answer_without_the_slot_fails_open() -> None:
    fleet, aws, _t, _ = setup()
    aws.dynamodb = lambda *a, **k: {"Attributes": {}}  # type: ignore[assignment,method-assign]
    assert fleet.acquire() is None
