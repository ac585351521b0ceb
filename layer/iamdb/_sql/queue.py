"""The fleet queue's DynamoDB item: the writes that change it, and how a caller reads it back.

One item per signing endpoint (``pk`` = ``q#<host>:<port>``); instants are epoch microseconds on
DynamoDB's time as the writer knew it (:mod:`iamdb._sql.skew`):

- ``n``: the next free slot; absent when the queue is idle;
- ``f``: the fence of an idle queue, the end of its last run (no slot before it);
- ``w``: the writer's clock when it wrote (every take and restart sets it);
- ``expires_at``: TTL, epoch seconds.

A caller's bounds are a :class:`View`. A queue is *legitimate* when some limiter with a correct
clock and a deadline could have written it: ``n`` no older than ``lo`` and no further than
``far`` (deadlines bound how far a taker pushes ``n``: :data:`HORIZON_US`), ``f`` no further
than ``far``, ``w`` not after ``wlim`` (the latest DynamoDB's time can be now, plus the clock
error tolerated unproven), every one of them a number. A take needs a legitimate queue with
a slot before the caller's deadline; a restart needs a queue that is not legitimate, so that
concurrent restarts happen once. :func:`verdict` applies the same rules, client-side, to the
item a failed condition returned (``ALL_OLD``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

TOLERANCE_US = 50_000
"""A slot up to 50 ms in the past is still taken (logged in at once)."""

HORIZON_US = 900_000_000
"""No taker pushes ``n`` further ahead of its clock than this: a Lambda invocation lasts at most
900 s, and without a Lambda context iamdb's deadline is twice the connect timeout (at most 600
s). A queue reaching further was not written by a legitimate taker: it is restarted."""

TTL_SECONDS = 3600
"""How long after its last use an item lives (DynamoDB deletes it through TTL)."""

NAMES = {"#n": "n", "#f": "f", "#w": "w", "#x": "expires_at"}
_LEGIT = (
    "((attribute_not_exists(#n) AND (attribute_not_exists(#f) OR #f <= :far)) "
    "OR #n BETWEEN :lo AND :far) AND (attribute_not_exists(#w) OR #w <= :wlim)"
)
_TAKE = (
    "((attribute_not_exists(#n) AND (attribute_not_exists(#f) OR #f <= :start)) "
    "OR #n BETWEEN :lo AND :hi) AND (attribute_not_exists(#w) OR #w <= :wlim)"
)
_CORRUPT: Any = object()


class View(NamedTuple):
    """One caller's bounds, epoch microseconds on DynamoDB's time as this process knows it."""

    now: int
    start: int  # the earliest slot it may take (a fence raises it)
    lo: int  # the oldest slot still usable: TOLERANCE_US before the earliest ``now`` can be
    hi: int  # the latest slot it can use: its deadline, at most HORIZON_US ahead
    wlim: int  # an item written (its w) after this was written from the future
    far: int  # a queue reaching beyond this was not written by a legitimate taker


def take(view: View, spacing: int) -> dict[str, Any]:
    """Take the next slot (``n``, or ``start`` on an idle queue): returns the new ``n``."""
    return {
        "UpdateExpression": "SET #n = if_not_exists(#n, :start) + :s, #w = :now, #x = :ttl",
        "ConditionExpression": _TAKE,
        "ExpressionAttributeNames": NAMES,
        "ExpressionAttributeValues": _numbers(
            start=view.start,
            s=spacing,
            now=view.now,
            lo=view.lo,
            hi=view.hi,
            wlim=view.wlim,
            ttl=view.hi // 1_000_000 + TTL_SECONDS,
        ),
        "ReturnValues": "UPDATED_NEW",
    }


def restart(view: View, spacing: int) -> dict[str, Any]:
    """Restart a queue that is not legitimate at ``view.now`` (the caller's slot)."""
    return {
        "UpdateExpression": "SET #n = :next, #w = :now, #x = :ttl REMOVE #f",
        "ConditionExpression": f"NOT ({_LEGIT})",
        "ExpressionAttributeNames": NAMES,
        "ExpressionAttributeValues": _numbers(
            next=view.now + spacing,
            now=view.now,
            lo=view.lo,
            far=view.far,
            wlim=view.wlim,
            ttl=view.now // 1_000_000 + TTL_SECONDS,
        ),
    }


def idle(mine: int) -> dict[str, Any]:
    """Mark the queue idle, fenced at ``mine``, if ``n`` is still ``mine`` (nobody took since)."""
    return {
        "UpdateExpression": "REMOVE #n SET #f = :f, #x = :ttl",
        "ConditionExpression": "#n = :f",
        "ExpressionAttributeNames": {"#n": "n", "#f": "f", "#x": "expires_at"},
        "ExpressionAttributeValues": _numbers(f=mine, ttl=mine // 1_000_000 + TTL_SECONDS),
    }


def verdict(item: Any, view: View) -> int | None:
    """What a caller whose take failed does with the item it got back: None to restart it (it
    is not legitimate), else the earliest slot to take again from (beyond ``view.hi``: the
    queue reaches past the deadline)."""
    n, f, w = number(item, "n"), number(item, "f"), number(item, "w")
    if _CORRUPT in (n, w) or (w is not None and w > view.wlim):
        return None
    if n is None:
        if f is _CORRUPT or (f is not None and f > view.far):
            return None
        return view.start if f is None or f <= view.start else math.ceil(f)
    if not view.lo <= n <= view.far:
        return None
    return view.start if n <= view.hi else math.ceil(n)


def number(item: Any, name: str) -> Any:
    """Attribute ``name`` of a wire item: a float, None when absent, or a value no limiter
    writes (not a finite number) that :func:`verdict` treats as corrupt."""
    if not isinstance(item, dict) or name not in item:
        return None
    value = item[name]
    if not isinstance(value, dict) or not isinstance(value.get("N"), str) or len(value) != 1:
        return _CORRUPT
    try:
        found = float(value["N"])
    except ValueError:
        return _CORRUPT
    return found if math.isfinite(found) else _CORRUPT


def _numbers(**values: int) -> dict[str, dict[str, str]]:
    return {f":{name}": {"N": str(value)} for name, value in values.items()}
