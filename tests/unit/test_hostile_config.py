"""Hostile values in every ``IAMDB_*`` variable: a ConfigError naming it, or a valid config.

Hypothesis puts one hostile value (empty, whitespace, huge, non-ASCII, NUL and control
characters, negative, out of range, floats for integers, conninfo and URI injection, path
traversal) into one variable on top of a valid environment. Reading the configuration may
then either raise :class:`~iamdb.errors.ConfigError` whose ``variable`` is the mutated one
(or one listed in ``DEPENDENT``), or return a configuration that passes the invariants below.
Any other exception fails, and so does any attempt to open a socket or resolve a name.
"""

from __future__ import annotations

import ipaddress
import math
import re
import socket
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pymongo import uri_parser

from iamdb.config import DEFAULT_CA_BUNDLE, SSLMODES, load_settings, load_sql_config
from iamdb.errors import ConfigError
from iamdb.mongo import MECHANISM, load_mongo_config

# pymongo warns about URI options it ignores; the checks below assert what it kept.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

RDS_ENDPOINT = "app.c9akciq32.us-east-1.rds.amazonaws.com"
SQL_SUFFIXES = (
    "HOST",
    "PORT",
    "USER",
    "DBNAME",
    "REGION",
    "IAM_HOST",
    "SSLMODE",
    "SSLROOTCERT",
    "CONNECT_TIMEOUT",
)
SQL_PREFIXES = ("IAMDB_PG_", "IAMDB_MYSQL_", "IAMDB_PG_REPORTING_")
SETTINGS_VARS = (
    "IAMDB_TOKEN_REFRESH_SECONDS",
    "IAMDB_HEALTHCHECK_IDLE_SECONDS",
    "IAMDB_LOG_LEVEL",
    "IAMDB_CONNECT_RATE",
    "IAMDB_DB_INSTANCE_CLASS",
    "IAMDB_THROTTLE_TABLE",
    "IAMDB_AUTH_RETRIES",
    "IAMDB_METRICS_NAMESPACE",
    "POWERTOOLS_METRICS_NAMESPACE",
)
MONGO_VARS = tuple(
    "IAMDB_MONGO_" + s
    for s in ("URI", "ROLE_ARN", "SESSION_SECONDS", "REFRESH_SECONDS", "EXTERNAL_ID")
)
SQL_VARS = tuple(p + s for p in SQL_PREFIXES for s in SQL_SUFFIXES)
ALL_VARS = SQL_VARS + SETTINGS_VARS + MONGO_VARS

# Documented dependencies: a change to the key may be reported on one of the values.
DEPENDENT: dict[str, set[str]] = {
    # Without IAMDB_*_REGION the region comes from the RDS endpoint name the token is signed
    # for (IAM_HOST, else HOST); for any other name it is AWS_REGION, absent in BASE_NO_REGION.
    **{p + "HOST": {p + "REGION"} for p in SQL_PREFIXES},
    **{p + "IAM_HOST": {p + "REGION"} for p in SQL_PREFIXES},
    # Assuming a role calls STS, which needs a region (absent in BASE_NO_REGION).
    "IAMDB_MONGO_ROLE_ARN": {"AWS_REGION"},
}


def _base(region: bool) -> dict[str, str]:
    env = {
        "IAMDB_MONGO_URI": "mongodb://db0.example.com:27017,db1.example.com/app?replicaSet=rs0",
        "IAMDB_MONGO_ROLE_ARN": "arn:aws:iam::123456789012:role/MongoAccess",
    }
    for prefix in SQL_PREFIXES:
        env.update(
            {
                prefix + "HOST": "proxy.internal.example.com",
                prefix + "PORT": "6543",
                prefix + "USER": "app",
                prefix + "DBNAME": "appdb",
                prefix + "IAM_HOST": RDS_ENDPOINT,
                prefix + "SSLROOTCERT": DEFAULT_CA_BUNDLE,
                prefix + "CONNECT_TIMEOUT": "4",
            }
        )
    if region:
        env.update(AWS_REGION="eu-west-1", AWS_DEFAULT_REGION="eu-west-1")
    return env


BASE = _base(region=True)
# No AWS_REGION: SQL regions come from the endpoint name, and Mongo logs in as the execution role.
BASE_NO_REGION = {k: v for k, v in _base(region=False).items() if k != "IAMDB_MONGO_ROLE_ARN"}

