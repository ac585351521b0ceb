"""The fleet limiter's ticket queue on a fake clock, against the fleet simulation's DynamoDB model.

The model (bench/fleetsim/dynamodb.py) evaluates DynamoDB's expressions itself and is
cross-checked against moto (tests/bench/test_fleetsim_dynamodb.py); the same limiter runs
against moto in tests/integration/test_fleet_limiter.py. Here every answer is instant and the
clock moves only when the limiter sleeps, so each condition is checked exactly.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from bench.fleetsim.dynamodb import Table
from bench.fleetsim.values import DynamoError
from iamdb._aws import AwsError
from iamdb._fleet import COOLDOWN_SECONDS, TOLERANCE_US, FleetLimiter
from iamdb._http import TransportError
from iamdb._limiter import paced_rate
from iamdb._log import WarnOnce
from iamdb.errors import ConfigError, CredentialsError, IamDbError, ThrottleError
from tests.fakes import FakeTime, runtime

EP = "db.c9akciq32.us-east-1.rds.amazonaws.com:5432"
KEY = f"q#{EP}"
SPACING = round(1e6 / paced_rate(10))


class FakeAws:
    """iamdb's AWS client over the model table: each call at the fake clock's instant."""

    def __init__(self, t: FakeTime, table: Table) -> None:
        self.t, self.table = t, table
        self.calls: list[str] = []
        self.sent: list[dict[str, Any]] = []
        self.fail: list[IamDbError] = []  # raised instead of answering, one per call

    def warm(self, service: str, deadline: float) -> None:
        pass

    def dynamodb(self, operation: str, payload: dict[str, Any], deadline: float) -> Any:
        self.calls.append(payload["UpdateExpression"].split()[0])
        if self.fail:
            raise self.fail.pop(0)
        try:
            return self.table.call(operation, payload, self.t.now)
        except DynamoError as exc:
            raise AwsError(
                "dynamodb", exc.code, exc.message, status=exc.status, item=exc.item
            ) from None

    def dynamodb_send(self, operation: str, payload: dict[str, Any], deadline: float) -> None:
        self.sent.append(payload)
        with contextlib.suppress(DynamoError):
            self.table.call(operation, payload, self.t.now)


def setup(frozen: bool = True) -> tuple[FleetLimiter, FakeAws, FakeTime, Table]:
    t = FakeTime(frozen=frozen)
    table = Table()
    aws = FakeAws(t, table)
    fleet = FleetLimiter("iamdb-throttle", aws, runtime({}, t, random=0.0), WarnOnce())  # type: ignore[arg-type]
    return fleet, aws, t, table


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
    ticket = fleet.acquire(EP, 10, t.now + 5)
    assert ticket is not None and ticket.slot == us(t.now) and ticket.started
    assert aws.calls == ["SET"] and t.sleeps == [] and n_of(table) == us(t.now) + SPACING


def test_concurrent_callers_queue_up_one_write_each() -> None:
    fleet, aws, t, _ = setup()
    slots = [fleet.acquire(EP, 10, t.now + 5) for _ in range(6)]
    assert [s.slot for s in slots if s] == [us(t.now) + i * SPACING for i in range(6)]
    assert len(aws.calls) == 6


def test_the_deadline_is_in_the_condition() -> None:
    fleet, aws, t, table = setup()
    for _ in range(9):
        fleet.acquire(EP, 10, t.now + 5)  # the queue reaches 1 s ahead
    before, slept = n_of(table), len(t.sleeps)
    with pytest.raises(ThrottleError, match=r"reaches 1\.00 s ahead"):
        fleet.acquire(EP, 10, t.now + 0.5)
    assert n_of(table) == before and len(aws.calls) == 10 and len(t.sleeps) == slept
    with pytest.raises(ThrottleError):
        fleet.acquire(EP, 10, t.now - 1)  # a deadline already past: not even asked
    assert len(aws.calls) == 10


def test_a_stale_queue_is_restarted_and_a_just_stale_one_reused() -> None:
    fleet, aws, t, table = setup()
    put(table, n=us(t.now) - TOLERANCE_US - 1)
    ticket = fleet.acquire(EP, 10, t.now + 5)
    assert ticket is not None and ticket.slot == us(t.now) and ticket.started
    assert aws.calls == ["SET", "SET"]  # the failed take, then the restart
    put(table, n=us(t.now) - TOLERANCE_US)
    ticket = fleet.acquire(EP, 10, t.now + 5)
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
    ticket = fleet.acquire(EP, 10, t.now + 5)
    assert ticket is not None and ticket.slot == winner and not ticket.started
    assert len(aws.calls) == 3  # take (stale), restart (lost), take


def test_release_fences_an_idle_queue_and_the_next_caller_waits_for_the_fence() -> None:
    fleet, aws, t, table = setup()
    first = fleet.acquire(EP, 10, t.now + 5)
    assert first is not None
    fleet.release(first)
    assert len(aws.sent) == 1 and n_of(table) is None
    assert int(table.items[KEY]["f"][1]) == first.next
    second = fleet.acquire(EP, 10, t.now + 5)  # within the fence: one failed write, then its slot
    assert second is not None and second.slot == first.next and len(aws.calls) == 3
    fleet.release(fleet.acquire(EP, 10, t.now + 5))  # type: ignore[arg-type]
    assert len(aws.sent) == 1  # only a ticket that started a run marks the queue idle


def test_throttling_is_back_pressure_then_a_throttle_error() -> None:
    fleet, aws, t, _ = setup(frozen=False)
    throttled = AwsError("dynamodb", "ThrottlingException", "slow down", status=400)
    aws.fail = [throttled, AwsError("dynamodb", "InternalServerError", "oops", status=500)]
    ticket = fleet.acquire(EP, 10, t.now + 5)
    assert ticket is not None and len(t.sleeps) == 2 and all(0.2 <= s <= 2 for s in t.sleeps)
    aws.fail = [throttled] * 100
    with pytest.raises(ThrottleError, match="pushing back"):
        fleet.acquire(EP, 10, t.now + 3)
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
    assert fleet.acquire(EP, 10, t.now + 5) is None
    assert fleet.acquire(EP, 10, t.now + 5) is None and len(aws.calls) == 1  # left alone
    t.now += COOLDOWN_SECONDS
    assert fleet.acquire(EP, 10, t.now + 5) is not None and len(aws.calls) == 2


def test_one_late_answer_is_asked_again_two_fail_open() -> None:
    fleet, aws, t, _ = setup()
    late = TransportError("no complete answer in time", sent=True)
    aws.fail = [late]
    assert fleet.acquire(EP, 10, t.now + 5) is not None and len(aws.calls) == 2
    aws.fail = [late, late]
    t.now += 1
    assert fleet.acquire(EP, 10, t.now + 5) is None and len(aws.calls) == 4


def test_a_configuration_error_is_raised_not_swallowed() -> None:
    fleet, aws, t, _ = setup()
    aws.fail = [ConfigError("AWS_REGION", "not set")]
    with pytest.raises(ConfigError):
        fleet.acquire(EP, 10, t.now + 5)


def test_an_answer_without_the_slot_fails_open() -> None:
    fleet, aws, t, _ = setup()
    aws.dynamodb = lambda *a, **k: {"Attributes": {}}  # type: ignore[assignment,method-assign]
    assert fleet.acquire(EP, 10, t.now + 5) is None
