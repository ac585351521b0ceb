"""iamdb's stdlib signer against botocore as the oracle: identical tokens, byte for byte.

RDS tokens are compared with the ``rds`` client's ``generate_db_auth_token``, DSQL tokens with
the ``dsql`` client's ``generate_db_connect_auth_token`` / ``generate_db_connect_admin_auth_token``.
botocore reads the signing instant from ``botocore.auth.get_current_datetime``; each
comparison freezes it at the instant handed to iamdb. The botocore clients are created
once per module (explicit credentials, no network).
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl

import boto3
import botocore.auth
import pytest
from botocore.credentials import ReadOnlyCredentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iamdb._aws import sigv4 as _sigv4
from iamdb._aws.credentials import Credentials
from iamdb._aws.signer import (
    DSQL_MAX_EXPIRES_SECONDS,
    TOKEN_LIFETIME_SECONDS,
    generate_db_auth_token,
    generate_dsql_auth_token,
)
from iamdb.errors import ConfigError

ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
# Shaped like a Lambda session token: long, base64 with '/', '+' and '='.
SESSION_TOKEN = "IQoJb3JpZ2luX2VjE//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+" + "Ab9/+x=" * 120 + "=="
INSTANT = datetime(2026, 11, 3, 12, 34, 56, 789, tzinfo=timezone.utc)
HOST = "mydb.c9akciq32.us-east-1.rds.amazonaws.com"


def _client(token: str | None, service: str = "rds") -> Any:
    return boto3.client(
        service,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        aws_session_token=token,
    )


@pytest.fixture(scope="module")
def clients() -> Iterator[dict[bool, Any]]:
    """botocore rds clients keyed by "has a session token"."""
    yield {False: _client(None), True: _client(SESSION_TOKEN)}


@pytest.fixture(scope="module")
def dsql_clients() -> Iterator[dict[bool, Any]]:
    """botocore dsql clients keyed by "has a session token"."""
    yield {False: _client(None, "dsql"), True: _client(SESSION_TOKEN, "dsql")}


def _frozen(now: datetime, sign: Any) -> str:
    """``sign()`` with botocore's clock frozen at ``now``."""
    frozen = now.astimezone(timezone.utc).replace(tzinfo=None)
    original = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda *args, **kwargs: frozen
    try:
        return str(sign())
    finally:
        botocore.auth.get_current_datetime = original


def botocore_token(client: Any, host: str, port: int, user: str, region: str, now: datetime) -> str:
    """botocore's RDS token with its clock frozen at ``now``."""
    return _frozen(now, lambda: client.generate_db_auth_token(host, port, user, region))


def botocore_dsql_token(
    client: Any, host: str, region: str, admin: bool, expires: int, now: datetime
) -> str:
    """botocore's DSQL token (admin: ``generate_db_connect_admin_auth_token``) at ``now``."""
    sign = (
        client.generate_db_connect_admin_auth_token
        if admin
        else client.generate_db_connect_auth_token
    )
    return _frozen(now, lambda: sign(host, region, ExpiresIn=expires))


def iamdb_token(host: str, port: int, user: str, region: str, now: datetime, session: bool) -> str:
    creds = Credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN if session else None)
    return generate_db_auth_token(host, port, user, region, credentials=creds, now=now)


def iamdb_dsql_token(
    host: str, region: str, admin: bool, expires: int, now: datetime, session: bool
) -> str:
    creds = Credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN if session else None)
    return generate_dsql_auth_token(
        host, region, admin=admin, expires_in=expires, credentials=creds, now=now
    )


# --- explicit cases -------------------------------------------------------------------

