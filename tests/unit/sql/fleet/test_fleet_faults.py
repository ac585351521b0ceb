"""What no clock, no item and no freeze may do to the fleet queue (fake clocks, model table).

The fake clock ``t`` is DynamoDB's time (the ``Date`` of every answer); a process's own clock
is ``t + offset``. Bounds of the design: a clock off by more than 1 s (SKEW_SECONDS) is proven
off by one answer of DynamoDB and corrected to within half a second; a queue no legitimate
limiter wrote is restarted by the next caller; a slot missed while frozen is not used.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from bench.fleetsim.dynamodb import Table
from iamdb._aws.client import AwsError
from iamdb._sql.fleet import TRIES
from iamdb._sql.limits import Limits
from iamdb._sql.queue import HORIZON_US, TTL_SECONDS
from iamdb.errors import ThrottleError
from tests.fakes import FakeTime, RecordingProbe
from tests.unit.sql.fleet.test_fleet import EP, KEY, SPACING, Fleet, n_of, put, us


class Freezing(FakeTime):
    """A fake clock whose process is frozen ``freeze`` more seconds during its next sleep
    (Lambda freezes an environment between invocations; SIGSTOP plays it)."""

    def __init__(self) -> None:
        super().__init__()
        self.freeze = 0.0

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        self.now += self.freeze
        self.freeze = 0.0


def fleet(offset: float = 0.0, t: FakeTime | None = None, table: Table | None = None) -> Fleet:
    """A process ``offset`` s off DynamoDB's time on ``t`` (frozen unless given)."""
    return Fleet(t or FakeTime(frozen=True), table if table is not None else Table(), offset)


def item(table: Table) -> dict[str, float]:
    return {k: float(v[1]) for k, v in table.items[KEY].items() if v[0] == "N"}


# -- a process whose clock is off ------------------------------------------------------------


@pytest.mark.parametrize("offset", [10.0, 3600.0, -10.0, -3600.0])
def test_a_skewed_process_joins_a_running_queue_without_restarting_it(
    offset: float, caplog: pytest.LogCaptureFixture
) -> None:
    f = fleet(offset)
    put(f.aws.table, n=us(f.t.now + 0.3), w=us(f.t.now))  # correct clocks keep it running
    with caplog.at_level(logging.WARNING, logger="iamdb"):
        ticket = f.acquire()
        assert ticket is not None and ticket.slot == us(f.t.now + 0.3)  # its place in line
        assert f.aws.calls == ["SET", "SET"]  # the take its clock misjudged, then its own
        assert n_of(f.aws.table) == us(f.t.now + 0.3) + SPACING  # nothing restarted
        assert f.acquire() is not None and len(f.aws.calls) == 3  # from then on: one write
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "clock is" in warning and ("ahead of" if offset > 0 else "behind") in warning


@pytest.mark.parametrize("offset", [10.0, 3600.0, -10.0, -3600.0])
def test_a_skewed_process_first_on_an_idle_queue_repairs_what_it_wrote(offset: float) -> None:
    f = fleet(offset)
    ticket = f.acquire()
    # Its first write (before any answer) was on its own clock; the answer proved the clock
    # wrong, so that ticket was not used and the queue was restarted on DynamoDB's time.
    assert ticket is not None and ticket.started and len(f.aws.calls) == 3
    fixed = item(f.aws.table)  # restarted at the earliest DynamoDB's time can be: not ahead
    assert 0 <= us(f.t.now) - fixed["w"] <= 1_000_000 and fixed["n"] == fixed["w"] + SPACING
    assert ticket.slot == fixed["w"]
    correct = fleet(0.0, f.t, f.aws.table)  # a correct process next: one write, no wait
    assert correct.acquire() is not None and correct.aws.calls == ["SET"] and not f.t.sleeps[1:]


@pytest.mark.parametrize("deadline", [5.0, 30.0])
def test_a_correct_process_restarts_a_queue_written_from_the_future(deadline: float) -> None:
    f = fleet()
    put(f.aws.table, n=us(f.t.now + 10) + SPACING, w=us(f.t.now + 10))  # a clock 10 s fast
    ticket = f.acquire(deadline)  # not behind it (30 s would let it wait 10 s), not refused
    assert ticket is not None and ticket.slot == us(f.t.now) and ticket.started
    assert f.aws.calls == ["SET", "SET"] and f.t.sleeps == []
    assert n_of(f.aws.table) == us(f.t.now) + SPACING


