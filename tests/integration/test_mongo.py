"""get_mongo() against devstack's MONGODB-AWS peer: real pymongo, real sockets, moto's STS.

The peer verifies every login as Atlas does (signed GetCallerIdentity forwarded to moto with
signature checks on, $external users, credential expiry), so these tests show what a real
cluster would accept or refuse.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest
from pymongo.errors import InvalidOperation, OperationFailure

import iamdb
from devstack.aws import (
    FUNCTION_ROLE_ARN,
    MONGO_ROLE_ARN,
    MONGO_UNLISTED_ROLE_ARN,
    MONGO_UNTRUSTED_ROLE_ARN,
)
from devstack.stack import Stack
from iamdb._core.runtime import Runtime
from iamdb._registry import Registry
from iamdb.errors import AuthError, ConfigError
from tests.fakes import FakeClock
from tests.integration.cli import run_iamdb

pytestmark = pytest.mark.integration
HOUR = 3600.0


@pytest.fixture
def peer(stack: Stack) -> Any:
    assert stack.mongo is not None
    return stack.mongo


@pytest.fixture
def mongo_env(stack_env: dict[str, str], peer: Any) -> Iterator[dict[str, str]]:
    peer.events.clear()
    yield stack_env
    peer.clock = time.time


@pytest.fixture
def fake_clock(mongo_env: dict[str, str], peer: Any, monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """One fake clock for iamdb, the peer's expiry check and the Expiration moto's STS issues."""
    import moto.sts.models

    clock = FakeClock(dt.datetime.now(dt.timezone.utc).timestamp())

    def moto_now() -> dt.datetime:
        return dt.datetime.fromtimestamp(clock(), dt.timezone.utc).replace(tzinfo=None)

    monkeypatch.setattr(moto.sts.models, "utcnow", moto_now)
    peer.clock = clock
    return clock


# -- logging in ------------------------------------------------------------------------------


def test_round_trip_as_the_role_in_external(mongo_env: dict[str, str], peer: Any) -> None:
    client = iamdb.get_mongo()
    db = client.get_default_database()
    assert db.name == "app"
    db.drop_collection("hits")
    db.hits.insert_many([{"path": f"/p{i}", "n": i} for i in range(5)])
    found = list(db.hits.find({"n": {"$gte": 3}}, {"_id": 0}).sort("n", -1))
    assert found == [{"path": "/p4", "n": 4}, {"path": "/p3", "n": 3}]
    assert db.hits.count_documents({"n": {"$lt": 3}}) == 3
    assert db.hits.update_one({"n": 1}, {"$set": {"seen": True}}).modified_count == 1
    assert db.hits.delete_many({"n": {"$in": [0, 1]}}).deleted_count == 2
    status = db.command("connectionStatus")
    assert status["authInfo"]["authenticatedUsers"] == [{"user": MONGO_ROLE_ARN, "db": "$external"}]
    assert [e.ok for e in peer.events] == [True]
    assert peer.events[0].user == MONGO_ROLE_ARN


def test_session_name_shows_the_function(mongo_env: dict[str, str], stack: Stack) -> None:
    from iamdb._registry import default

    iamdb.get_mongo()
    lease = default.mongo_handle().lease
    assert lease is not None
    info = stack.aws.lookup(lease.credentials.access_key)
    assert info is not None
    name = mongo_env["AWS_LAMBDA_FUNCTION_NAME"]
    assert re.fullmatch(
        rf"arn:aws:sts::\d{{12}}:assumed-role/iamdb-mongo-access/{name}-[0-9a-f]{{8}}", info.arn
    )


def test_client_is_reused_without_new_logins(mongo_env: dict[str, str], peer: Any) -> None:
    first = iamdb.get_mongo()
    first.admin.command("ping")
    for _ in range(20):
        assert iamdb.get_mongo() is first
        first.admin.command("ping")
    assert len(peer.events) == 1


def test_user_authentication_with_the_execution_role(
    mongo_env: dict[str, str], peer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IAMDB_MONGO_ROLE_ARN")
    peer.add_user(FUNCTION_ROLE_ARN)
    try:
        status = iamdb.get_mongo().admin.command("connectionStatus")
    finally:
        peer.remove_user(FUNCTION_ROLE_ARN)
    assert status["authInfo"]["authenticatedUsers"] == [
        {"user": FUNCTION_ROLE_ARN, "db": "$external"}
    ]
    assert peer.events[-1].access_key == mongo_env["AWS_ACCESS_KEY_ID"]


def test_named_instance(mongo_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    uri = mongo_env["IAMDB_MONGO_URI"].replace("/app?", "/reports?")
    monkeypatch.setenv("IAMDB_MONGO_REPORTS_URI", uri)
    monkeypatch.setenv("IAMDB_MONGO_REPORTS_ROLE_ARN", MONGO_ROLE_ARN)
    client = iamdb.get_mongo("reports")
    assert client.get_default_database().name == "reports"
    assert client is not iamdb.get_mongo()


# -- refusals -----------------------------------------------------------------------------------


def test_role_that_is_no_external_user_gives_auth_error(
    mongo_env: dict[str, str], peer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IAMDB_MONGO_ROLE_ARN", MONGO_UNLISTED_ROLE_ARN)
    with pytest.raises(AuthError) as info:
        iamdb.get_mongo()
    message = str(info.value)
    assert MONGO_UNLISTED_ROLE_ARN in message and "$external" in message
    assert peer.events[-1].reason == f"no $external user {MONGO_UNLISTED_ROLE_ARN}"


def test_trust_policy_that_does_not_admit_the_function(
    mongo_env: dict[str, str], peer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IAMDB_MONGO_ROLE_ARN", MONGO_UNTRUSTED_ROLE_ARN)
    with pytest.raises(AuthError) as info:
        iamdb.get_mongo()
    message = str(info.value)
    assert MONGO_UNTRUSTED_ROLE_ARN in message and "trust policy" in message
    assert "AccessDenied" in message
    assert not peer.events  # STS refused: the database was never asked


@pytest.mark.parametrize(
    ("arn", "error"),
    [
        ("arn:aws:iam::123456789012:rol/iamdb-mongo-access", ConfigError),
        ("arn:aws:iam::12345678901:role/iamdb-mongo-access", ConfigError),
        ("arn:aws:iam::123456789012:role/iamdb-mongo-acess", AuthError),  # no such role
        ("arn:aws:iam::123456789012:role/iamdb-mango-access", AuthError),  # not allowed
    ],
)
def test_role_arn_typo_fails_clearly(
    mongo_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, arn: str, error: type
) -> None:
    monkeypatch.setenv("IAMDB_MONGO_ROLE_ARN", arn)
    with pytest.raises(error) as info:
        iamdb.get_mongo()
    assert "IAMDB_MONGO_ROLE_ARN" in str(info.value) or arn in str(info.value)


def test_peer_rejects_commands_before_login_and_unknown_commands(stack: Stack, peer: Any) -> None:
    assert stack.tls is not None
    anonymous: Any = pymongo.MongoClient(
        "localhost", peer.port, tls=True, tlsCAFile=str(stack.tls.ca), serverSelectionTimeoutMS=3000
    )
    try:
        assert anonymous.admin.command("ping")["ok"] == 1.0
        with pytest.raises(OperationFailure) as info:
            anonymous.app.items.find_one()
        assert info.value.code == 13
        status = anonymous.admin.command("connectionStatus")
        assert status["authInfo"]["authenticatedUsers"] == []
    finally:
        anonymous.close()
    client = _client_for(stack, _assume(stack))
    try:
        with pytest.raises(OperationFailure) as info:
            client.admin.command("replSetGetStatus")
        assert info.value.code == 59 and info.value.details["codeName"] == "CommandNotFound"
    finally:
        client.close()


def test_peer_checks_the_signature_with_sts(stack: Stack, peer: Any) -> None:
    creds = _assume(stack)
    forged = {**creds, "SecretAccessKey": "x" * 40}
    client = _client_for(stack, forged)
    peer.events.clear()
    try:
        with pytest.raises(OperationFailure) as info:
            client.admin.command("ping")
        assert info.value.code == 18
    finally:
        client.close()
    assert peer.events[-1].reason == "STS refused: SignatureDoesNotMatch"


def test_peer_requires_the_nonce_and_cb_flag_headers_signed(stack: Stack, peer: Any) -> None:
    """A hand-made conversation whose signature leaves out the MongoDB headers is refused."""
    import bson
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    creds = _assume(stack)
    assert stack.tls is not None
    raw: Any = pymongo.MongoClient(
        "localhost", peer.port, tls=True, tlsCAFile=str(stack.tls.ca), maxPoolSize=1
    )
    peer.events.clear()
    try:
        ext = raw["$external"]
        first = ext.command(
            "saslStart",
            1,
            mechanism="MONGODB-AWS",
            payload=bson.encode({"r": os.urandom(32), "p": 110}),
        )
        server = bson.decode(first["payload"])
        request = AWSRequest(
            method="POST",
            url="/",
            data="Action=GetCallerIdentity&Version=2011-06-15",
            headers={"Host": server["h"], "Content-Type": "application/x-www-form-urlencoded"},
        )
        SigV4Auth(
            Credentials(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]),
            "sts",
            "us-east-1",
        ).add_auth(request)
        payload = {
            "a": request.headers["Authorization"],
            "d": request.headers["X-Amz-Date"],
            "t": creds["SessionToken"],
        }
        with pytest.raises(OperationFailure) as info:
            ext.command(
                "saslContinue",
                1,
                conversationId=first["conversationId"],
                payload=bson.encode(payload),
            )
        assert info.value.code == 18
    finally:
        raw.close()
    assert peer.events[-1].reason.startswith("headers not signed: x-mongodb-gs2-cb-flag")


def test_peer_refuses_expired_credentials(stack: Stack, peer: Any, fake_clock: FakeClock) -> None:
    creds = _assume(stack, seconds=900)
    fake_clock.advance(901)
    client = _client_for(stack, creds)
    try:
        with pytest.raises(OperationFailure) as info:
            client.admin.command("ping")
        assert info.value.code == 18
    finally:
        client.close()
    assert peer.events[-1].reason == "credentials expired"


# -- refresh -------------------------------------------------------------------------------------


def test_refresh_swaps_the_client_and_an_in_flight_cursor_completes(
    mongo_env: dict[str, str], peer: Any, fake_clock: FakeClock
) -> None:
    registry = Registry(runtime=Runtime(clock=fake_clock))
    try:
        old = registry.get_mongo()
        coll = old.app.inflight
        coll.drop()
        coll.insert_many([{"i": i} for i in range(10)])
        cursor = coll.find({}, batch_size=3).sort("i", 1)
        assert next(cursor)["i"] == 0  # first batch read on the old client's socket
        first_lease = registry.mongo_handle().lease
        assert first_lease is not None and first_lease.expires_at is not None

        fake_clock.advance(HOUR - 300 + 1)  # inside the 300 s refresh window
        new = registry.get_mongo()
        assert new is not old
        assert [d["i"] for d in cursor] == list(range(1, 10))  # getMore on the old client

        assert registry.get_mongo() is new  # this call closes the retired client
        with pytest.raises(InvalidOperation):
            old.app.inflight.find_one()
        lease = registry.mongo_handle().lease
        assert (
            lease is not None and lease.credentials.access_key != first_lease.credentials.access_key
        )
        assert new.app.inflight.count_documents({}) == 10
        assert [e.ok for e in peer.events] == [True, True]
        assert peer.events[1].access_key == lease.credentials.access_key
    finally:
        registry.reset()


def test_three_hours_of_invocations_with_one_hour_credentials(
    mongo_env: dict[str, str], peer: Any, fake_clock: FakeClock
) -> None:
    registry = Registry(runtime=Runtime(clock=fake_clock))
    keys: list[str] = []
    try:
        for minute in range(0, 181, 7):  # an invocation every 7 minutes for 3 hours
            seen = len(peer.events)
            client = registry.get_mongo()
            client.app.timeline.insert_one({"minute": minute})
            assert client.app.timeline.count_documents({"minute": minute}) == 1
            lease = registry.mongo_handle().lease
            assert lease is not None and lease.expires_at is not None
            assert lease.left(fake_clock()) > 300  # never handed out inside the window
            keys.append(lease.credentials.access_key)
            logins = list(peer.events)[seen:]
            # this invocation opened a socket, and it logged in with the current credentials
            assert logins and all(e.ok for e in logins)
            assert {e.access_key for e in logins} == {lease.credentials.access_key}
            _drop_sockets(client)  # as after a long idle: the next call needs a new socket
            fake_clock.advance(7 * 60)
    finally:
        registry.reset()
    events = list(peer.events)
    assert all(e.expires_at is not None and e.at < e.expires_at - 300 for e in events)
    assert len(set(keys)) == 4  # assumed at 0, then re-assumed about every 55 minutes


def _drop_sockets(client: Any) -> None:
    """Retire the client's pooled sockets (pymongo internals: there is no public API)."""
    for server in client._get_topology()._servers.values():
        server.pool.reset_without_pause()


