"""Hostile values in every ``IAMDB_*`` variable: a ConfigError naming it, or a valid config.

Hypothesis puts one hostile value (empty, whitespace, huge, non-ASCII, NUL and control
characters, negative, out of range, floats for integers, conninfo and URI injection, path
traversal) into one variable on top of a valid environment. Reading the configuration may
then either raise :class:`~iamdb.errors.ConfigError` whose ``variable`` is the mutated one
(or one listed in ``DEPENDENT``), or return a configuration that passes the invariants below.
Any other exception fails, and so does any attempt to open a socket or resolve a name.
A Mongo configuration that passes is also handed to a real ``pymongo.MongoClient`` (never
connected), which must accept it and verify TLS, or connect directly to one loopback host.
"""

from __future__ import annotations

import ipaddress
import math
import re
import socket
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pymongo import MongoClient

from iamdb._aws.credentials import Credentials
from iamdb._core.env import RDS_CA_BUNDLE, instance_prefix
from iamdb._core.settings import load_settings
from iamdb._mongo.client import client_options
from iamdb._mongo.config import MONGO_SUFFIXES, load_mongo_config
from iamdb._mongo.uri import MECHANISM
from iamdb._sql.config import SQL_SUFFIXES as ALL_SQL_SUFFIXES
from iamdb._sql.config import SSLMODES, load_sql_config
from iamdb.errors import ConfigError

# pymongo warns about URI options it ignores; the checks below assert what it kept.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

RDS_ENDPOINT = "app.c9akciq32.us-east-1.rds.amazonaws.com"
DSQL_ENDPOINT = "abcdefghijklmnopqrstuvwxyz.dsql.eu-central-1.on.aws"
CREDS = Credentials("ASIAROLEKEY", "role-secret", "role-token")
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
DSQL_SUFFIXES = (*SQL_SUFFIXES, "TOKEN_EXPIRES_SECONDS", "MAX_AGE_SECONDS", "CONNECT_RATE")
DSQL_PREFIXES = ("IAMDB_DSQL_", "IAMDB_DSQL_ORDERS_")
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
    "SSL_CERT_FILE",  # DSQL's default CA store
)
MONGO_VARS = tuple(
    "IAMDB_MONGO_" + s
    for s in ("URI", "ROLE_ARN", "SESSION_SECONDS", "REFRESH_SECONDS", "EXTERNAL_ID")
)
SQL_VARS = tuple(p + s for p in SQL_PREFIXES for s in SQL_SUFFIXES) + tuple(
    p + s for p in DSQL_PREFIXES for s in DSQL_SUFFIXES
)
ALL_VARS = SQL_VARS + SETTINGS_VARS + MONGO_VARS