def test_a_writer_within_the_tolerance_is_trusted() -> None:
    f = fleet()
    put(f.aws.table, n=us(f.t.now + 0.3), w=us(f.t.now + 0.6))  # its clock 0.6 s fast
    ticket = f.acquire()
    assert ticket is not None and ticket.slot == us(f.t.now + 0.3) and len(f.aws.calls) == 1


# -- items no legitimate limiter writes ------------------------------------------------------


@pytest.mark.parametrize(
    "found",
    [
        {"n": {"N": str(us(2e9))}},  # years ahead
        {"n": {"N": str(us(FakeTime().now) + HORIZON_US + 3_000_000)}, "w": {"N": "0"}},
        {"f": {"N": str(us(2e9))}},  # an idle queue fenced years ahead
        {"n": {"S": "garbage"}},
        {"n": {"N": "1"}, "w": {"S": "garbage"}},
        {"f": {"S": "garbage"}},
        {"n": {"N": str(us(1e9))}, "expires_at": {"N": "0"}},  # long stale (TTL not yet run)
    ],
    ids=["n-ahead", "n-past-horizon", "f-ahead", "n-text", "w-text", "f-text", "n-stale"],
)
def test_an_item_no_legitimate_limiter_wrote_is_restarted(found: dict[str, Any]) -> None:
    f = fleet()
    table = f.aws.table
    table.call("PutItem", {"TableName": table.name, "Item": {"pk": {"S": KEY}, **found}}, 0.0)
    ticket = f.acquire()
    assert ticket is not None and ticket.slot == us(f.t.now) and f.aws.calls == ["SET", "SET"]
    fixed = item(table)
    assert fixed["n"] == us(f.t.now) + SPACING and "f" not in table.items[KEY]
    assert fixed["expires_at"] >= f.t.now + TTL_SECONDS  # TTL clears it after its last use


def test_a_legitimate_long_queue_is_not_restarted() -> None:
    f = fleet()
    put(f.aws.table, n=us(f.t.now + 800), w=us(f.t.now))  # 800 s of a 900 s invocation
    with pytest.raises(ThrottleError, match=r"reaches 800\.00 s ahead") as caught:
        f.acquire(5)
    assert f.aws.calls == ["SET"] and n_of(f.aws.table) == us(f.t.now + 800)
    assert "past this login's deadline 5.00 s away" in str(caught.value)


def test_concurrent_restarts_happen_once() -> None:
    f = fleet()
    table = f.aws.table
    table.call("PutItem", {"TableName": table.name, "Item": {"pk": {"S": KEY}, "n": {"S": "x"}}}, 0)
    other = fleet(0.0, f.t, table)
    real = f.aws.dynamodb

    def racing(operation: str, payload: dict[str, Any], deadline: float) -> Any:
        if payload["UpdateExpression"].startswith("SET #n = :next"):
            assert other.acquire() is not None  # another process restarts it first
        return real(operation, payload, deadline)

    f.aws.dynamodb = racing  # type: ignore[method-assign]
    ticket = f.acquire()
    assert ticket is not None and ticket.slot == us(f.t.now) + SPACING and not ticket.started
    assert f.aws.calls == ["SET", "SET", "SET"] and other.aws.calls == ["SET", "SET"]


def test_no_taker_pushes_the_queue_beyond_the_horizon() -> None:
    f = fleet()
    sent: list[dict[str, Any]] = []
    real = f.aws.dynamodb

    def recording(operation: str, payload: dict[str, Any], deadline: float) -> Any:
        sent.append(payload)
        return real(operation, payload, deadline)

    f.aws.dynamodb = recording  # type: ignore[method-assign]
    f.acquire(10**6)  # a deadline days away (a context that lies, no context at all)
    hi = int(sent[0]["ExpressionAttributeValues"][":hi"]["N"])
    assert hi == us(f.t.now) + HORIZON_US


