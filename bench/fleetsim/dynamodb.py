"""A model of one DynamoDB table (partition key ``pk``, a string): wire operations, capacity,
latency, statistics.

:meth:`Table.call` takes exactly the JSON 1.0 payloads of ``UpdateItem``, ``PutItem``,
``DeleteItem`` and ``GetItem`` and answers the wire response (``{"Attributes": ...}``,
``{"Item": ...}``) or raises :class:`~bench.fleetsim.values.DynamoError` with what the wire
would carry. Requests are validated first (payload keys, key schema, expressions, placeholders
defined and used), then charged, then applied (errors that depend on the item, such as a SET
operand missing from it, come after the charge).

Capacity, per item (as if every item had a partition of its own, which flatters the limiter
under test): at most :data:`WRITE_UNITS` writes accepted in any rolling second ``(t - 1, t]``,
and :data:`READ_UNITS` reads. Every item is below 1 KB, so a write costs one unit, a read one
unit; a write whose condition fails still costs its unit; a request over the budget costs
nothing and gets ``ThrottlingException`` (HTTP 400). A rolling second rather than a token
bucket: it never admits more than 1,000 writes in any second, where a bucket of 1,000 with
1,000/s refill would admit up to 2,000 in one (real DynamoDB's burst capacity lies between).

:class:`Client` is one environment's view: each call is a round trip drawn uniformly from
:data:`LATENCY` of virtual time, applied (and its ``Date`` stamped) at its midpoint, and
counted. :class:`Boto3Client` dresses a Client as a boto3 DynamoDB client for code written
against boto3.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Protocol

from bench.fleetsim.expr import Scope, apply_update
from bench.fleetsim.parse import parse_condition, parse_update
from bench.fleetsim.sim import RollingSecond, Sim
from bench.fleetsim.values import DynamoError, Item, Value, invalid, item_to_wire, parse_value

WRITE_UNITS = 1000
READ_UNITS = 3000
LATENCY = (0.004, 0.012)
"""Seconds a round trip takes (uniform): in-region DynamoDB, connection kept alive."""

WRITES = frozenset({"UpdateItem", "PutItem", "DeleteItem"})
_COMMON = {"TableName", "ConditionExpression", "ExpressionAttributeNames"}
_COMMON |= {"ExpressionAttributeValues", "ReturnValues", "ReturnValuesOnConditionCheckFailure"}
_PAYLOAD_KEYS = {
    "UpdateItem": _COMMON | {"Key", "UpdateExpression"},
    "PutItem": _COMMON | {"Item"},
    "DeleteItem": _COMMON | {"Key"},
    "GetItem": {"TableName", "Key", "ConsistentRead"},
}
_RETURN_VALUES = {
    "UpdateItem": {"NONE", "ALL_OLD", "UPDATED_OLD", "ALL_NEW", "UPDATED_NEW"},
    "PutItem": {"NONE", "ALL_OLD"},
    "DeleteItem": {"NONE", "ALL_OLD"},
}


@dataclass
class ItemStats:
    """What one item saw: accepted writes (failed conditions included), every request
    (throttled ones included), reads, and throttled requests."""

    writes: RollingSecond = field(default_factory=RollingSecond)
    requests: RollingSecond = field(default_factory=RollingSecond)
    reads: RollingSecond = field(default_factory=RollingSecond)
    throttled: int = 0


class Table:
    """One table's items and per-item statistics; requests apply instantly at ``now``."""

    def __init__(self, name: str = "iamdb-throttle", key: str = "pk") -> None:
        self.name = name
        self.key = key
        self.items: dict[str, Item] = {}
        self.stats: dict[str, ItemStats] = {}

    def call(self, operation: str, payload: dict[str, Any], now: float) -> dict[str, Any]:
        """Answer one request as DynamoDB would (or raise the DynamoError it would)."""
        allowed = _PAYLOAD_KEYS.get(operation)
        if allowed is None:
            raise DynamoError("UnknownOperationException", f"the model has no {operation:.40}")
        unknown = sorted(set(payload) - allowed)
        if unknown:
            raise invalid(f"the model does not support {', '.join(unknown)} in {operation}")
        if payload.get("TableName") != self.name:
            raise DynamoError("ResourceNotFoundException", "Requested resource not found")
        put = _item(payload, self.key) if operation == "PutItem" else None
        pk = put[self.key][1] if put is not None else self._key(payload.get("Key"))
        request = _Request(operation, payload)
        self._charge(pk, operation in WRITES, now)
        old = self.items.get(pk)
        if operation == "GetItem":
            return {"Item": item_to_wire(old)} if old is not None else {}
        scope = Scope(request.names, request.values, old if old is not None else {})
        if request.condition is not None and not request.condition.test(scope):
            failed = old if old is not None and request.old_on_failure else None
            raise DynamoError(
                "ConditionalCheckFailedException",
                "The conditional request failed",
                item=None if failed is None else item_to_wire(failed),
            )
        if operation == "PutItem":
            assert put is not None
            self.items[pk] = put
            return _answer(old if request.returns == "ALL_OLD" else None)
        if operation == "DeleteItem":
            self.items.pop(pk, None)
            return _answer(old if request.returns == "ALL_OLD" else None)
        return self._update(pk, old, request, scope)

    def _update(self, pk: str, old: Item | None, request: _Request, scope: Scope) -> dict[str, Any]:
        new, touched, written = (
            apply_update(request.update, scope, self.key)
            if request.update is not None
            else ({} if old is None else dict(old), [], [])
        )
        new[self.key] = ("S", pk)
        stored = old is not None or bool(written) or not touched  # REMOVE alone creates nothing
        if stored:
            self.items[pk] = new
        returns = request.returns
        if returns == "ALL_OLD":
            return _answer(old)
        if returns == "ALL_NEW":
            return _answer(new if stored else None)
        if returns == "UPDATED_OLD":
            return _answer({n: old[n] for n in touched if old is not None and n in old})
        if returns == "UPDATED_NEW":
            return _answer({n: new[n] for n in written if n in new})
        return {}

    def _key(self, key: object) -> str:
        if (
            not isinstance(key, dict)
            or list(key) != [self.key]
            or not isinstance(key[self.key], dict)
            or list(key[self.key]) != ["S"]
        ):
            raise invalid("The provided key element does not match the schema")
        value = key[self.key]["S"]
        if not isinstance(value, str) or not value:
            raise invalid("The provided key element does not match the schema")
        return value

    def _charge(self, pk: str, write: bool, now: float) -> None:
        """Spend one unit of the item's budget, or throttle (which costs nothing)."""
        stats = self.stats.get(pk)
        if stats is None:
            stats = self.stats[pk] = ItemStats()
        stats.requests.add(now)
        budget, units = (stats.writes, WRITE_UNITS) if write else (stats.reads, READ_UNITS)
        if budget.count(now) >= units:
            stats.throttled += 1
            raise DynamoError(
                "ThrottlingException",
                "Throughput exceeds the current capacity for one or more items; try again later",
            )
        budget.add(now)

    def peak_writes(self) -> int:
        """The most accepted writes any one item took in a rolling second."""
        return max((s.writes.peak for s in self.stats.values()), default=0)

    def peak_requests(self) -> int:
        """The most requests any one item received in a rolling second (throttled included)."""
        return max((s.requests.peak for s in self.stats.values()), default=0)

    def throttled(self) -> int:
        return sum(s.throttled for s in self.stats.values())