EXPLICIT = [
    (HOST, 5432, "app", "us-east-1"),
    ("MyDB.C9AKCIQ32.US-EAST-1.RDS.AMAZONAWS.COM", 5432, "app", "us-east-1"),  # mixed case
    (HOST, 443, "app", "us-east-1"),  # botocore drops :443 from the signed host only
    (HOST, 1, "app", "us-east-1"),
    (HOST, 65535, "app", "us-east-1"),
    ("10.1.2.3", 3306, "app", "eu-west-1"),
    ("[::1]", 5432, "app", "us-east-1"),
    ("[2001:DB8::A:1]", 443, "app", "us-east-1"),
    ("[fe80::1%25ETH0]", 5432, "app", "us-east-1"),
    ("db.abc.rds.cn-north-1.amazonaws.com.cn", 3306, "app", "cn-north-1"),
    ("db.abc.us-gov-west-1.rds.amazonaws.com", 5432, "app", "us-gov-west-1"),
    ("db.abc.eu-central-1.rds.amazonaws.com", 5432, "app", "eu-central-1"),
    ("localhost", 5432, "app", "us-east-1"),
    ("under_score-host.example", 5432, "app", "us-east-1"),
    (HOST, 5432, "a+b@c.d", "us-east-1"),
    (HOST, 5432, "user with spaces", "us-east-1"),
    (HOST, 5432, "path/like=user&x=1", "us-east-1"),
    (HOST, 5432, "Ünïcödé-ユーザー-😀", "us-east-1"),
    (HOST, 5432, "~tilde_under-dash.dot", "us-east-1"),
    (HOST, 5432, "%41 already escaped?#", "us-east-1"),
    (HOST, 5432, "tab\tnewline\nnul\x00", "us-east-1"),
]


@pytest.mark.parametrize("session", [False, True], ids=["long-term", "session-token"])
@pytest.mark.parametrize(("host", "port", "user", "region"), EXPLICIT)
def test_explicit_cases_equal_botocore(
    clients: dict[bool, Any], host: str, port: int, user: str, region: str, session: bool
) -> None:
    expected = botocore_token(clients[session], host, port, user, region, INSTANT)
    assert iamdb_token(host, port, user, region, INSTANT, session) == expected


def test_token_shape() -> None:
    token = iamdb_token(HOST, 5432, "app", "us-east-1", INSTANT, session=True)
    assert token.startswith(f"{HOST}:5432/?Action=connect&DBUser=app&")
    params = dict(parse_qsl(token.split("?", 1)[1]))
    assert params["X-Amz-Expires"] == str(TOKEN_LIFETIME_SECONDS) == "900"
    assert params["X-Amz-Date"] == "20261103T123456Z"
    assert params["X-Amz-Credential"] == f"{ACCESS_KEY}/20261103/us-east-1/rds-db/aws4_request"
    assert params["X-Amz-Security-Token"] == SESSION_TOKEN
    assert list(params)[-1] == "X-Amz-Signature"


def test_other_timezones_and_day_boundaries(clients: dict[bool, Any]) -> None:
    plus_ten = timezone(timedelta(hours=10))
    for now in (
        datetime(2026, 11, 4, 9, 59, 59, tzinfo=plus_ten),  # 23:59:59 UTC the day before
        datetime(2026, 11, 4, 10, 0, 0, tzinfo=plus_ten),
        datetime(2024, 2, 29, 0, 0, 0, tzinfo=timezone.utc),
    ):
        expected = botocore_token(clients[False], HOST, 5432, "app", "ap-southeast-2", now)
        assert iamdb_token(HOST, 5432, "app", "ap-southeast-2", now, False) == expected


@pytest.mark.parametrize(
    ("access_key", "secret_key", "token"),
    [
        ("AKIAIOSFODNN7EXAMPLE", "secret", None),
        ("ASIAIOSFODNN7EXAMPLE", "s" * 40, "short"),
        ("ASIAIOSFODNN7EXAMPLE", "ünïcödé secret", "tok/with+sym=bols"),
    ],
)
def test_other_credentials(access_key: str, secret_key: str, token: str | None) -> None:
    client = boto3.client(
        "rds",
        region_name="eu-west-3",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        aws_session_token=token,
    )
    expected = botocore_token(client, HOST, 5432, "app", "eu-west-3", INSTANT)
    # botocore's own credential objects are accepted as they are.
    creds = ReadOnlyCredentials(access_key, secret_key, token)
    actual = generate_db_auth_token(HOST, 5432, "app", "eu-west-3", credentials=creds, now=INSTANT)
    assert actual == expected


# --- generated cases ------------------------------------------------------------------