# Documented dependencies: a change to the key may be reported on one of the values.
DEPENDENT: dict[str, set[str]] = {
    # Without IAMDB_*_REGION the region comes from the RDS endpoint name the token is signed
    # for (IAM_HOST, else HOST); for any other name it is AWS_REGION, absent in BASE_NO_REGION.
    # An IP address as HOST needs an IAM_HOST (tokens are signed for the endpoint name).
    **{p + "HOST": {p + "REGION", p + "IAM_HOST"} for p in SQL_PREFIXES + DSQL_PREFIXES},
    **{p + "IAM_HOST": {p + "REGION"} for p in SQL_PREFIXES + DSQL_PREFIXES},
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
                prefix + "SSLROOTCERT": RDS_CA_BUNDLE,
                prefix + "CONNECT_TIMEOUT": "4",
            }
        )
    # DSQL: the default instance on its defaults (user admin, database postgres, the region
    # from the endpoint name, the system's CA store), the named one set in full.
    env["IAMDB_DSQL_HOST"] = DSQL_ENDPOINT
    env.update(
        {
            "IAMDB_DSQL_ORDERS_HOST": "127.0.0.1",
            "IAMDB_DSQL_ORDERS_PORT": "15432",
            "IAMDB_DSQL_ORDERS_USER": "orders_app",
            "IAMDB_DSQL_ORDERS_IAM_HOST": DSQL_ENDPOINT,
            "IAMDB_DSQL_ORDERS_SSLROOTCERT": RDS_CA_BUNDLE,
            "IAMDB_DSQL_ORDERS_TOKEN_EXPIRES_SECONDS": "3600",
            "IAMDB_DSQL_ORDERS_MAX_AGE_SECONDS": "3000",
            "IAMDB_DSQL_ORDERS_CONNECT_RATE": "50",
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
    "10.0.0.5",
    "\u0665\u0664\u0663\u0662",
    "5432\u0660",
    "us-east-\u0661",
    "u\u017f-east-1",
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
    "mongodb://localhost:27017,127.0.0.1:27018/app?tls=false",
    "mongodb://localhost/app?tls=false&replicaSet=rs0",
    "mongodb://localhost/app?tls=false&directConnection=false",
    "mongodb://localhost/app?tls=false&loadBalanced=true",
    "mongodb://localhost/app?ssl=false&tlsCAFile=/etc/passwd",
    "mongodb://[::1]:27017/app?tls=false",
    "mongodb://127.0.0.2/app?tls=false",
    "mongodb://localhost./app?tls=false",
    "mongodb://db.example.com/app%24x",
    "mongodb://db.example.com/app?directConnection=true&loadBalanced=true",
    "mongodb://db.example.com,db2.example.com/app?directConnection=true",
    "mongodb://db.example.com/app?serverSelectionTimeoutMS=abc",
    "mongodb://db.example.com/app?serverSelectionTimeoutMS=-5",
    "mongodb://db.example.com/app?tlsAllowInvalidCertificates=true",
    "mongodb://db.example.com/app?TLSALLOWINVALIDCERTIFICATES=true",
    "mongodb://db.example.com/app?tlsAllowInvalidHostnames=true",
    "mongodb://db.example.com/app?tlsDisableOCSPEndpointCheck=true",
    "mongodb://db.example.com/app?tlsDisableCertificateRevocationCheck=true",
    "mongodb://db.example.com/app?ssl_cert_reqs=CERT_NONE",
    "mongodb://db.example.com/app?ssl_match_hostname=false",
    "mongodb://db.example.com/app?tlsCAFile=/nonexistent",
    "mongodb://db.example.com/app?tlsCAFile=/dev/null",
    "mongodb://db.example.com/app?tlsCAFile=/etc/passwd",
    "mongodb://db.example.com/app?tlsCertificateKeyFile=/etc/passwd",
    "mongodb://db.example.com/app?tlsCRLFile=/etc/passwd",
    "mongodb://db.example.com/app?minPoolSize=10",
    "mongodb://db.example.com/app?minPoolSize=10&maxPoolSize=2",
    "mongodb://db.example.com/app?appname=%00",
    "mongodb://db.example.com/app?unknownOption=1",
    "mongodb://db.example.com/app?w=1&W=2",
    "mongodb://db.example.com/app?w=1;tls=true&x=1",
    "mongodb+srv://cluster0.example.com/app?tls=false",
    "mongodb+srv://cluster0.example.com/app?directConnection=true",
    "mongodb+srv://cluster0.example.com/app?srvMaxHosts=abc",
    "mongodb://db.example.com/app?srvMaxHosts=2",
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
        load_sql_config("dsql", None, env),
        load_sql_config("dsql", "orders", env),
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
        assert not _is_ip(cfg.signing_host), "tokens are signed for an endpoint name, not an IP"
        for port in (cfg.port, cfg.signing_port):
            assert isinstance(port, int) and 1 <= port <= 65535
        for text in (cfg.user, cfg.dbname or "x"):
            assert text.isprintable() and text == text.strip() and len(text) <= 128
        # two to four letters first, as iamdb._core.env.REGION (eusc-de-east-1 is a region too)
        assert re.fullmatch(r"[a-z]{2,4}(-[a-z]+)+-[0-9]{1,2}", cfg.region, re.ASCII), cfg.region
        assert cfg.sslmode in SSLMODES
        assert "\0" not in cfg.sslrootcert
        assert isinstance(cfg.connect_timeout, int) and 1 <= cfg.connect_timeout <= 300
        if cfg.engine == "dsql":
            _check_dsql(cfg)
        else:
            assert (cfg.token_lifetime, cfg.max_age, cfg.connect_rate) == (900, None, None)
    _check_mongo(mongo)


def _check_dsql(cfg: Any) -> None:
    assert isinstance(cfg.token_lifetime, int) and 1 <= cfg.token_lifetime <= 604_800
    assert math.isfinite(cfg.max_age) and 1 <= cfg.max_age <= 3600
    assert math.isfinite(cfg.connect_rate) and cfg.connect_rate > 0
    assert Path(cfg.sslrootcert).is_file()  # a CA file exists, whatever SSL_CERT_FILE said
    endpoint = cfg.target
    assert endpoint.key == cfg.signing_host.lower() and endpoint.lifetime == cfg.token_lifetime
    assert endpoint.action == ("DbConnectAdmin" if cfg.user == "admin" else "DbConnect")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _check_mongo(m: Any) -> None:
    """What pymongo itself makes of an accepted configuration (a client never connected)."""
    assert m.uri.startswith(("mongodb://", "mongodb+srv://")) and "@" not in m.uri.split("/")[2]
    assert 900 <= m.session_seconds <= 43200
    assert 30 <= m.refresh_seconds <= m.session_seconds - 300
    if not m.tls:
        assert not m.srv and len(m.hosts) == 1
        assert m.hosts[0].rpartition(":")[0] in ("localhost", "[::1]") or m.hosts[0].startswith(
            "127."
        )
    if m.srv:
        return  # pymongo would resolve the name in DNS to go further
    client: MongoClient[Any] = MongoClient(
        m.uri, connect=False, **client_options(replace(m, client_name="orders-api"), CREDS)
    )
    try:
        options = client.options
        pool = options.pool_options
        context = pool._ssl_context
        if m.tls:
            assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
            assert context.check_hostname and not pool.tls_allow_invalid_hostnames
        else:  # plaintext: that one loopback host, never the members it may name
            assert context is None and options.direct_connection is True
        credentials = pool._credentials
        assert (credentials.mechanism, credentials.source) == (MECHANISM, "$external")
        assert credentials.username == CREDS.access_key
        assert options.server_selection_timeout > 0  # iamdb's 5 s or the URI's valid value
    finally:
        client.close()


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
        ("IAMDB_PG_PORT", "\u0665\u0664\u0663\u0662"),
        ("IAMDB_PG_CONNECT_TIMEOUT", "1_0"),
        ("IAMDB_PG_REGION", "us-east-\u0661"),
        ("IAMDB_PG_REGION", "u\u017f-east-1"),
        ("IAMDB_TOKEN_REFRESH_SECONDS", "\u0665\u0660\u0660"),
        ("IAMDB_PG_IAM_HOST", "10.0.0.5"),
        ("IAMDB_PG_SSLROOTCERT", "/dev/null"),
        ("IAMDB_PG_SSLROOTCERT", "/etc/passwd"),
        ("IAMDB_MYSQL_SSLROOTCERT", "/etc/passwd"),
        ("IAMDB_MONGO_URI", "mongodb://localhost:1,localhost:2/app?tls=false"),
        ("IAMDB_MONGO_URI", "mongodb://localhost/app?tls=false&replicaSet=rs0"),
        ("IAMDB_MONGO_URI", "mongodb://db.example.com/app%24x"),
        ("IAMDB_MONGO_URI", "mongodb://db.example.com/app?directConnection=true&loadBalanced=true"),
        ("IAMDB_MONGO_URI", "mongodb://db.example.com/app?serverSelectionTimeoutMS=abc"),
        ("IAMDB_MONGO_URI", "mongodb://db.example.com/app?TLSAllowInvalidCertificates=true"),
        ("IAMDB_MONGO_URI", "mongodb://db.example.com/app?tlsallowinvalidhostnames=true"),
        ("IAMDB_MONGO_URI", "mongodb://db.example.com/app?tlsDisableOCSPEndpointCheck=true"),
        ("IAMDB_MONGO_URI", "mongodb://db.example.com/app?SSL_CERT_REQS=CERT_NONE"),
        ("IAMDB_MONGO_URI", "mongodb://db.example.com/app?tlsCAFile=/nonexistent"),
        ("IAMDB_MONGO_URI", "mongodb://db.example.com/app?tlsCAFile=/dev/null"),
        ("IAMDB_MONGO_URI", "mongodb://db.example.com/app?tlsCAFile=/etc/passwd"),
        ("IAMDB_MONGO_URI", "mongodb://db.example.com/app?w=1&W=2"),
        ("IAMDB_DSQL_ORDERS_IAM_HOST", f"{DSQL_ENDPOINT}:5432"),  # DSQL signs no port
        ("IAMDB_DSQL_TOKEN_EXPIRES_SECONDS", "604801"),
        ("IAMDB_DSQL_TOKEN_EXPIRES_SECONDS", "900.5"),
        ("IAMDB_DSQL_MAX_AGE_SECONDS", "3601"),  # beyond DSQL's own limit: pointless
        ("IAMDB_DSQL_MAX_AGE_SECONDS", "nan"),
        ("IAMDB_DSQL_CONNECT_RATE", "0"),
        ("IAMDB_DSQL_ORDERS_CONNECT_RATE", "inf"),
        ("SSL_CERT_FILE", "/etc/passwd"),
        ("SSL_CERT_FILE", "/nonexistent/ca.pem"),
    ],
)
def test_regressions_are_config_errors(var: str, value: str) -> None:
    """Values that once escaped validation (a raw ValueError, or a TLS check bypassed)."""
    with pytest.raises(ConfigError) as info:
        _load_all({**BASE, var: value})
    assert info.value.variable == var


