"""The DynamoDB model's expression evaluator and operations, on their own.

Where moto (the integration cross-check's oracle) is known to differ from DynamoDB, the
behaviour is pinned here instead, as DynamoDB documents it and as the test suite of ScyllaDB's
Alternator (written against DynamoDB itself, test_condition_expression.py and
test_returnvalues.py) records it.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.fleetsim.dynamodb import Table
from bench.fleetsim.parse import parse_condition, parse_update
from bench.fleetsim.values import DynamoError


def n(text: str) -> dict[str, str]:
    return {"N": text}


def s(text: str) -> dict[str, str]:
    return {"S": text}


class Db:
    """A table at a fixed instant, called with payloads minus TableName and Key."""

    def __init__(self) -> None:
        self.table = Table("t")
        self.now = 1_800_000_000.0

    def __call__(self, op: str = "UpdateItem", pk: str = "k", **payload: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"TableName": "t", **payload}
        if op != "PutItem":
            body["Key"] = {"pk": s(pk)}
        return self.table.call(op, body, self.now)

    def item(self, pk: str = "k") -> dict[str, Any]:
        return self("GetItem", pk).get("Item", {})

    def error(self, op: str = "UpdateItem", **payload: Any) -> DynamoError:
        with pytest.raises(DynamoError) as info:
            self(op, **payload)
        return info.value


@pytest.fixture
def db() -> Db:
    found = Db()
    found(
        UpdateExpression="SET a = :one, b = :two, w = :w",
        ExpressionAttributeValues={":one": n("1"), ":two": n("2"), ":w": s("cat")},
    )
    return found


def holds(db: Db, condition: str, **values: dict[str, str]) -> bool:
    """Whether ``condition`` holds on item k (via a conditional write of an unused attribute)."""
    try:
        db(
            UpdateExpression="SET probe = :probe",
            ConditionExpression=condition,
            ExpressionAttributeValues={":probe": n("0"), **{f":{k}": v for k, v in values.items()}},
        )
        return True
    except DynamoError as exc:
        assert exc.code == "ConditionalCheckFailedException", exc
        return False


def test_precedence_is_not_then_and_then_or(db: Db) -> None:
    # a = 1, b = 2: "true OR false AND false" is true only if AND binds tighter.
    assert holds(db, "a = :x OR b = :y AND a = :y", x=n("1"), y=n("3"))
    assert not holds(db, "(a = :x OR b = :y) AND a = :y", x=n("1"), y=n("3"))
    assert not holds(db, "NOT a = :x AND b = :y", x=n("1"), y=n("2"))  # (NOT a = 1) AND ...
    assert holds(db, "not (a = :x and b = :y) or a between :x and :y", x=n("1"), y=n("2"))


def test_missing_attributes_and_mixed_types_compare_as_dynamodb_does(db: Db) -> None:
    # Order comparisons and BETWEEN: false when missing or of another type (moto answers
    # HTTP 500 for the mixed types). "=" is false, "<>" true, for a missing attribute, even
    # against another missing one (moto holds two missing attributes equal).
    for op in ("<", "<=", ">", ">="):
        assert not holds(db, f"nothere {op} :x", x=n("1"))
        assert not holds(db, f"a {op} :x", x=s("1"))
        assert not holds(db, f"q {op} z")
    assert not holds(db, "nothere BETWEEN :x AND :y", x=n("0"), y=n("9"))
    assert not holds(db, "a BETWEEN :x AND :y", x=s("0"), y=s("9"))
    assert not holds(db, "nothere = :x", x=n("1"))
    assert not holds(db, "q = z")
    assert holds(db, "nothere <> :x", x=n("1"))
    assert holds(db, "q <> z")
    assert holds(db, "a <> :x", x=s("1"))
    assert not holds(db, "a IN (:x, :y)", x=s("1"), y=n("3"))
    assert holds(db, "a IN (:x, :y)", x=s("1"), y=n("1.000"))


def test_between_with_constant_bounds_checks_them_but_attribute_bounds_just_fail(db: Db) -> None:
    for lo, hi in ((n("2"), n("1")), (n("1"), s("2"))):
        error = db.error(
            UpdateExpression="SET probe = :lo",
            ConditionExpression="a BETWEEN :lo AND :hi",
            ExpressionAttributeValues={":lo": lo, ":hi": hi},
        )
        assert (error.code, "BETWEEN" in error.message) == ("ValidationException", True)
    assert not holds(db, "a BETWEEN b AND :x", x=n("0"))  # 2 > 0: an empty range, no error


def test_strings_compare_by_code_point(db: Db) -> None:
    assert holds(db, "w < :x", x=s("dog"))
    assert holds(db, "w > :x", x=s("Zebra"))  # upper case sorts first
    assert holds(db, "w < :x", x=s("cat\u00e9"))


def test_numbers_are_exact_and_answered_in_canonical_form(db: Db) -> None:
    out = db(
        UpdateExpression="SET d = :a + :b, e = :c, f = :big - :one, g = :e",
        ExpressionAttributeValues={
            ":a": n("0.1"),
            ":b": n("0.2"),
            ":c": n("1.50"),
            ":one": n("1"),
            ":big": n("12345678901234567890123456789012345678"),
            ":e": n("-1e2"),
        },
        ReturnValues="UPDATED_NEW",
    )
    assert out["Attributes"] == {
        "d": n("0.3"),
        "e": n("1.5"),
        "f": n("12345678901234567890123456789012345677"),
        "g": n("-100"),
    }
    assert holds(db, "e = :x", x=n("1.5000"))
    for bad, why in (("1" * 39, "38 significant"), ("1e126", "overflow"), ("abc", "numeric")):
        error = db.error(UpdateExpression="SET x = :v", ExpressionAttributeValues={":v": n(bad)})
        assert why in error.message
    error = db.error(
        UpdateExpression="SET x = :v + :w",
        ExpressionAttributeValues={":v": n("9" * 38), ":w": n("0.1")},
    )
    assert "38 significant" in error.message


def test_right_hand_sides_read_the_item_as_it_was(db: Db) -> None:
    out = db(
        UpdateExpression="SET a = b, b = a ADD c :one",
        ExpressionAttributeValues={":one": n("5")},
        ReturnValues="ALL_NEW",
    )
    assert out["Attributes"] == {"pk": s("k"), "a": n("2"), "b": n("1"), "c": n("5"), "w": s("cat")}
    out = db(
        UpdateExpression="ADD c :one SET x = if_not_exists(x, a) - :one",
        ExpressionAttributeValues={":one": n("5")},
        ReturnValues="UPDATED_NEW",
    )
    assert out["Attributes"] == {"c": n("10"), "x": n("-3")}


def test_return_values(db: Db) -> None:
    values = {":v": n("7")}
    out = db(
        UpdateExpression="SET a = :v REMOVE w",
        ExpressionAttributeValues=values,
        ReturnValues="UPDATED_OLD",
    )
    assert out == {"Attributes": {"a": n("1"), "w": s("cat")}}
    # Setting the same value again still counts as an update (moto answers an empty map).
    assert db(
        UpdateExpression="SET a = :v", ExpressionAttributeValues=values, ReturnValues="UPDATED_NEW"
    ) == {"Attributes": {"a": n("7")}}
    assert db(
        UpdateExpression="SET a = :v", ExpressionAttributeValues=values, ReturnValues="UPDATED_OLD"
    ) == {"Attributes": {"a": n("7")}}
    # A created item: UPDATED_NEW has no key (moto adds it), ALL_OLD/UPDATED_OLD nothing.
    new = {"UpdateExpression": "SET a = :v", "ExpressionAttributeValues": values}
    assert db(pk="n1", ReturnValues="UPDATED_NEW", **new) == {"Attributes": {"a": n("7")}}
    assert db(pk="n2", ReturnValues="UPDATED_OLD", **new) == {}
    assert db(pk="n3", ReturnValues="ALL_OLD", **new) == {}
    assert db(pk="n4", ReturnValues="ALL_NEW", **new) == {
        "Attributes": {"pk": s("n4"), "a": n("7")}
    }
    assert db(pk="n5", **new) == {}
    # REMOVE alone on a missing item creates nothing.
    assert db(pk="gone", UpdateExpression="REMOVE a", ReturnValues="ALL_NEW") == {}
    assert db.item("gone") == {}
    assert db.error(ReturnValues="none", **new).code == "ValidationException"
    assert db.error("DeleteItem", ReturnValues="ALL_NEW").code == "ValidationException"


def test_put_delete_get_and_the_old_item_on_a_failed_condition(db: Db) -> None:
    assert (
        db(
            "PutItem",
            Item={"pk": s("p"), "v": n("1")},
            ConditionExpression="attribute_not_exists(pk)",
        )
        == {}
    )
    failed = db.error(
        "PutItem",
        Item={"pk": s("p"), "v": n("2")},
        ConditionExpression="attribute_not_exists(pk)",
        ReturnValuesOnConditionCheckFailure="ALL_OLD",
    )
    assert (failed.code, failed.item, failed.status) == (
        "ConditionalCheckFailedException",
        {"pk": s("p"), "v": n("1")},
        400,
    )
    assert failed.wire()["__type"].endswith("#ConditionalCheckFailedException")
    no_item = db.error(
        "DeleteItem",
        pk="absent",
        ConditionExpression="attribute_exists(pk)",
        ReturnValuesOnConditionCheckFailure="ALL_OLD",
    )
    assert no_item.item is None
    assert db("DeleteItem", pk="p", ReturnValues="ALL_OLD") == {
        "Attributes": {"pk": s("p"), "v": n("1")}
    }
    assert db("GetItem", pk="p") == {}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"UpdateExpression": "SET a = :nope"}, "not defined; attribute value: :nope"),
        (
            {"UpdateExpression": "SET #nope = :v", "ExpressionAttributeValues": {":v": n("1")}},
            "not defined; attribute name: #nope",
        ),
        (
            {
                "UpdateExpression": "SET a = :v",
                "ExpressionAttributeValues": {":v": n("1"), ":u": n("1")},
            },
            "unused in expressions: keys: {:u}",
        ),
        (
            {
                "UpdateExpression": "SET a = :v",
                "ExpressionAttributeValues": {":v": n("1")},
                "ExpressionAttributeNames": {"#u": "u"},
            },
            "unused in expressions: keys: {#u}",
        ),
        ({"UpdateExpression": "SET a = :v", "ExpressionAttributeValues": {}}, "must not be empty"),
        (
            {"UpdateExpression": "SET pk = :v", "ExpressionAttributeValues": {":v": s("x")}},
            "part of the key",
        ),
        (
            {
                "UpdateExpression": "SET a = :v SET b = :v",
                "ExpressionAttributeValues": {":v": n("1")},
            },
            '"SET" section can only be used once',
        ),
        (
            {
                "UpdateExpression": "SET a = :v REMOVE a",
                "ExpressionAttributeValues": {":v": n("1")},
            },
            "overlap",
        ),
        (
            {
                "UpdateExpression": "SET a = nothere + :v",
                "ExpressionAttributeValues": {":v": n("1")},
            },
            "does not exist in the item",
        ),
        (
            {"UpdateExpression": "SET a = w + :v", "ExpressionAttributeValues": {":v": n("1")}},
            "incorrect data type",
        ),
        (
            {"UpdateExpression": "ADD w :v", "ExpressionAttributeValues": {":v": n("1")}},
            "incorrect data type",
        ),
        (
            {"UpdateExpression": "SET a = :v", "ExpressionAttributeValues": {":v": {"BOOL": True}}},
            "S and N only",
        ),
        (
            {"UpdateExpression": "SET a.b = :v", "ExpressionAttributeValues": {":v": n("1")}},
            "top-level",
        ),
        (
            {
                "UpdateExpression": "SET a = :v",
                "ConditionExpression": "ATTRIBUTE_EXISTS(a)",
                "ExpressionAttributeValues": {":v": n("1")},
            },
            "Invalid function name",
        ),
        (
            {
                "UpdateExpression": "SET a = :v",
                "ConditionExpression": "attribute_exists(:v)",
                "ExpressionAttributeValues": {":v": n("1")},
            },
            "needs a path",
        ),
        (
            {
                "UpdateExpression": "SET a = :v",
                "ConditionExpression": "a",
                "ExpressionAttributeValues": {":v": n("1")},
            },
            "Syntax error",
        ),
        (
            {
                "UpdateExpression": "SET a = :v",
                "ConditionExpression": "a IN ()",
                "ExpressionAttributeValues": {":v": n("1")},
            },
            "Syntax error",
        ),
        ({"UpdateExpression": "  "}, "can not be empty"),
        (
            {
                "UpdateExpression": "SET a = :v",
                "ExpressionAttributeValues": {":v": n("1")},
                "Expected": {},
            },
            "does not support Expected",
        ),
    ],
)
def test_invalid_requests_are_validation_errors(
    db: Db, payload: dict[str, Any], expected: str
) -> None:
    error = db.error(**payload)
    assert error.code == "ValidationException"
    assert expected in error.message


def test_wrong_table_or_key() -> None:
    db = Db()
    assert db.error(TableName="other").code == "ResourceNotFoundException"
    with pytest.raises(DynamoError, match="key element does not match"):
        db.table.call("GetItem", {"TableName": "t", "Key": {"pk": n("1")}}, 0.0)
    with pytest.raises(DynamoError, match="key element does not match"):
        db.table.call("GetItem", {"TableName": "t", "Key": {"pk": s("a"), "x": s("b")}}, 0.0)


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet="ab#:v() =<>,+-.[]ANDORNOTSETREMOVEADDBETWEENINif_not_existsattribute_exists 01",
        max_size=40,
    )
)
def test_any_text_parses_or_is_a_validation_error(text: str) -> None:
    for parse in (parse_condition, parse_update):
        try:
            parse(text)
        except DynamoError as exc:
            assert exc.code == "ValidationException"
