"""devstack itself: its servers accept botocore-signed tokens and refuse bad ones, like RDS.

Tokens here come from botocore (the reference signer), never from iamdb, so these tests
check devstack independently of the code it is meant to test.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
import stat
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import botocore.auth
import pytest
from botocore.exceptions import ClientError

from devstack.aws import THROTTLE_TABLE, Credentials, rds_token
from devstack.stack import MYSQL_ENDPOINT, PG_ENDPOINT, Stack

pytestmark = pytest.mark.integration


def pg_connect(stack: Stack, password: str, user: str = "iamdb_app", **kw: Any) -> Any:
    import psycopg

    assert stack.pg is not None and stack.tls is not None
    options: dict[str, Any] = {
        "dbname": "app",
        "sslmode": "verify-full",
        "sslrootcert": str(stack.tls.ca),
        "connect_timeout": 10,
    }
    options.update(kw)
    return psycopg.connect(
        host="127.0.0.1", port=stack.pg.port, user=user, password=password, **options
    )


def mysql_connect(stack: Stack, password: str, user: str = "iamdb_app") -> Any:
    import pymysql

    assert stack.mysql is not None and stack.tls is not None
    return pymysql.connect(
        host="127.0.0.1",
        port=stack.mysql.port,
        user=user,
        database="app",
        password=password,
        ssl=ssl.create_default_context(cafile=str(stack.tls.ca)),
        connect_timeout=10,
        read_timeout=10,
    )


def function_creds(stack: Stack) -> Credentials:
    assert stack.aws.function_credentials is not None
    return stack.aws.function_credentials


def pg_token(stack: Stack, **kw: Any) -> str:
    assert stack.pg is not None
    args: dict[str, Any] = {
        "host": PG_ENDPOINT,
        "port": stack.pg.port,
        "user": "iamdb_app",
        "credentials": function_creds(stack),
    }
    args.update(kw)
    return rds_token(**args)


def new_events(stack: Stack, before: int) -> list[Any]:
    return list(stack.verifier.events)[before:]


def test_pg_accepts_a_botocore_token_over_verified_tls(stack: Stack) -> None:
    before = len(stack.verifier.events)
    with pg_connect(stack, pg_token(stack)) as conn:
        row = conn.execute(
            "SELECT current_user, s.ssl FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()"
        ).fetchone()
    assert row == ("iamdb_app", True)
    [event] = new_events(stack, before)
    assert (event.server, event.user, event.ok, event.reason) == ("pg", "iamdb_app", True, "ok")
    assert event.access_key == function_creds(stack).access_key


def test_pg_accepts_the_reporting_user_and_long_term_keys(stack: Stack) -> None:
    dev = stack.aws.developer_credentials
    assert dev is not None
    token = pg_token(stack, user="iamdb_reporting", credentials=dev)
    with pg_connect(stack, token, user="iamdb_reporting", dbname="reporting") as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("iamdb_reporting",)


def _expired_token(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> str:
    past = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(seconds=1300)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: past)
    try:
        return pg_token(stack)
    finally:
        monkeypatch.undo()


def _tampered(token: str) -> str:
    head, _, sig = token.rpartition("X-Amz-Signature=")
    return head + "X-Amz-Signature=" + ("0" if sig[0] != "0" else "1") + sig[1:]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("tampered", "bad signature"),
        ("expired", "expired"),
        ("wrong-user", "wrong user"),
        ("wrong-host", "wrong host"),
        ("wrong-region", "wrong region"),
    ],
)
def test_pg_refuses_bad_tokens_and_the_verifier_says_why(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, case: str, expected: str
) -> None:
    import psycopg

    user = "iamdb_app"
    if case == "tampered":
        token = _tampered(pg_token(stack))
    elif case == "expired":
        token = _expired_token(stack, monkeypatch)
    elif case == "wrong-user":
        token, user = pg_token(stack), "iamdb_reporting"
    elif case == "wrong-host":
        token = pg_token(stack, host=MYSQL_ENDPOINT)
    else:
        token = pg_token(stack, region="eu-west-1")
    before = len(stack.verifier.events)
    with pytest.raises(psycopg.OperationalError, match="authentication failed"):
        pg_connect(stack, token, user=user, dbname="app")
    [event] = new_events(stack, before)
    assert (event.server, event.user, event.ok, event.reason) == ("pg", user, False, expected)


def test_pg_refuses_plaintext_before_any_token_is_checked(stack: Stack) -> None:
    import psycopg

    before = len(stack.verifier.events)
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        pg_connect(stack, pg_token(stack), sslmode="disable")
    assert new_events(stack, before) == []


def test_pg_unknown_role_fails_like_rds_without_reaching_the_verifier(stack: Stack) -> None:
    import psycopg

    before = len(stack.verifier.events)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        pg_connect(stack, pg_token(stack, user="nobody"), user="nobody")
    assert new_events(stack, before) == []


def test_moto_lookup_returns_the_function_credentials(stack: Stack) -> None:
    creds = function_creds(stack)
    assert creds.access_key.startswith("ASIA")
    info = stack.aws.lookup(creds.access_key)
    assert info is not None
    assert (info.secret_key, info.session_token) == (creds.secret_key, creds.token)
    assert info.arn.endswith(":assumed-role/iamdb-example-function/iamdb-example-function")
    assert info.expires_at is not None
    dev = stack.aws.developer_credentials
    assert dev is not None and dev.access_key.startswith("AKIA")
    dev_info = stack.aws.lookup(dev.access_key)
    assert dev_info is not None and dev_info.secret_key == dev.secret_key
    assert dev_info.session_token is None and dev_info.arn.endswith(":user/iamdb-developer")
    assert stack.aws.lookup("ASIAUNKNOWN000000000") is None
    assert stack.aws.lookup("AKIAUNKNOWN000000000") is None


def test_moto_checks_signatures(stack: Stack) -> None:
    creds = function_creds(stack)
    identity = stack.aws.client("sts", creds).get_caller_identity()
    assert identity["Arn"].endswith(":assumed-role/iamdb-example-function/iamdb-example-function")
    wrong = Credentials(creds.access_key, "x" * 40, creds.token, None)
    with pytest.raises(ClientError) as info:
        stack.aws.client("sts", wrong).get_caller_identity()
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert info.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_dynamodb_updates_are_atomic_as_in_aws(stack: Stack) -> None:
    """Concurrent increments of one item lose nothing (moto alone lost ~2%: see aws.py)."""
    creds, key = function_creds(stack), {"pk": {"S": f"devstack-test#{uuid.uuid4()}"}}
    threads, each = 12, 30

    def increment(times: int) -> dict[str, Any]:
        client = stack.aws.client("dynamodb", creds)
        for _ in range(times):
            out = client.update_item(
                TableName=THROTTLE_TABLE,
                Key=key,
                UpdateExpression="SET #c = if_not_exists(#c, :zero) + :one",
                ExpressionAttributeNames={"#c": "count"},
                ExpressionAttributeValues={":zero": {"N": "0"}, ":one": {"N": "1"}},
                ReturnValues="ALL_NEW",
            )
        return dict(out["Attributes"])

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(increment, [each] * threads))
    assert increment(1)["count"] == {"N": str(threads * each + 1)}


def test_env_files(stack: Stack, tmp_path: Path) -> None:
    env_json, env_sh = stack.write_env_files(tmp_path / "ds")
    assert json.loads(env_json.read_text()) == {"Parameters": stack.env}
    for path in (env_json, env_sh):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    script = f"set -e; source {env_sh}; env -0"
    out = subprocess.run(
        ["bash", "-c", script], capture_output=True, check=True, timeout=30, env={}
    ).stdout
    sourced = dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)
    assert {k: sourced[k] for k in stack.env} == stack.env
    assert "IAMDB_PG_REGION" not in stack.env and "IAMDB_MYSQL_REGION" not in stack.env
    assert stack.env["IAMDB_PG_IAM_HOST"] == PG_ENDPOINT


@pytest.fixture
def mysql_stack(stack: Stack) -> Stack:
    if stack.mysql is None:
        pytest.skip("devstack.mariadb is not available")
    return stack


def test_mysql_accepts_a_botocore_token_over_verified_tls(mysql_stack: Stack) -> None:
    stack = mysql_stack
    assert stack.mysql is not None
    before = len(stack.verifier.events)
    token = rds_token(MYSQL_ENDPOINT, stack.mysql.port, "iamdb_app", function_creds(stack))
    conn = mysql_connect(stack, token)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1)")
            assert cur.fetchone() == ("iamdb_app",)
            cur.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
            assert cur.fetchone()[1].startswith("TLSv1.")
    finally:
        conn.close()
    [event] = new_events(stack, before)
    assert (event.server, event.user, event.ok) == ("mysql", "iamdb_app", True)


def test_mysql_refuses_a_token_for_another_endpoint(mysql_stack: Stack) -> None:
    import pymysql

    stack = mysql_stack
    assert stack.mysql is not None
    before = len(stack.verifier.events)
    token = rds_token(PG_ENDPOINT, stack.mysql.port, "iamdb_app", function_creds(stack))
    with pytest.raises(pymysql.err.OperationalError) as info:
        mysql_connect(stack, token)
    assert info.value.args[0] == 1045
    [event] = new_events(stack, before)
    assert (event.server, event.ok, event.reason) == ("mysql", False, "wrong host")


def _ldap_exchange(port: int, request: bytes) -> list[tuple[int, bytes]]:
    """Send raw LDAP bytes; return the reply's LDAPMessage fields."""
    import socket

    from devstack.ldap import parse_items, read_message

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        reply = read_message(sock.makefile("rb"))
    assert reply is not None and reply[0] == 0x30
    return parse_items(reply[1])


