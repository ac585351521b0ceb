"""The queue item's rules, client-side (``verdict``) against DynamoDB's evaluation of the same
rules in the conditions (the fleet simulation's model, itself cross-checked against moto).

A caller that reads the item back after a failed condition must reach the conclusion DynamoDB
reaches: retake exactly when the take would now pass, restart exactly when the restart would.
A disagreement is a loop of failed writes (or a queue nobody can restart), so every item shape
a table can hold is tried: attributes absent, numbers around each bound, far ahead, not numbers.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from bench.fleetsim.dynamodb import Table
from bench.fleetsim.values import DynamoError, item_to_wire
from iamdb._sql import queue as queue

KEY = "q#db.example:5432"
NOW = 1_800_000_000_000_000
SPACING = 111_111
VIEW = queue.View(
    now=NOW,
    start=NOW + 20_000,
    lo=NOW - queue.TOLERANCE_US,
    hi=NOW + 5_000_000,
    wlim=NOW + 1_400_000,
    far=NOW + 1_400_000 + queue.HORIZON_US + SPACING,
)


N = [
    None,
    VIEW.lo - 1,
    VIEW.lo,
    NOW,
    VIEW.hi,
    VIEW.hi + 1,
    {"N": f"{VIEW.hi}.5"},  # a number no limiter writes, but a number
    VIEW.far,
    VIEW.far + 1,
    {"N": "1.5e15"},
    {"S": "x"},
]
F = [None, VIEW.start - 1, VIEW.start, VIEW.start + 1, VIEW.far, VIEW.far + 1, {"S": "x"}]
W = [None, NOW - 10**9, VIEW.wlim, VIEW.wlim + 1, {"N": "1.5e15"}, {"S": "x"}]


def item(n: Any, f: Any, w: Any) -> dict[str, Any]:
    found: dict[str, Any] = {"pk": {"S": KEY}}
    for name, value in (("n", n), ("f", f), ("w", w)):
        if value is not None:
            found[name] = value if isinstance(value, dict) else {"N": str(value)}
    return found


def passes(table: Table, payload: dict[str, Any]) -> bool:
    """Whether DynamoDB (the model) accepts ``payload``'s condition on the item as it is now."""
    request = {"TableName": table.name, "Key": {"pk": {"S": KEY}}, **payload}
    before = dict(table.items.get(KEY, {}))
    try:
        table.call("UpdateItem", request, 0.0)
    except DynamoError as exc:
        assert exc.code == "ConditionalCheckFailedException", exc.message
        return False
    table.items[KEY] = before  # leave the item as found for the next check
    return True


@pytest.mark.parametrize(("n", "f", "w"), list(itertools.product(N, F, W)), ids=str)
def test_the_verdict_agrees_with_dynamodb(n: Any, f: Any, w: Any) -> None:
    table = Table()
    found = item(n, f, w)
    table.call("PutItem", {"TableName": table.name, "Item": found}, 0.0)
    verdict = queue.verdict(found, VIEW)
    assert passes(table, queue.restart(VIEW, SPACING)) == (verdict is None)
    assert passes(table, queue.take(VIEW, SPACING)) == (verdict == VIEW.start)
    if verdict is not None and verdict != VIEW.start:
        assert verdict > VIEW.start  # wait for the fence or the queue, or too late


def test_a_retake_from_the_verdict_passes() -> None:
    """Where the verdict says "take again from there" (a fence ahead of the start), the take
    from there passes."""
    rng = random.Random(7)
    for _ in range(200):
        table = Table()
        found = item(None, NOW + rng.randrange(0, 4_000_000), NOW)
        table.call("PutItem", {"TableName": table.name, "Item": found}, 0.0)
        start = queue.verdict(found, VIEW)
        assert start is not None and start >= VIEW.start
        assert passes(table, queue.take(VIEW._replace(start=start), SPACING))


def test_a_restart_happens_once() -> None:
    table = Table()
    table.call("PutItem", {"TableName": table.name, "Item": item({"S": "junk"}, None, None)}, 0)
    assert passes(table, queue.restart(VIEW, SPACING))
    request = {"TableName": table.name, "Key": {"pk": {"S": KEY}}, **queue.restart(VIEW, SPACING)}
    table.call("UpdateItem", request, 0.0)  # the first restart, applied
    assert not passes(table, queue.restart(VIEW, SPACING))  # a concurrent one now fails
    assert queue.verdict(item_to_wire(table.items[KEY]), VIEW) == VIEW.start  # and takes


def test_the_idle_mark_needs_the_queue_unchanged() -> None:
    table = Table()
    request = {"TableName": table.name, "Key": {"pk": {"S": KEY}}, **queue.take(VIEW, SPACING)}
    mine = int(table.call("UpdateItem", request, 0.0)["Attributes"]["n"]["N"])
    assert passes(table, queue.idle(mine))
    assert not passes(table, queue.idle(mine - 1))