@pytest.mark.parametrize("host", ["::1", "127.0.0.1", "10.0.0.5", "2001:db8::7"])
@pytest.mark.parametrize("prefix", SQL_PREFIXES + DSQL_PREFIXES)
def test_an_ip_host_needs_an_iam_host(prefix: str, host: str) -> None:
    """Tokens are signed for the endpoint name: an IP HOST alone is the IAM_HOST's fault."""
    env = {k: v for k, v in BASE.items() if k != prefix + "IAM_HOST"}
    with pytest.raises(ConfigError) as info:
        _load_all({**env, prefix + "HOST": host})
    assert info.value.variable == prefix + "IAM_HOST"
    assert host in str(info.value)


def _ca_files(tmp_path: Any) -> dict[str, str]:
    empty = tmp_path / "empty.pem"
    empty.write_text("\n")
    der = tmp_path / "ca.der"
    der.write_bytes(ssl.PEM_cert_to_DER_cert(Path(RDS_CA_BUNDLE).read_text().split("\n\n")[0]))
    text = tmp_path / "notes.pem"
    text.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    return {
        "missing": str(tmp_path / "nope.pem"),
        "a directory": str(tmp_path),
        "empty": str(empty),
        "DER": str(der),
        "not a certificate": str(text),
    }


@pytest.mark.parametrize("prefix", SQL_PREFIXES + DSQL_PREFIXES)
def test_sql_ca_bundles_that_cannot_load_are_config_errors(prefix: str, tmp_path: Any) -> None:
    for what, path in _ca_files(tmp_path).items():
        with pytest.raises(ConfigError) as info:
            _load_all({**BASE, prefix + "SSLROOTCERT": path})
        assert info.value.variable == prefix + "SSLROOTCERT", what