def test_ldap_bridge_protocol() -> None:
    from devstack.ldap import LdapBridge, parse_items, tlv

    seen: list[tuple[str, str]] = []

    def verify(user: str, token: str) -> tuple[bool, str]:
        seen.append((user, token))
        return token == "t" * 20_000, "nope"

    def bind(dn: str, password: str, auth_tag: int = 0x80) -> bytes:
        body = tlv(0x02, b"\x03") + tlv(0x04, dn.encode()) + tlv(auth_tag, password.encode())
        return tlv(0x30, tlv(0x02, b"\x07") + tlv(0x60, body))

    bridge = LdapBridge(verify)
    bridge.start()
    try:
        ok = _ldap_exchange(bridge.port, bind("cn=a,b=c,dc=iamdb", "t" * 20_000))
        assert ok[0] == (0x02, b"\x07") and ok[1][0] == 0x61
        assert parse_items(ok[1][1])[0] == (0x0A, b"\x00")  # success
        assert seen == [("a,b=c", "t" * 20_000)]  # DN taken verbatim, long-form lengths
        bad = _ldap_exchange(bridge.port, bind("cn=a,dc=iamdb", "wrong"))
        assert parse_items(bad[1][1])[:3] == [(0x0A, b"\x31"), (0x04, b""), (0x04, b"nope")]
        other_dn = _ldap_exchange(bridge.port, bind("uid=a,dc=example", "t" * 20_000))
        assert parse_items(other_dn[1][1])[0] == (0x0A, b"\x31")
        sasl = _ldap_exchange(bridge.port, bind("cn=a,dc=iamdb", "x", auth_tag=0xA3))
        assert parse_items(sasl[1][1])[0] == (0x0A, b"\x07")
        search = tlv(0x30, tlv(0x02, b"\x08") + tlv(0x63, b""))
        notice = _ldap_exchange(bridge.port, search)
        assert notice[0] == (0x02, b"\x00") and notice[1][0] == 0x78
        assert len(seen) == 2
    finally:
        bridge.stop()
