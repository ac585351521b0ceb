"""The parser of DynamoDB's UpdateExpression and ConditionExpression (grammar in
:mod:`bench.fleetsim.expr`): a tokenizer and a recursive descent that builds the nodes there.

Keywords are case-insensitive, function names case-sensitive, as in DynamoDB. Parses are cached
by text: an expression is parsed once per run, its placeholders bound per request.
"""

from __future__ import annotations

import functools
import re

from bench.fleetsim.expr import (
    Arith,
    Between,
    Compare,
    Condition,
    Const,
    Exists,
    IfNotExists,
    In,
    Logic,
    Not,
    Operand,
    ParsedCondition,
    Path,
    Update,
)
from bench.fleetsim.values import invalid

_TOKEN = re.compile(
    r"\s*(?:(?P<name>#[A-Za-z0-9_]+)|(?P<value>:[A-Za-z0-9_]+)|(?P<word>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op><>|<=|>=|[=<>(),+\-.\[\]]))"
)
_KEYWORDS = {"AND", "OR", "NOT", "BETWEEN", "IN", "SET", "REMOVE", "ADD", "DELETE"}
_CLAUSES = ("SET", "REMOVE", "ADD", "DELETE")
_COMPARATORS = {"=", "<>", "<", "<=", ">", ">="}
_UNSUPPORTED = {"attribute_type", "begins_with", "contains", "size", "list_append"}


@functools.lru_cache(maxsize=512)
def parse_condition(text: str) -> ParsedCondition:
    parser = _Parser(text, "ConditionExpression")
    condition = parser.disjunction()
    parser.end()
    return ParsedCondition(frozenset(parser.names), frozenset(parser.values), condition)


@functools.lru_cache(maxsize=512)
def parse_update(text: str) -> Update:
    parser = _Parser(text, "UpdateExpression")
    parser.clauses()
    parser.end()
    return Update(
        frozenset(parser.names),
        frozenset(parser.values),
        tuple(parser.sets),
        tuple(parser.removes),
        tuple(parser.adds),
    )


