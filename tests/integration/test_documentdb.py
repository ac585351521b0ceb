"""get_mongo() on Amazon DocumentDB: devstack's peer playing a DocumentDB 5.0 cluster.

The peer (``Stack.docdb``) answers as a DocumentDB primary does (replica set ``rs0``, its
member named by an instance endpoint), refuses retryable writes with DocumentDB's code 301,
verifies MONGODB-AWS logins with moto's STS, and presents a certificate of a CA of its own for
DocumentDB-style names only. Those names resolve to 127.0.0.1 through
:func:`devstack.mongo_docdb.loopback_resolver`, installed for each test (a process-local hosts
file: pymongo connects to, and checks the certificate against, the names themselves).
"""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pymongo
import pytest
from pymongo.errors import OperationFailure

import iamdb
from devstack.aws import MONGO_ROLE_ARN, MONGO_UNLISTED_ROLE_ARN
from devstack.mongo_docdb import loopback_resolver
from devstack.stack import DOCDB_ENDPOINT, DOCDB_INSTANCE, DOCDB_NAMES, Stack
from iamdb.errors import AuthError, ConnectError

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:You appear to be connected to a DocumentDB:UserWarning"),
]


@pytest.fixture
def docdb(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The DocumentDB peer, its names resolving to loopback, its login record cleared."""
    assert stack.docdb is not None
    monkeypatch.setattr(socket, "getaddrinfo", loopback_resolver(DOCDB_NAMES))
    stack.docdb.events.clear()
    yield stack.docdb


def _uri(stack: Stack, options: str = "", *, ca: bool = True) -> str:
    """The URI AWS's console gives (cluster endpoint, rs0, secondaryPreferred), plus
    ``options``; ``ca``: with the peer's CA as ``tlsCAFile``."""
    assert stack.docdb is not None and stack.docdb_tls is not None
    query = "replicaSet=rs0&readPreference=secondaryPreferred"
    if ca:
        query += "&tlsCAFile=" + urllib.parse.quote(str(stack.docdb_tls.ca), safe="/")
    return f"mongodb://{DOCDB_ENDPOINT}:{stack.docdb.port}/app?{query}{options}"


def test_login_end_to_end_through_the_instance_endpoint(
    stack_env: dict[str, str], stack: Stack, docdb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IAMDB_MONGO_URI", _uri(stack))
    client = iamdb.get_mongo()
    db = client.get_default_database()
    db.drop_collection("orders")
    db.orders.insert_one({"id": 1, "state": "new"})  # DocumentDB would refuse a txnNumber
    db.orders.insert_many([{"id": 2}, {"id": 3}])
    assert db.orders.update_one({"id": 1}, {"$set": {"state": "paid"}}).modified_count == 1
    assert db.orders.find_one({"id": 1}, {"_id": 0}) == {"id": 1, "state": "paid"}
    assert db.orders.delete_one({"id": 3}).deleted_count == 1
    assert db.orders.count_documents({}) == 2
    status = db.command("connectionStatus")
    assert status["authInfo"]["authenticatedUsers"] == [{"user": MONGO_ROLE_ARN, "db": "$external"}]
    # pymongo left the cluster endpoint for the member the primary named, under the same CA
    assert client.topology_description.topology_type_name == "ReplicaSetWithPrimary"
    assert client.primary == (DOCDB_INSTANCE, docdb.port)
    assert client.options.retry_writes is False
    assert [(e.ok, e.user) for e in docdb.events] == [(True, MONGO_ROLE_ARN)]


def test_default_ca_is_the_rds_bundle_not_the_system_store(
    stack_env: dict[str, str], stack: Stack, docdb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the peer's CA as the system's trust store, a plain client trusts the peer; iamdb,
    trusting the RDS bundle for a DocumentDB name, refuses it before any login."""
    assert stack.docdb_tls is not None
    monkeypatch.setenv("SSL_CERT_FILE", str(stack.docdb_tls.ca))
    plain: Any = pymongo.MongoClient(
        _uri(stack, ca=False), tls=True, directConnection=True, serverSelectionTimeoutMS=3000
    )
    try:
        assert plain.admin.command("ping")["ok"] == 1.0  # the system store trusts the peer
    finally:
        plain.close()
    monkeypatch.setenv("IAMDB_MONGO_URI", _uri(stack, "&serverSelectionTimeoutMS=1500", ca=False))
    with pytest.raises(ConnectError) as info:
        iamdb.get_mongo()
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    assert not docdb.events  # the login never reached the peer


def test_explicit_retry_writes_is_honoured_and_refused_as_documentdb_does(
    stack_env: dict[str, str], stack: Stack, docdb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IAMDB_MONGO_URI", _uri(stack, "&retryWrites=true"))
    client = iamdb.get_mongo()  # the login needs no write
    assert client.options.retry_writes is True
    orders = client.app.retried
    with pytest.raises(OperationFailure) as info:
        orders.insert_one({"id": 1})
    assert info.value.code == 301
    assert info.value.details is not None
    assert info.value.details["errmsg"] == "Retryable writes are not supported"
    assert "codeName" not in info.value.details  # DocumentDB names no code
    assert orders.update_many({}, {"$set": {"seen": True}}).acknowledged  # no txnNumber: fine


def test_direct_connection_to_the_cluster_endpoint(
    stack_env: dict[str, str], stack: Stack, docdb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a tunnel needs: one host, no member discovery; host names still verified."""
    uri = _uri(stack).replace("replicaSet=rs0&", "") + "&directConnection=true"
    monkeypatch.setenv("IAMDB_MONGO_URI", uri)
    client = iamdb.get_mongo()
    client.app.direct.insert_one({"id": 1})
    assert client.topology_description.topology_type_name == "Single"
    assert client.address == (DOCDB_ENDPOINT, docdb.port)


def test_a_role_that_is_no_external_user_is_told_how_documentdb_wants_it(
    stack_env: dict[str, str], stack: Stack, docdb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IAMDB_MONGO_URI", _uri(stack))
    monkeypatch.setenv("IAMDB_MONGO_ROLE_ARN", MONGO_UNLISTED_ROLE_ARN)
    with pytest.raises(AuthError) as info:
        iamdb.get_mongo()
    assert MONGO_UNLISTED_ROLE_ARN in str(info.value)
    assert "mechanisms: ['MONGODB-AWS']" in str(info.value)
    assert docdb.events[-1].reason == f"no $external user {MONGO_UNLISTED_ROLE_ARN}"