_LABEL = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=12)
_SUFFIXES = st.sampled_from(
    [
        "",
        ".rds.amazonaws.com",
        ".us-east-1.rds.amazonaws.com",
        ".rds.cn-northwest-1.amazonaws.com.cn",
        ".us-gov-east-1.rds.amazonaws.com",
        ".proxy-abc.eu-west-1.rds.amazonaws.com",
    ]
)
_DNS = st.builds(
    lambda labels, suffix: ".".join(labels) + suffix,
    st.lists(_LABEL, min_size=1, max_size=4),
    _SUFFIXES,
)
_IPV4 = st.ip_addresses(v=4).map(str)
_IPV6 = st.tuples(st.ip_addresses(v=6), st.sampled_from(["c", "e", "u"])).map(
    lambda t: (
        "[" + {"c": t[0].compressed, "e": t[0].exploded, "u": t[0].compressed.upper()}[t[1]] + "]"
    )
)
HOSTNAMES = st.one_of(_DNS, _IPV4, _IPV6)
PORTS = st.one_of(st.sampled_from([443, 5432, 3306, 1, 65535]), st.integers(1, 65535))
USERS = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40),
    st.text(string.ascii_letters + string.digits + "+@._-/=& ~%", min_size=1, max_size=40),
)
REGIONS = st.one_of(
    st.sampled_from(["us-east-1", "eu-west-1", "cn-north-1", "us-gov-west-1", "us-iso-east-1"]),
    st.from_regex(r"\A[a-z]{2}(-gov|-iso|-isob)?-[a-z]{4,9}-[1-9]\Z"),
)
INSTANTS = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2099, 12, 31),
    timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-7, minutes=-30))]),
)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    host=HOSTNAMES,
    port=PORTS,
    user=USERS,
    region=REGIONS,
    now=INSTANTS,
    session=st.booleans(),
)
def test_generated_cases_equal_botocore(
    clients: dict[bool, Any],
    host: str,
    port: int,
    user: str,
    region: str,
    now: datetime,
    session: bool,
) -> None:
    expected = botocore_token(clients[session], host, port, user, region, now)
    assert iamdb_token(host, port, user, region, now, session) == expected


# --- arguments ------------------------------------------------------------------------

CREDS = Credentials(ACCESS_KEY, SECRET_KEY)


@pytest.mark.parametrize(
    ("kwargs", "variable"),
    [
        ({"hostname": ""}, "hostname"),
        ({"hostname": "host:5432"}, "hostname"),
        ({"hostname": "::1"}, "hostname"),  # IPv6 needs brackets, as in a URL
        ({"hostname": "[1.2.3.4]"}, "hostname"),
        ({"hostname": "[not-ipv6]"}, "hostname"),
        ({"hostname": "a/b"}, "hostname"),
        ({"hostname": "user@host"}, "hostname"),
        ({"hostname": " host"}, "hostname"),
        ({"port": 0}, "port"),
        ({"port": 65536}, "port"),
        ({"port": -1}, "port"),
        ({"port": True}, "port"),
        ({"port": "5432"}, "port"),
        ({"username": ""}, "username"),
        ({"username": "\ud800"}, "username"),
        ({"region": ""}, "region"),
        ({"region": "us east 1"}, "region"),
        ({"region": "-us-east-1"}, "region"),
        ({"region": "us-east-1-"}, "region"),
        ({"region": "a" * 64}, "region"),
        ({"region": "us_east_1"}, "region"),
        ({"now": datetime(2026, 1, 1)}, "now"),  # naive
        ({"credentials": object()}, "credentials"),
        ({"credentials": ReadOnlyCredentials(ACCESS_KEY, "", None)}, "credentials"),
        ({"credentials": Credentials(ACCESS_KEY, "\ud800" + SECRET_KEY)}, "credentials"),
    ],
)
def test_bad_arguments_raise_config_error_naming_them(
    kwargs: dict[str, Any], variable: str
) -> None:
    args: dict[str, Any] = {
        "hostname": HOST,
        "port": 5432,
        "username": "app",
        "region": "us-east-1",
        "credentials": CREDS,
        "now": INSTANT,
    }
    args.update(kwargs)
    with pytest.raises(ConfigError) as info:
        generate_db_auth_token(**args)
    assert info.value.variable == variable
    assert_keeps_no_secret(info.value)


def assert_keeps_no_secret(error: BaseException) -> None:
    """Neither the error nor an exception it keeps alive (cause, context) holds the secret."""
    current: BaseException | None = error
    while current is not None:
        assert SECRET_KEY not in repr(current) and SECRET_KEY not in str(current)
        current = current.__cause__ or current.__context__