class _Parser:
    """Recursive descent over the tokens of one expression; records the placeholders used."""

    def __init__(self, text: str, what: str) -> None:
        self.text, self.what = text, what
        self.tokens: list[tuple[str, str, int]] = []
        self.names: set[str] = set()
        self.values: set[str] = set()
        self.sets: list[tuple[Path, Operand]] = []
        self.removes: list[Path] = []
        self.adds: list[tuple[Path, Const]] = []
        if not text.strip():
            raise invalid(f"Invalid {what}: The expression can not be empty;")
        pos = 0
        while pos < len(text):
            found = _TOKEN.match(text, pos)
            if found is None or found.lastgroup is None:
                rest = text[pos:].strip()
                if not rest:
                    break
                raise invalid(
                    f'Invalid {what}: Syntax error; token: "{rest[0]}", near: "{rest[:20]}"'
                )
            kind = found.lastgroup
            self.tokens.append((kind, found.group(kind), found.start(kind)))
            pos = found.end()
        self.tokens.append(("end", "<EOF>", len(text)))
        self.i = 0

    def clauses(self) -> None:
        seen: set[str] = set()
        while True:
            kind, text, _ = self._peek()
            clause = text.upper()
            if kind != "word" or clause not in _CLAUSES:
                if not seen or kind != "end":
                    raise self._syntax()
                return
            self.i += 1
            if clause in seen:
                raise invalid(
                    f'Invalid UpdateExpression: The "{clause}" section can only be used once in '
                    "an update expression;"
                )
            if clause == "DELETE":
                raise invalid("DELETE works on sets, which the model does not support")
            seen.add(clause)
            self._action(clause)
            while self._accept(","):
                self._action(clause)

    def _action(self, clause: str) -> None:
        path = self._path()
        if clause == "REMOVE":
            self.removes.append(path)
        elif clause == "ADD":
            kind, text, _ = self._take()
            if kind != "value":
                raise self._syntax(self.i - 1)
            self.values.add(text)
            self.adds.append((path, Const(text)))
        else:
            self._expect("=")
            value = self._set_operand()
            _, op, _ = self._peek()
            if op in ("+", "-"):
                self.i += 1
                value = Arith(value, op, self._set_operand())
            self.sets.append((path, value))

    def _set_operand(self) -> Operand:
        kind, text, _ = self._peek()
        if kind == "word" and self.tokens[self.i + 1][1] == "(":
            self.i += 2
            if text != "if_not_exists":
                raise self._function(text)
            path = self._path()
            self._expect(",")
            default = self._set_operand()
            self._expect(")")
            return IfNotExists(path, default)
        return self._operand()

    def disjunction(self) -> Condition:
        left = self._conjunction()
        while self._accept_word("OR"):
            left = Logic("OR", left, self._conjunction())
        return left

    def _conjunction(self) -> Condition:
        left = self._negation()
        while self._accept_word("AND"):
            left = Logic("AND", left, self._negation())
        return left

    def _negation(self) -> Condition:
        if self._accept_word("NOT"):
            return Not(self._negation())
        if self._accept("("):
            inner = self.disjunction()
            self._expect(")")
            return inner
        kind, text, _ = self._peek()
        if kind == "word" and self.tokens[self.i + 1][1] == "(":
            self.i += 2
            if text not in ("attribute_exists", "attribute_not_exists"):
                raise self._function(text)
            if self._peek()[0] != "name" and self._peek()[0] != "word":
                raise invalid(f"Invalid ConditionExpression: {text} needs a path as its operand")
            path = self._path()
            self._expect(")")
            return Exists(path, text == "attribute_exists")
        subject = self._operand()
        _, op, _ = self._peek()
        if op in _COMPARATORS:
            self.i += 1
            return Compare(op, subject, self._operand())
        if self._accept_word("BETWEEN"):
            low = self._operand()
            if not self._accept_word("AND"):
                raise self._syntax()
            return Between(subject, low, self._operand())
        if self._accept_word("IN"):
            self._expect("(")
            options = [self._operand()]
            while self._accept(","):
                options.append(self._operand())
            self._expect(")")
            return In(subject, tuple(options))
        raise self._syntax()

    def _operand(self) -> Operand:
        kind, text, _ = self._peek()
        if kind == "value":
            self.i += 1
            self.values.add(text)
            return Const(text)
        return self._path()

    def _path(self) -> Path:
        kind, text, _ = self._take()
        if kind not in ("name", "word") or (kind == "word" and text.upper() in _KEYWORDS):
            raise self._syntax(self.i - 1)
        if self._peek()[1] in (".", "["):
            raise invalid("the model supports top-level attributes only (no nested paths)")
        if kind == "name":
            self.names.add(text)
        return Path(text)

    def end(self) -> None:
        if self._peek()[0] != "end":
            raise self._syntax()

    def _peek(self) -> tuple[str, str, int]:
        return self.tokens[self.i]

    def _take(self) -> tuple[str, str, int]:
        token = self.tokens[self.i]
        if token[0] != "end":
            self.i += 1
        return token

    def _accept(self, op: str) -> bool:
        if self._peek()[1] == op and self._peek()[0] == "op":
            self.i += 1
            return True
        return False

    def _accept_word(self, word: str) -> bool:
        kind, text, _ = self._peek()
        if kind == "word" and text.upper() == word:
            self.i += 1
            return True
        return False

    def _expect(self, op: str) -> None:
        if not self._accept(op):
            raise self._syntax()

    def _function(self, name: str) -> Exception:
        if name in _UNSUPPORTED:
            return invalid(f"Invalid {self.what}: the model does not support function {name}")
        return invalid(f"Invalid {self.what}: Invalid function name; function: {name:.40}")

    def _syntax(self, at: int | None = None) -> Exception:
        _, token, pos = self.tokens[self.i if at is None else at]
        near = self.text[pos : pos + 20]
        return invalid(f'Invalid {self.what}: Syntax error; token: "{token}", near: "{near}"')