class _Request:
    """A request's expressions and placeholders, checked as DynamoDB checks them."""

    def __init__(self, operation: str, payload: dict[str, Any]) -> None:
        self.returns = payload.get("ReturnValues", "NONE")
        if self.returns not in _RETURN_VALUES.get(operation, {"NONE"}):
            raise invalid(f"ReturnValues {self.returns!r:.20} is not valid for {operation}")
        on_failure = payload.get("ReturnValuesOnConditionCheckFailure", "NONE")
        if on_failure not in ("NONE", "ALL_OLD"):
            raise invalid(f"ReturnValuesOnConditionCheckFailure {on_failure!r:.20} is not valid")
        self.old_on_failure = on_failure == "ALL_OLD"
        self.update = (
            parse_update(_text(payload, "UpdateExpression"))
            if "UpdateExpression" in payload
            else None
        )
        self.condition = None
        parsed: list[Any] = [] if self.update is None else [self.update]
        if "ConditionExpression" in payload:
            found = parse_condition(_text(payload, "ConditionExpression"))
            self.condition = found.condition
            parsed.append(found)
        names = payload.get("ExpressionAttributeNames")
        values = payload.get("ExpressionAttributeValues")
        for given, what in (
            (names, "ExpressionAttributeNames"),
            (values, "ExpressionAttributeValues"),
        ):
            if given is not None and (not isinstance(given, dict) or not given):
                raise invalid(f"{what} must not be empty")
        self.names: dict[str, str] = dict(names or {})
        self.values: dict[str, Value] = {
            k: parse_value(v, f"ExpressionAttributeValues {k}") for k, v in (values or {}).items()
        }
        _placeholders({n for p in parsed for n in p.names}, self.names, "name", "Names")
        _placeholders({v for p in parsed for v in p.values}, self.values, "value", "Values")