HOSTILE = [
    "",
    " ",
    "\t\n",
    "\x00",
    "app\x00",
    "a\x01b",
    "a\nb",
    "\x7f",
    "\u200b",
    "é",
    "用户",
    "😀",
    "²",
    "١٢",
    "-1",
    "0",
    "-0",
    "65536",
    "99999999999999999999",
    "9" * 5000,
    "1e309",
    "nan",
    "inf",
    "-inf",
    "5.5",
    "3.0",
    "0x10",
    "1_0",
    "true",
    "a" * 300,
    "x" * 100_000,
    "h sslmode=disable",
    "app sslmode=disable",
    "host=evil.example.com",
    "'; DROP TABLE users; --",
    "app' OR '1'='1",
    "a b=c",
    "127.0.0.1:1:2",
    "fe80::1%h sslmode=disable",
    "[::1]",
    "::1",
    "127.0.0.1",
    "evil.example.com:0",
    "evil.example.com:²",
    "evil.example.com:99999",
    f"{RDS_ENDPOINT}:5432",
    "mongodb://a@b/?authMechanism=PLAIN",
    "mongodb://user:pass@db.example.com/app",
    "mongodb://db.example.com/app?authMechanism=PLAIN",
    "mongodb://db.example.com/app?authMechanism=MONGODB-AWS&authmechanism=PLAIN",
    "mongodb://db.example.com/app?authSource=admin",
    "mongodb://db.example.com/app?tls=false",
    "mongodb://db.example.com/app?tls=",
    "mongodb://db.example.com/app?tls=TRUE",
    "mongodb://db.example.com/app?tls=true&ssl=false",
    "mongodb://db.example.com/app?ssl=false",
    "mongodb://db.example.com/app?tlsInsecure=true",
    "mongodb://db.example.com/app?appname=x;tlsInsecure=true",
    "mongodb://db.example.com/app?appname=x;tls=false",
    "mongodb://db.example.com/app?username=u",
    "mongodb://db.example.com/app?authMechanismProperties=AWS_SESSION_TOKEN:x",
    "mongodb://db.example.com/app?&&=",
    "mongodb://db.example.com:²/app",
    "mongodb://db.example.com:" + "9" * 5000 + "/app",
    "mongodb://[fe80::1%x y]/app",
    "mongodb+srv://a.example.com,b.example.com/app",
    "mongodb+srv://a.example.com:27017/app",
    "mongodb://db.example.com/../admin",
    "mongodb://db.example.com/a.b",
    "mongodb://db.example.com/",
    "mongodb://db.example.com",
    "mongodb://db.example.com/app#frag",
    "mongodb://localhost/app?tls=false",
    "postgresql://u:p@h/db",
    "arn:aws:iam::123456789012:role/../../admin",
    "arn:aws:iam::123456789012:role/ok\n",
    "arn:aws:iam::12345678901:role/short",
    "../../../../etc/passwd",
    "/etc/passwd",
    "/etc",
    "/nonexistent/ca.pem",
    "/dev/null",
    "C:\\Windows\\system32",
    "%2e%2e%2f",
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-full",
    "VERIFY-FULL",
    "disabled",
    "verify_identity",
    "debug",
    "TRACE",
    "us-east-1",
    "us-east-1 ",
    "US-EAST-1",
    "us-east-1\x00",
    "db.t2.micro",
    "iamdb-throttle",
    "ab",
    "a" * 256,
    "external-id-1",
]

values = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="ascii"), max_size=40),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.builds(lambda a, b: a + b, st.sampled_from(HOSTILE), st.sampled_from(HOSTILE)),
)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Reading configuration must never touch the network: any attempt fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network call while reading configuration: {args!r:.200}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield


def _load_all(env: Mapping[str, str]) -> list[object]:
    """Every configuration iamdb reads from ``env`` (what get_pg/get_mysql/get_mongo read)."""
    return [
        load_settings(env),
        load_sql_config("pg", None, env),
        load_sql_config("mysql", None, env),
        load_sql_config("pg", "reporting", env),
        load_mongo_config(None, env),
    ]


def _check_host(host: str) -> None:
    assert host and host == host.strip() and len(host) <= 253
    try:
        ipaddress.ip_address(host)
        assert "%" not in host
    except ValueError:
        assert re.fullmatch(r"[A-Za-z0-9.-]+", host), host