def test_default_credentials_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT00001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    token = generate_db_auth_token(HOST, 5432, "app", "us-east-1", now=INSTANT)
    params = dict(parse_qsl(token.split("?", 1)[1]))
    assert params["X-Amz-Credential"].startswith("AKIAENVIRONMENT00001/")
    assert params["X-Amz-Security-Token"] == SESSION_TOKEN


def test_now_defaults_to_the_current_utc_second() -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0)
    token = generate_db_auth_token(HOST, 5432, "app", "us-east-1", credentials=CREDS)
    after = datetime.now(timezone.utc)
    stamp = dict(parse_qsl(token.split("?", 1)[1]))["X-Amz-Date"]
    signed = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    assert before <= signed <= after


def test_signing_key_cache_stays_bounded() -> None:
    for i in range(3 * _sigv4._KEY_CACHE_MAX):
        generate_db_auth_token(HOST, 5432, "app", f"xx-test-{i}", credentials=CREDS, now=INSTANT)
        assert len(_sigv4._signing_keys) <= _sigv4._KEY_CACHE_MAX


# --- Aurora DSQL ------------------------------------------------------------------------

DSQL_HOST = "iamdbdevstack0000000000000.dsql.us-east-1.on.aws"

DSQL_EXPLICIT = [
    (DSQL_HOST, "us-east-1", 900),
    ("abcdefghijklmnopqrstuvwxyz.dsql.eu-west-1.on.aws", "eu-west-1", 900),
    ("ABCDEFGHIJKLMNOPQRSTUVWXYZ.DSQL.US-EAST-2.ON.AWS", "us-east-2", 900),  # mixed case
    ("a0b1c2d3e4f5g6h7i8j9k0l1m2.dsql.ap-northeast-1.on.aws", "ap-northeast-1", 3600),
    (DSQL_HOST, "us-east-1", 1),
    (DSQL_HOST, "us-east-1", 59),
    (DSQL_HOST, "us-east-1", DSQL_MAX_EXPIRES_SECONDS),
    (DSQL_HOST, "us-west-2", 900),  # a region that does not match the name: signed as asked
    ("dsql-cname.example.com", "us-east-1", 900),
    ("10.0.0.1", "us-east-1", 900),
    ("[2001:DB8::A:1]", "us-east-1", 900),
    ("[fe80::1%25ETH0]", "us-east-1", 900),
    ("localhost", "us-east-1", 43200),
]


@pytest.mark.parametrize("session", [False, True], ids=["long-term", "session-token"])
@pytest.mark.parametrize("admin", [False, True], ids=["DbConnect", "DbConnectAdmin"])
@pytest.mark.parametrize(("host", "region", "expires"), DSQL_EXPLICIT)
def test_dsql_explicit_cases_equal_botocore(
    dsql_clients: dict[bool, Any], host: str, region: str, expires: int, admin: bool, session: bool
) -> None:
    expected = botocore_dsql_token(dsql_clients[session], host, region, admin, expires, INSTANT)
    assert iamdb_dsql_token(host, region, admin, expires, INSTANT, session) == expected


def test_dsql_token_shape() -> None:
    token = iamdb_dsql_token(DSQL_HOST, "us-east-1", True, 3600, INSTANT, session=True)
    assert token.startswith(f"{DSQL_HOST}/?Action=DbConnectAdmin&X-Amz-Algorithm=")
    params = dict(parse_qsl(token.split("?", 1)[1]))
    assert "DBUser" not in params
    assert params["X-Amz-Expires"] == "3600"
    assert params["X-Amz-Credential"] == f"{ACCESS_KEY}/20261103/us-east-1/dsql/aws4_request"
    assert params["X-Amz-Security-Token"] == SESSION_TOKEN
    assert list(params)[-1] == "X-Amz-Signature"
    default = generate_dsql_auth_token(DSQL_HOST, "us-east-1", credentials=CREDS, now=INSTANT)
    assert default.startswith(f"{DSQL_HOST}/?Action=DbConnect&")
    assert dict(parse_qsl(default.split("?", 1)[1]))["X-Amz-Expires"] == "900"