def _placeholders(used: set[str], given: dict[str, Any], kind: str, field_name: str) -> None:
    missing = sorted(used - given.keys())
    if missing:
        raise invalid(
            f"An expression attribute {kind} used in expression is not defined; "
            f"attribute {kind}: {missing[0]}"
        )
    unused = sorted(given.keys() - used)
    if unused:
        raise invalid(
            f"Value provided in ExpressionAttribute{field_name} unused in expressions: "
            f"keys: {{{', '.join(unused)}}}"
        )


def _text(payload: dict[str, Any], field_name: str) -> str:
    text = payload[field_name]
    if not isinstance(text, str):
        raise invalid(f"{field_name} must be a string")
    return text


def _item(payload: dict[str, Any], key: str) -> Item:
    wire = payload.get("Item")
    if not isinstance(wire, dict):
        raise invalid("PutItem needs an Item")
    item = {name: parse_value(value, f"Item {name}") for name, value in wire.items()}
    found = item.get(key)
    if found is None or found[0] != "S" or not found[1]:
        raise invalid("One or more parameter values were invalid: Missing the key pk in the item")
    return item


def _answer(attributes: Item | None) -> dict[str, Any]:
    return {"Attributes": item_to_wire(attributes)} if attributes else {}


class Client:
    """One environment's connection to the table: round trips in virtual time, counted."""

    def __init__(self, table: Table, sim: Sim, rng: random.Random) -> None:
        self.table = table
        self._sim = sim
        self._rng = rng
        self.requests = 0
        """Requests this environment sent (all operations)."""
        self.writes = 0
        """Of which writes DynamoDB took (UpdateItem, PutItem, DeleteItem), billed ones: a
        failed condition is a write, a throttled request is not."""
        self.date: float | None = None
        """The HTTP ``Date`` of the last answer: the instant the table applied the request,
        in whole seconds of true (virtual) time, as DynamoDB's clock stamps it."""

    def call(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send one request; its answer (or DynamoError) comes back a round trip later."""
        self.requests += 1
        trip = self._rng.uniform(*LATENCY)
        self._sim.sleep(trip / 2)
        self.date = float(math.floor(self._sim.now()))
        billed = operation in WRITES
        try:
            return self.table.call(operation, payload, self._sim.now())
        except DynamoError as exc:
            billed = billed and exc.code != "ThrottlingException"
            raise
        finally:
            self.writes += billed
            self._sim.sleep(trip / 2)


class ModelClientError(Exception):
    """What :class:`Boto3Client` raises, shaped like botocore's ClientError."""

    def __init__(self, error: DynamoError, operation: str) -> None:
        super().__init__(
            f"An error occurred ({error.code}) when calling the {operation} operation: "
            f"{error.message}"
        )
        self.operation_name = operation
        self.response: dict[str, Any] = {
            "Error": {"Code": error.code, "Message": error.message},
            "ResponseMetadata": {"HTTPStatusCode": error.status},
        }
        if error.item is not None:
            self.response["Item"] = error.item


class Caller(Protocol):
    def call(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]: ...


class Boto3Client:
    """A :class:`Client` (or anything with its ``call``) with boto3's DynamoDB client methods:
    keyword arguments in, the response dict out, :class:`ModelClientError` for error answers."""

    def __init__(self, client: Caller) -> None:
        self._client = client

    def update_item(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("UpdateItem", kwargs)

    def put_item(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("PutItem", kwargs)

    def delete_item(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("DeleteItem", kwargs)

    def get_item(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("GetItem", kwargs)

    def _call(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            answer = self._client.call(operation, payload)
        except DynamoError as error:
            raise ModelClientError(error, operation) from None
        return {**answer, "ResponseMetadata": {"HTTPStatusCode": 200}}