def test_a_queue_that_keeps_changing_is_given_up_after_a_few_writes() -> None:
    f = fleet()
    legit = {"n": {"N": str(us(f.t.now))}}

    def never(operation: str, payload: dict[str, Any], deadline: float) -> Any:
        f.aws.calls.append("SET")
        raise AwsError("dynamodb", "ConditionalCheckFailedException", "no", status=400, item=legit)

    f.aws.dynamodb = never  # type: ignore[method-assign]
    with pytest.raises(ThrottleError, match=f"changed under each of {TRIES} writes"):
        f.acquire()
    assert len(f.aws.calls) == TRIES


# -- frozen while waiting --------------------------------------------------------------------


def test_frozen_past_the_deadline_while_waiting_for_the_slot() -> None:
    t = Freezing()
    f = fleet(t=t)
    put(f.aws.table, n=us(t.now + 0.4), w=us(t.now))
    t.freeze = 20.0
    with pytest.raises(ThrottleError, match="the process was suspended while waiting") as caught:
        f.acquire(5)
    message = str(caught.value)
    assert "15.40 s past its deadline, 20.40 s after asking" in message
    assert "0.40 s of which were waits iamdb asked for" in message


def test_a_slot_missed_while_frozen_is_not_used_and_another_is_taken() -> None:
    t = Freezing()
    f = fleet(t=t)
    put(f.aws.table, n=us(t.now + 0.4), w=us(t.now))
    t.freeze = 3.0
    ticket = f.acquire(30)
    assert ticket is not None and ticket.slot == us(t.now)  # a new run: the old one is stale
    assert len(f.aws.calls) == 3  # the missed ticket, the take that found it stale, a restart


def test_frozen_during_the_answer_the_ticket_is_not_used() -> None:
    f = fleet()
    f.aws.took = [20.0]  # the answer comes 20 s after the request was sent
    with pytest.raises(ThrottleError, match="suspended while waiting for DynamoDB's answer"):
        f.acquire(5)
    put(f.aws.table, n=us(f.t.now), w=us(f.t.now))
    f.aws.took = [3.0]
    ticket = f.acquire(30)  # the slot is 3 s past when the answer comes: another is taken
    assert ticket is not None and ticket.slot == us(f.t.now) and len(f.aws.calls) == 4


def test_throttle_wait_counts_the_waits_asked_for_not_the_freeze() -> None:
    t = Freezing()
    f = fleet(t=t)
    probe = RecordingProbe()
    alone = Limits(10, None, f.rt)  # the process's bucket only
    alone.permit(EP, t.now + 30, probe)
    t.freeze = 20.0  # frozen during the bucket's wait (the next permit is 0.11 s away)
    alone.permit(EP, t.now + 30, probe)  # its deadline still ahead: carries on
    assert probe.points["ThrottleWaitMs"] == [0, pytest.approx(1000 / 9)]
    alone.permit(EP, t.now + 5, probe)
    t.freeze = 20.0
    with pytest.raises(ThrottleError, match="suspended while waiting for this process's permit"):
        alone.permit(EP, t.now + 5, probe)
    assert len(probe.points["ThrottleWaitMs"]) == 3  # a refused permit counts no wait
    limits, probe = Limits(10, f.limiter, f.rt), RecordingProbe()
    put(f.aws.table, n=us(t.now + 0.5), w=us(t.now))
    limits.permit(EP, t.now + 30, probe)
    assert probe.points["ThrottleWaitMs"] == [pytest.approx(500)]  # the fleet slot's wait


# -- what the limiter says -------------------------------------------------------------------


def test_the_fail_open_warning_shows_a_remote_code_bounded_on_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    f = fleet()
    huge = "Bad\nType" + "x" * 2_000_000
    f.aws.fail = [AwsError("dynamodb", huge, "no", status=400)]
    with caplog.at_level(logging.WARNING, logger="iamdb"):
        assert f.acquire() is None
    (line,) = [r.getMessage() for r in caplog.records]
    assert "\n" not in line and len(line) < 500 and "BadType" in line  # the code, sanitised


def test_errors_carry_no_context() -> None:
    f = fleet(t=FakeTime())
    f.aws.fail = [AwsError("dynamodb", "ThrottlingException", "slow", status=400)] * 50
    with pytest.raises(ThrottleError, match="kept pushing back") as caught:
        f.acquire(3)
    assert caught.value.__context__ is None and caught.value.__cause__ is None