# -- secrets -------------------------------------------------------------------------------------


def test_no_secret_in_messages_logs_or_reprs(
    mongo_env: dict[str, str], peer: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG, logger="iamdb")
    caplog.set_level(logging.DEBUG, logger="pymongo")
    registry = Registry()
    try:
        client = registry.get_mongo()
        client.app.secrets.insert_one({"x": 1})
        handle = registry.mongo_handle()
        lease = handle.lease
        assert lease is not None
        secrets = [
            lease.credentials.secret_key,
            lease.credentials.token or "",
            mongo_env["AWS_SECRET_ACCESS_KEY"],
            mongo_env["AWS_SESSION_TOKEN"],
        ]
        texts = [repr(client), repr(lease), repr(handle.cfg), str(client.options.pool_options)]
        monkeypatch.setenv("IAMDB_MONGO_ROLE_ARN", MONGO_UNLISTED_ROLE_ARN)
        iamdb.reset()
        with pytest.raises(AuthError) as info:
            iamdb.get_mongo()
        ours = [r for r in caplog.records if r.name.startswith(("iamdb", "pymongo"))]
        assert any(r.name == "iamdb" for r in ours) and any(
            r.name.startswith("pymongo") for r in ours
        )
        texts += [str(info.value), repr(info.value), *(r.getMessage() for r in ours)]
    finally:
        registry.reset()
    for secret in secrets:
        assert len(secret) > 10
        for text in texts:
            assert secret not in text