def test_rds_and_dsql_signing_keys_are_not_confused(
    clients: dict[bool, Any], dsql_clients: dict[bool, Any]
) -> None:
    """Same secret, day and region: the derived keys differ by service (``rds-db``, ``dsql``)."""
    _sigv4._signing_keys.clear()
    now = datetime(2026, 11, 5, 1, 2, 3, tzinfo=timezone.utc)
    for _ in range(2):  # the second round signs with cached keys
        dsql = botocore_dsql_token(dsql_clients[False], DSQL_HOST, "us-east-1", False, 900, now)
        assert iamdb_dsql_token(DSQL_HOST, "us-east-1", False, 900, now, False) == dsql
        rds = botocore_token(clients[False], HOST, 5432, "app", "us-east-1", now)
        assert iamdb_token(HOST, 5432, "app", "us-east-1", now, False) == rds


_DSQL_HOSTNAMES = st.one_of(
    st.builds(
        lambda cluster, region: f"{cluster}.dsql.{region}.on.aws",
        st.text(string.ascii_lowercase + string.digits, min_size=26, max_size=26),
        st.sampled_from(["us-east-1", "us-east-2", "eu-west-1", "ap-northeast-1"]),
    ),
    HOSTNAMES,
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    host=_DSQL_HOSTNAMES,
    region=REGIONS,
    admin=st.booleans(),
    expires=st.one_of(
        st.sampled_from([1, 900, 3600, DSQL_MAX_EXPIRES_SECONDS]),
        st.integers(1, DSQL_MAX_EXPIRES_SECONDS),
    ),
    now=INSTANTS,
    session=st.booleans(),
)
def test_dsql_generated_cases_equal_botocore(
    dsql_clients: dict[bool, Any],
    host: str,
    region: str,
    admin: bool,
    expires: int,
    now: datetime,
    session: bool,
) -> None:
    expected = botocore_dsql_token(dsql_clients[session], host, region, admin, expires, now)
    assert iamdb_dsql_token(host, region, admin, expires, now, session) == expected


@pytest.mark.parametrize(
    ("kwargs", "variable"),
    [
        ({"hostname": ""}, "hostname"),
        ({"hostname": f"{DSQL_HOST}:5432"}, "hostname"),  # DSQL signs no port
        ({"hostname": "a/b"}, "hostname"),
        ({"hostname": "[not-ipv6]"}, "hostname"),
        ({"hostname": None}, "hostname"),
        ({"region": ""}, "region"),
        ({"region": "us east 1"}, "region"),
        ({"region": None}, "region"),
        ({"admin": 1}, "admin"),
        ({"admin": "yes"}, "admin"),
        ({"expires_in": 0}, "expires_in"),
        ({"expires_in": -1}, "expires_in"),
        ({"expires_in": DSQL_MAX_EXPIRES_SECONDS + 1}, "expires_in"),
        ({"expires_in": True}, "expires_in"),
        ({"expires_in": 900.0}, "expires_in"),
        ({"expires_in": "900"}, "expires_in"),
        ({"now": datetime(2026, 1, 1)}, "now"),  # naive
        ({"credentials": object()}, "credentials"),
        ({"credentials": ReadOnlyCredentials(ACCESS_KEY, "", None)}, "credentials"),
        ({"credentials": Credentials(ACCESS_KEY, "\ud800" + SECRET_KEY)}, "credentials"),
    ],
)
def test_dsql_bad_arguments_raise_config_error_naming_them(
    kwargs: dict[str, Any], variable: str
) -> None:
    args: dict[str, Any] = {
        "hostname": DSQL_HOST,
        "region": "us-east-1",
        "credentials": CREDS,
        "now": INSTANT,
    }
    args.update(kwargs)
    with pytest.raises(ConfigError) as info:
        generate_dsql_auth_token(**args)
    assert info.value.variable == variable
    assert_keeps_no_secret(info.value)


def test_dsql_default_credentials_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT00001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    token = generate_dsql_auth_token(DSQL_HOST, "us-east-1", admin=True, now=INSTANT)
    params = dict(parse_qsl(token.split("?", 1)[1]))
    assert params["X-Amz-Credential"].startswith("AKIAENVIRONMENT00001/")
    assert params["X-Amz-Security-Token"] == SESSION_TOKEN


def test_dsql_is_exported_lazily_from_iamdb() -> None:
    import iamdb

    assert iamdb.generate_dsql_auth_token is generate_dsql_auth_token
    assert "generate_dsql_auth_token" in iamdb.__all__
