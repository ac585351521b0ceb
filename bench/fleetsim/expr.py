"""DynamoDB's UpdateExpression and ConditionExpression: the parsed nodes and their evaluation.

The subset the model supports, parsed by grammar (not by matching known strings)::

    update    := (SET set-action {, set-action} | REMOVE path {, path} | ADD path :v {, path :v})+
    set-action:= path = operand [(+ | -) operand]
    operand   := path | :v | if_not_exists(path, operand)
    condition := condition OR condition | condition AND condition | NOT condition | ( condition )
               | attribute_exists(path) | attribute_not_exists(path)
               | operand (= | <> | < | <= | > | >=) operand
               | operand BETWEEN operand AND operand | operand IN (operand {, operand})
    path      := name | #name          (top-level attributes; keywords case-insensitive)

Semantics are DynamoDB's: every right-hand side is evaluated on the item as it was; ``=``,
``<``, ``<=``, ``>``, ``>=`` and BETWEEN are false when an operand is missing or the types
differ, while ``<>`` is the negation of ``=``, so true then (DynamoDB holds a missing
attribute unequal to anything, even to another missing one); BETWEEN with two constant
bounds that are reversed or of different types is a ValidationException. The parser is
:mod:`bench.fleetsim.parse`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bench.fleetsim.values import Item, Value, arithmetic, compare, equal, invalid


class Scope:
    """What an expression is evaluated against: the request's names and values, the old item."""

    __slots__ = ("item", "names", "values")

    def __init__(self, names: dict[str, str], values: dict[str, Value], item: Item) -> None:
        self.names = names
        self.values = values
        self.item = item

    def attr(self, ref: str) -> str:
        return self.names[ref] if ref[0] == "#" else ref


class Operand(Protocol):
    def get(self, scope: Scope) -> Value | None: ...


class Condition(Protocol):
    def test(self, scope: Scope) -> bool: ...


@dataclass(frozen=True)
class Path:
    ref: str  # "name" or "#alias"

    def get(self, scope: Scope) -> Value | None:
        return scope.item.get(scope.attr(self.ref))


@dataclass(frozen=True)
class Const:
    ref: str  # ":value"

    def get(self, scope: Scope) -> Value | None:
        return scope.values[self.ref]


@dataclass(frozen=True)
class IfNotExists:
    path: Path
    default: Operand

    def get(self, scope: Scope) -> Value | None:
        found = self.path.get(scope)
        return found if found is not None else self.default.get(scope)


@dataclass(frozen=True)
class Arith:
    left: Operand
    op: str
    right: Operand

    def get(self, scope: Scope) -> Value | None:
        a, b = present(self.left.get(scope)), present(self.right.get(scope))
        for side in (a, b):
            if side[0] != "N":
                raise invalid(
                    "An operand in the update expression has an incorrect data type; "
                    f"operator or function: {self.op}, operand type: {side[0]}"
                )
        return ("N", arithmetic(self.op, a[1], b[1]))


def present(value: Value | None) -> Value:
    """A value an update needs (SET's right-hand side): missing is a ValidationException."""
    if value is None:
        raise invalid(
            "The provided expression refers to an attribute that does not exist in the item"
        )
    return value


@dataclass(frozen=True)
class Compare:
    op: str
    left: Operand
    right: Operand

    def test(self, scope: Scope) -> bool:
        a, b = self.left.get(scope), self.right.get(scope)
        if self.op == "=":
            return equal(a, b)
        if self.op == "<>":
            return not equal(a, b)
        return compare(self.op, a, b)


@dataclass(frozen=True)
class Between:
    subject: Operand
    low: Operand
    high: Operand

    def test(self, scope: Scope) -> bool:
        x, lo, hi = self.subject.get(scope), self.low.get(scope), self.high.get(scope)
        if isinstance(self.low, Const) and isinstance(self.high, Const):
            assert lo is not None and hi is not None
            if lo[0] != hi[0] or compare(">", lo, hi):
                raise invalid(
                    "Invalid ConditionExpression: The BETWEEN operator requires upper bound to "
                    "be greater than or equal to lower bound"
                )
        return compare(">=", x, lo) and compare("<=", x, hi)


@dataclass(frozen=True)
class In:
    subject: Operand
    options: tuple[Operand, ...]

    def test(self, scope: Scope) -> bool:
        x = self.subject.get(scope)
        return any(equal(x, option.get(scope)) for option in self.options)


@dataclass(frozen=True)
class Exists:
    path: Path
    wanted: bool

    def test(self, scope: Scope) -> bool:
        return (self.path.get(scope) is not None) == self.wanted


@dataclass(frozen=True)
class Not:
    inner: Condition

    def test(self, scope: Scope) -> bool:
        return not self.inner.test(scope)


@dataclass(frozen=True)
class Logic:
    op: str  # "AND" | "OR"
    left: Condition
    right: Condition

    def test(self, scope: Scope) -> bool:
        if self.op == "AND":
            return self.left.test(scope) and self.right.test(scope)
        return self.left.test(scope) or self.right.test(scope)


@dataclass(frozen=True)
class Parsed:
    """A parsed expression and the placeholders it uses (checked against the request's)."""

    names: frozenset[str]
    values: frozenset[str]


@dataclass(frozen=True)
class ParsedCondition(Parsed):
    condition: Condition


@dataclass(frozen=True)
class Update(Parsed):
    sets: tuple[tuple[Path, Operand], ...]
    removes: tuple[Path, ...]
    adds: tuple[tuple[Path, Const], ...]


def apply_update(update: Update, scope: Scope, key: str) -> tuple[Item, list[str], list[str]]:
    """The item after ``update``, the attributes it touched and those it set (SET, ADD).

    ``scope.item`` is the item as it was (every right-hand side reads it); the key attribute
    ``key`` may not be touched, nor one attribute twice.
    """
    sets = [(scope.attr(path.ref), operand) for path, operand in update.sets]
    removes = [scope.attr(path.ref) for path in update.removes]
    adds = [(scope.attr(path.ref), const) for path, const in update.adds]
    written = [name for name, _ in sets] + [name for name, _ in adds]
    touched = written + removes
    seen: set[str] = set()
    for name in touched:
        if name == key:
            raise invalid(
                f"One or more parameter values were invalid: Cannot update attribute {key}. "
                "This attribute is part of the key"
            )
        if name in seen:
            raise invalid(
                "Invalid UpdateExpression: Two document paths overlap with each other; must "
                f"remove or rewrite one of these paths; path one: [{name}], path two: [{name}]"
            )
        seen.add(name)
    old = scope.item
    new = dict(old)
    for name, operand in sets:
        new[name] = present(operand.get(scope))
    for name in removes:
        new.pop(name, None)
    for name, const in adds:
        amount, current = present(const.get(scope)), old.get(name)
        if amount[0] != "N" or (current is not None and current[0] != "N"):
            raise invalid("An operand in the update expression has an incorrect data type")
        new[name] = amount if current is None else ("N", arithmetic("+", current[1], amount[1]))
    return new, touched, written