def test_mongo_tls_files_that_cannot_load_are_config_errors(tmp_path: Any) -> None:
    for what, path in _ca_files(tmp_path).items():
        for option in ("tlsCAFile", "tlsCertificateKeyFile", "tlsCRLFile"):
            uri = f"mongodb://db.example.com/app?{option}={path}"
            with pytest.raises(ConfigError) as info:
                _load_all({**BASE, "IAMDB_MONGO_URI": uri})
            assert info.value.variable == "IAMDB_MONGO_URI", (what, option)


def test_a_ca_bundle_that_loads_is_accepted() -> None:
    env = {**BASE, "IAMDB_MONGO_URI": f"mongodb://db.example.com/app?tlsCAFile={RDS_CA_BUNDLE}"}
    configs = _load_all({**env, "IAMDB_MYSQL_SSLROOTCERT": RDS_CA_BUNDLE})
    _check_valid(configs)


def test_without_pymongo_mongo_configuration_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "pymongo", None)  # import pymongo now raises ImportError
    with pytest.raises(ConfigError) as info:
        load_mongo_config(None, BASE)
    assert info.value.variable == "IAMDB_MONGO_URI" and "iamdb[mongo]" in str(info.value)


# -- instance names --------------------------------------------------------------------------

names = st.one_of(
    st.sampled_from(["iam", "IAM", "Iam", "a_iam", "A_IAM", "iam_a", "connect", "reporting"]),
    st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,31}", fullmatch=True),
    st.text(max_size=40),
)


