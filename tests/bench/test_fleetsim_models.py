"""The fleet simulation's DynamoDB capacity and latency, its boto3 face, and its RDS throttle."""

from __future__ import annotations

import random
from datetime import datetime, timezone
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bench.fleetsim.dynamodb import (
    LATENCY,
    WRITE_UNITS,
    Boto3Client,
    Client,
    ModelClientError,
    Table,
)
from bench.fleetsim.rds import HANDSHAKE, Rds
from bench.fleetsim.sim import EPOCH, Sim
from devstack.verifier import KeyInfo, Verifier
from iamdb._aws.credentials import Credentials
from iamdb._aws.signer import generate_db_auth_token
from iamdb.errors import AuthError

ADD_ONE = {
    "TableName": "t",
    "Key": {"pk": {"S": "hot"}},
    "UpdateExpression": "ADD c :one",
    "ExpressionAttributeValues": {":one": {"N": "1"}},
}
FAILS = {**ADD_ONE, "ConditionExpression": "attribute_not_exists(pk)"}


def test_an_item_takes_1000_writes_per_rolling_second_then_throttles_for_free() -> None:
    table = Table("t")
    t0 = EPOCH
    for i in range(WRITE_UNITS // 2):
        table.call("UpdateItem", ADD_ONE, t0 + i * 0.001)
    for i in range(WRITE_UNITS // 2):  # failed conditions cost their unit too
        with pytest.raises(Exception, match="ConditionalCheckFailed"):
            table.call("UpdateItem", FAILS, t0 + 0.5 + i * 0.0001)
    with pytest.raises(Exception, match="ThrottlingException") as info:
        table.call("UpdateItem", ADD_ONE, t0 + 0.9)
    assert info.value.status == 400  # type: ignore[attr-defined]
    table.call("GetItem", {"TableName": "t", "Key": {"pk": {"S": "other"}}}, t0 + 0.9)
    table.call("UpdateItem", {**ADD_ONE, "Key": {"pk": {"S": "other"}}}, t0 + 0.9)  # own budget
    assert table.items["hot"]["c"] == ("N", 500)  # the throttled write did nothing
    table.call("UpdateItem", ADD_ONE, t0 + 1.0001)  # the first writes left the window
    stats = table.stats["hot"]
    assert (stats.writes.peak, stats.requests.peak, stats.throttled) == (1000, 1001, 1)
    assert (table.peak_writes(), table.peak_requests(), table.throttled()) == (1000, 1001, 1)


class _Recording(Table):
    def call(self, operation: str, payload: dict[str, Any], now: float) -> dict[str, Any]:
        self.applied_at = now
        return super().call(operation, payload, now)


def test_a_call_is_a_round_trip_of_virtual_time_applied_at_its_midpoint() -> None:
    sim, table = Sim(), _Recording("t")
    trips: list[tuple[float, float, float]] = []

    def body() -> None:
        client = Client(table, sim, random.Random(7))
        for _ in range(50):
            sent = sim.now()
            client.call("UpdateItem", ADD_ONE)
            trips.append((sent, table.applied_at, sim.now()))
        with pytest.raises(Exception, match="ConditionalCheckFailed"):
            client.call("UpdateItem", FAILS)
        assert (client.requests, client.writes) == (51, 51)
        client.call("GetItem", {"TableName": "t", "Key": {"pk": {"S": "hot"}}})
        assert (client.requests, client.writes) == (52, 51)

    sim.spawn(body, EPOCH)
    sim.run()
    durations = [done - sent for sent, _, done in trips]
    assert all(LATENCY[0] <= d <= LATENCY[1] for d in durations)
    assert max(durations) - min(durations) > 0.004  # drawn, not constant
    for sent, applied, done in trips:
        assert applied - sent == pytest.approx(done - applied, abs=1e-6)


class _At:
    def __init__(self, table: Table) -> None:
        self.table = table

    def call(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self.table.call(operation, payload, EPOCH)


def test_the_boto3_face_answers_and_raises_as_botocore_does() -> None:
    client = Boto3Client(_At(Table("t")))
    out = client.update_item(**{**ADD_ONE, "ReturnValues": "UPDATED_NEW"})
    assert out == {"Attributes": {"c": {"N": "1"}}, "ResponseMetadata": {"HTTPStatusCode": 200}}
    with pytest.raises(ModelClientError) as info:
        client.update_item(**FAILS, ReturnValuesOnConditionCheckFailure="ALL_OLD")
    error = info.value
    assert error.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert error.response["Item"] == {"pk": {"S": "hot"}, "c": {"N": "1"}}
    # botocore's own ClientError over the same parsed response says the same.
    oracle = ClientError(error.response, "UpdateItem")  # type: ignore[arg-type]
    assert str(error) == str(oracle)
    assert client.get_item(TableName="t", Key={"pk": {"S": "hot"}})["Item"]["c"] == {"N": "1"}
    client.put_item(TableName="t", Item={"pk": {"S": "p"}})
    assert client.delete_item(TableName="t", Key={"pk": {"S": "p"}}, ReturnValues="ALL_OLD") == {
        "Attributes": {"pk": {"S": "p"}},
        "ResponseMetadata": {"HTTPStatusCode": 200},
    }


HOST, PORT, REGION, USER = "db.c0ffee.us-east-1.rds.amazonaws.com", 5432, "us-east-1", "app"


def _sign(key: str, secret: str, at: float) -> str:
    creds = Credentials(key, secret)
    when = datetime.fromtimestamp(at, timezone.utc)
    return generate_db_auth_token(HOST, PORT, USER, REGION, credentials=creds, now=when)


def test_rds_refuses_new_logins_as_devstacks_verifier_does() -> None:
    """The same logins at the same auth instants, through the model and through devstack's
    verifier (an independent implementation of RDS's rule): the same verdicts."""
    rng = random.Random(3)
    keys = {f"ASIA{i:016d}": f"secret{i}" for i in range(40)}
    sim = Sim()
    rds = Rds(sim, rate=10, user=USER)
    logins: list[tuple[float, str]] = []  # (auth instant, token)
    verdicts: dict[int, bool] = {}

    def login(i: int, token: str) -> None:
        try:
            rds.connect(token, random.Random(i))
            verdicts[i] = True
        except AuthError:
            verdicts[i] = False

    for i in range(300):
        at = EPOCH + rng.uniform(0.0, 4.0)
        key = rng.choice(list(keys))
        # One login in four presents an earlier token again (accepted or refused back then).
        token = rng.choice(logins)[1] if logins and i % 4 == 0 else _sign(key, keys[key], at)
        logins.append((at + random.Random(i).uniform(*HANDSHAKE), token))  # its auth instant
        sim.spawn(lambda i=i, token=token: login(i, token), at)
    sim.run()
    clock = [0.0]
    verifier = Verifier(
        lambda key: KeyInfo(keys[key], None, "arn:aws:iam::123456789012:user/u"),
        clock=lambda: clock[0],
    )
    verifier.register_server("db", HOST, PORT, REGION, iam_rate=10)
    expected = {}
    for i in sorted(range(len(logins)), key=lambda i: logins[i][0]):
        clock[0] = logins[i][0]
        verdict = verifier.verify("db", USER, logins[i][1])
        assert verdict.reason in ("ok", "throttled")
        expected[i] = verdict.ok
    assert verdicts == expected
    assert 0 < rds.refused == sum(not ok for ok in expected.values())
    assert rds.accepted.peak == 10
    assert rds.arrivals.total == rds.accepted.total + rds.refused