# -- admin helpers -------------------------------------------------------------------------------


def test_mongo_uri_command_prints_a_working_uri(mongo_env: dict[str, str], peer: Any) -> None:
    result = run_iamdb(mongo_env, "mongo-uri")
    assert result.returncode == 0, result.stderr
    assert "short-lived" in result.stderr and "expire" in result.stderr
    uri = result.stdout.strip()
    assert uri.startswith("mongodb://ASIA")
    client: Any = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        status = client.admin.command("connectionStatus")
    finally:
        client.close()
    assert status["authInfo"]["authenticatedUsers"][0]["user"] == MONGO_ROLE_ARN
    assert mongo_env["AWS_SECRET_ACCESS_KEY"] not in result.stderr


def test_compass_file_is_private_and_holds_the_uri(
    mongo_env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "compass.json"
    path.write_text("old")
    path.chmod(0o644)
    result = run_iamdb(mongo_env, "compass-file", str(path))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    document = json.loads(path.read_text())
    assert document["type"] == "Compass Connections"
    (connection,) = document["connections"]
    uri = connection["connectionOptions"]["connectionString"]
    assert "authMechanism=MONGODB-AWS" in uri and "AWS_SESSION_TOKEN" in uri
    assert result.stdout == ""


# -- helpers -------------------------------------------------------------------------------------


def _assume(stack: Stack, seconds: int = 3600) -> dict[str, Any]:
    sts = stack.aws.client("sts", stack.aws.function_credentials)
    got: dict[str, Any] = sts.assume_role(
        RoleArn=MONGO_ROLE_ARN, RoleSessionName="iamdb-test", DurationSeconds=seconds
    )["Credentials"]
    return got


def _client_for(stack: Stack, creds: dict[str, Any]) -> Any:
    assert stack.mongo is not None and stack.tls is not None
    return pymongo.MongoClient(
        "localhost",
        stack.mongo.port,
        tls=True,
        tlsCAFile=str(stack.tls.ca),
        username=creds["AccessKeyId"],
        password=creds["SecretAccessKey"],
        authMechanism="MONGODB-AWS",
        authSource="$external",
        authMechanismProperties={"AWS_SESSION_TOKEN": creds["SessionToken"]},
        serverSelectionTimeoutMS=5000,
    )