def _variables(engine: str, name: str | None) -> set[str]:
    """The variables an instance reads (the prefix is all a name decides)."""
    if engine == "mongo":
        return {instance_prefix("mongo", name, MONGO_SUFFIXES) + s for s in MONGO_SUFFIXES}
    if engine == "dsql":
        return {instance_prefix("dsql", name, ALL_SQL_SUFFIXES) + s for s in DSQL_SUFFIXES}
    return {instance_prefix("pg", name, ALL_SQL_SUFFIXES) + s for s in SQL_SUFFIXES}


@settings(max_examples=300, deadline=None)
@given(first=names, second=names, engine=st.sampled_from(["pg", "mongo", "dsql"]))
def test_instance_names_are_case_insensitive_and_never_share_a_variable(
    first: str, second: str, engine: str
) -> None:
    """A name is refused (variable 'name'), or it reads its own variables only: none of the
    default instance's, none of another name's; two spellings of a name are one instance."""
    try:
        mine = _variables(engine, first)
    except ConfigError as exc:
        assert exc.variable == "name"
        return
    assert mine == _variables(engine, first.upper()) == _variables(engine, first.lower())
    assert not mine & _variables(engine, None)
    try:
        theirs = _variables(engine, second)
    except ConfigError:
        return
    if first.lower() != second.lower():
        assert not mine & theirs


@pytest.mark.parametrize("name", ["iam", "IAM", "reports_iam", "A_Iam"])
def test_names_that_would_read_another_instances_variables_are_refused(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_sql_config("pg", name, BASE)
    assert info.value.variable == "name" and "IAM_HOST" in str(info.value)


def test_two_spellings_are_one_instance() -> None:
    upper, lower = (
        load_sql_config("pg", "REPORTING", BASE),
        load_sql_config("pg", "reporting", BASE),
    )
    assert upper == lower and upper.name == "reporting" and upper.label == "pg:reporting"
    assert (
        load_mongo_config(
            "Reports", {**BASE, "IAMDB_MONGO_REPORTS_URI": BASE["IAMDB_MONGO_URI"]}
        ).name
        == "reports"
    )
