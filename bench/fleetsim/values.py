"""DynamoDB attribute values as the model holds them: types S and N, numbers exact.

A value is a ``(type, payload)`` pair: ``("S", str)`` or ``("N", Decimal)``. Numbers follow
DynamoDB: at most 38 significant digits, magnitudes from 1E-130 to below 1E+126, arithmetic
exact (a result that does not fit is a ValidationException, never rounded), answers in
canonical form (``"1.50"`` comes back as ``"1.5"``, ``"1e2"`` as ``"100"``). Other types (B,
BOOL, NULL, L, M, sets) are refused with a ValidationException that says the model lacks them.

:class:`DynamoError` is every error answer of the model, carrying what the wire carries.
"""

from __future__ import annotations

import decimal
import re
from decimal import Decimal
from typing import Any

Value = tuple[str, Any]  # ("S", str) | ("N", Decimal)
Item = dict[str, Value]

_PREFIX = "com.amazonaws.dynamodb.v20120810#"
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")
# Wide enough that adding any two DynamoDB numbers is exact; Inexact turns rounding into errors.
_EXACT = decimal.Context(
    prec=400, Emax=999_999, Emin=-999_999, traps=[decimal.Inexact, decimal.InvalidOperation]
)
_MAX_DIGITS = 38
_TOO_BIG = Decimal("1E+126")
_TOO_SMALL = Decimal("1E-130")


class DynamoError(Exception):
    """An error answer: the ``__type`` code, HTTP status, message, and for a failed condition
    with ``ReturnValuesOnConditionCheckFailure=ALL_OLD`` the old item (wire form)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int = 400,
        item: dict[str, dict[str, str]] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.item = item

    def wire(self) -> dict[str, Any]:
        """The JSON body DynamoDB would answer with."""
        body: dict[str, Any] = {"__type": _PREFIX + self.code, "message": self.message}
        if self.item is not None:
            body["Item"] = self.item
        return body


def invalid(message: str) -> DynamoError:
    """A ValidationException (HTTP 400)."""
    return DynamoError("ValidationException", message)


def parse_value(wire: object, where: str) -> Value:
    """A wire attribute value (``{"N": "12"}``, ``{"S": "x"}``) as the model holds it."""
    if not isinstance(wire, dict) or len(wire) != 1:
        raise invalid(f"{where}: an attribute value must have exactly one type, got {wire!r:.80}")
    ((kind, payload),) = wire.items()
    if kind == "S" and isinstance(payload, str):
        return ("S", payload)
    if kind == "N" and isinstance(payload, str):
        return ("N", parse_number(payload))
    if kind in ("S", "N"):
        raise invalid(f"{where}: the {kind} value must be a string, got {payload!r:.40}")
    raise invalid(f"{where}: the model supports attribute types S and N only, not {kind!r:.10}")


def parse_number(text: str) -> Decimal:
    """A number as DynamoDB accepts it on the wire."""
    if not _NUMBER.match(text):
        raise invalid(f"The parameter cannot be converted to a numeric value: {text:.40}")
    return checked(Decimal(text))


def checked(number: Decimal) -> Decimal:
    """``number`` if DynamoDB can store it, else the ValidationException it answers."""
    if not number:
        return Decimal(0)
    normal = number.normalize(_EXACT)
    if len(normal.as_tuple().digits) > _MAX_DIGITS:
        raise invalid("Attempting to store more than 38 significant digits in a Number")
    if abs(normal) >= _TOO_BIG:
        raise invalid(
            "Number overflow. Attempting to store a number with magnitude larger than "
            "supported range"
        )
    if abs(normal) < _TOO_SMALL:
        raise invalid(
            "Number underflow. Attempting to store a number with magnitude smaller than "
            "supported range"
        )
    return normal


def arithmetic(op: str, left: Decimal, right: Decimal) -> Decimal:
    """``left + right`` or ``left - right``, exactly (or the ValidationException)."""
    # Exact: 400 digits hold any sum of two DynamoDB numbers (Inexact would be a model bug).
    result = _EXACT.add(left, right) if op == "+" else _EXACT.subtract(left, right)
    return checked(result)


def number_text(number: Decimal) -> str:
    """DynamoDB's canonical text of a number: no exponent, no trailing zeros."""
    if not number:
        return "0"
    return f"{number.normalize(_EXACT):f}"


def to_wire(value: Value) -> dict[str, str]:
    kind, payload = value
    return {kind: number_text(payload) if kind == "N" else payload}


def item_to_wire(item: Item) -> dict[str, dict[str, str]]:
    return {name: to_wire(value) for name, value in item.items()}


def equal(left: Value | None, right: Value | None) -> bool:
    """DynamoDB's ``=``: false when either side is missing or the types differ."""
    return left is not None and right is not None and left == right


def compare(op: str, left: Value | None, right: Value | None) -> bool:
    """DynamoDB's ``< <= > >=``: false when either side is missing or the types differ.

    Strings compare by their UTF-8 bytes, which is the order of their code points.
    """
    if left is None or right is None or left[0] != right[0]:
        return False
    a, b = left[1], right[1]
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)