def _check_valid(configs: list[object]) -> None:
    settings_, *sqls, mongo = configs
    s: Any = settings_
    assert 1.0 <= s.token_refresh_seconds <= 900.0
    assert 0.0 <= s.healthcheck_idle_seconds <= 86400.0
    assert s.log_level in (None, "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    assert math.isfinite(s.connect_rate) and s.connect_rate > 0
    assert s.throttle_table is None or re.fullmatch(r"[A-Za-z0-9_.-]{3,255}", s.throttle_table)
    assert isinstance(s.auth_retries, int) and 0 <= s.auth_retries <= 10
    for c in sqls:
        cfg: Any = c
        _check_host(cfg.host)
        _check_host(cfg.signing_host.rstrip("."))
        for port in (cfg.port, cfg.signing_port):
            assert isinstance(port, int) and 1 <= port <= 65535
        for text in (cfg.user, cfg.dbname or "x"):
            assert text.isprintable() and text == text.strip() and len(text) <= 128
        assert re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d{1,2}", cfg.region), cfg.region
        assert cfg.sslmode in SSLMODES
        assert "\0" not in cfg.sslrootcert
        assert isinstance(cfg.connect_timeout, int) and 1 <= cfg.connect_timeout <= 300
    m: Any = mongo
    assert m.uri.startswith(("mongodb://", "mongodb+srv://")) and "@" not in m.uri.split("/")[2]
    assert m.options.get("authmechanism", MECHANISM) == MECHANISM
    assert m.options.get("authsource", "$external") == "$external"
    assert not {"username", "password", "authmechanismproperties"} & set(m.options)
    assert m.options.get("tlsinsecure", "false").lower() != "true"
    assert {m.options.get("tls", "true"), m.options.get("ssl", "true")} <= {"true", "false"}
    if not m.srv:  # what pymongo itself will read from the URI (mongodb+srv:// would use DNS)
        parsed = uri_parser.parse_uri(m.uri, warn=True)["options"]
        assert parsed.get("tlsInsecure") is not True
        assert parsed.get("authMechanism", MECHANISM) == MECHANISM
        if m.tls is False:
            assert parsed.get("tls") is not True
    if not all(h.startswith(("localhost", "127.", "[::1]")) for h in m.hosts):
        assert m.tls
    assert 900 <= m.session_seconds <= 43200
    assert 30 <= m.refresh_seconds <= m.session_seconds - 300


def _outcome(base: Mapping[str, str], var: str, value: str) -> None:
    env = {**base, var: value}
    try:
        configs = _load_all(env)
    except ConfigError as exc:
        allowed = {var} | DEPENDENT.get(var, set())
        assert exc.variable in allowed, f"{var}={value!r:.80} reported as {exc.variable}: {exc}"
        return
    _check_valid(configs)


def test_base_environments_are_valid() -> None:
    _check_valid(_load_all(BASE))
    _check_valid(_load_all(BASE_NO_REGION))


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(var=st.sampled_from(ALL_VARS), value=values)
@example(var="IAMDB_MONGO_URI", value="mongodb://db.example.com/app?appname=x;tlsInsecure=true")
@example(var="IAMDB_MONGO_URI", value="mongodb://db.example.com:²/app")
@example(var="IAMDB_MONGO_SESSION_SECONDS", value="²")
@example(var="IAMDB_PG_IAM_HOST", value=f"{RDS_ENDPOINT}:²")
@example(var="IAMDB_PG_HOST", value="fe80::1%h sslmode=disable")
def test_one_hostile_variable(var: str, value: str) -> None:
    _outcome(BASE, var, value)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(var=st.sampled_from(ALL_VARS), value=values)
def test_one_hostile_variable_without_aws_region(var: str, value: str) -> None:
    """Without AWS_REGION the region depends on the endpoint name: the documented exceptions."""
    _outcome(BASE_NO_REGION, var, value)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutations=st.dictionaries(st.sampled_from(ALL_VARS), values, min_size=2, max_size=6))
def test_several_hostile_variables(mutations: dict[str, str]) -> None:
    """Several at once: the error still names one of the variables changed (or a dependent)."""
    env = {**BASE, **mutations}
    try:
        configs = _load_all(env)
    except ConfigError as exc:
        allowed = set(mutations).union(*(DEPENDENT.get(v, set()) for v in mutations))
        assert exc.variable in allowed, f"{mutations!r:.200} reported as {exc.variable}: {exc}"
        return
    _check_valid(configs)


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("IAMDB_MONGO_URI", "mongodb://db.example.com/app?appname=x;tlsInsecure=true"),
        ("IAMDB_MONGO_URI", "mongodb://db.example.com:²/app"),
        ("IAMDB_MONGO_SESSION_SECONDS", "9" * 5000),
        ("IAMDB_PG_IAM_HOST", f"{RDS_ENDPOINT}:²"),
        ("IAMDB_PG_HOST", "fe80::1%h sslmode=disable"),
        ("IAMDB_MONGO_URI", "mongodb://[fe80::1%x y]/app"),
        ("IAMDB_MONGO_URI", "mongodb://db.example.com/app?tls="),
        ("IAMDB_MONGO_URI", "mongodb://db.example.com/app?tls=TRUE"),
        ("IAMDB_MONGO_URI", "mongodb://db.example.com/app?ssl=yes"),
    ],
)
def test_regressions_are_config_errors(var: str, value: str) -> None:
    """Values that once escaped validation (a raw ValueError, or a TLS check bypassed)."""
    with pytest.raises(ConfigError) as info:
        _load_all({**BASE, var: value})
    assert info.value.variable == var
