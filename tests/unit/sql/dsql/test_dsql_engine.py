"""Aurora DSQL as iamdb's third SQL engine, on fakes: configuration, tokens, permits, refusals,
the maximum connection age and the transaction retry helper.

Tokens are compared with botocore's ``dsql`` client (the reference signer); connections are
socket pairs standing in for psycopg (real psycopg and devstack's DSQL endpoint are in
tests/integration/test_dsql.py).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import boto3
import botocore.auth
import psycopg
import pytest

from iamdb._aws.chain import CredentialResolver
from iamdb._aws.tokens import Token, TokenCache
from iamdb._cli import configured_instances, describe
from iamdb._core.backoff import DecorrelatedJitter
from iamdb._core.env import RDS_CA_BUNDLE
from iamdb._core.runtime import Runtime
from iamdb._sql import dsql as _dsql
from iamdb._sql.config import SqlConfig, load_sql_config
from iamdb._sql.limits import Limits
from iamdb._sql.managed import ManagedConnection
from iamdb._sql.pace import paced_rate
from iamdb._sql.pg import _classify, _params
from iamdb._sql.transactions import run_transaction
from iamdb.errors import AuthError, ConfigError, ConflictError, ConnectError, ThrottleError
from tests.fakes import FakeTime, RecordingProbe, SocketDriver, managed_connection, runtime

CLUSTER = "abcdefghijklmnopqrstuvwxyz.dsql.eu-central-1.on.aws"
KEY, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
ENV = {
    "IAMDB_DSQL_HOST": CLUSTER,
    "IAMDB_DSQL_SSLROOTCERT": RDS_CA_BUNDLE,  # any loadable bundle: no system store needed
    "AWS_ACCESS_KEY_ID": KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET,
}


def dsql(**kw: str) -> SqlConfig:
    return load_sql_config("dsql", None, {**ENV, **kw})


def rds(**kw: str) -> SqlConfig:
    base = {"IAMDB_PG_HOST": "db.x.us-east-1.rds.amazonaws.com", "IAMDB_PG_USER": "u"}
    return load_sql_config("pg", None, {**ENV, **base, **kw})


# -- configuration ----------------------------------------------------------------------------


def test_defaults_follow_dsql() -> None:
    cfg = dsql()
    assert (cfg.host, cfg.port, cfg.user, cfg.dbname) == (CLUSTER, 5432, "admin", "postgres")
    assert (cfg.signing_host, cfg.region, cfg.sslmode) == (CLUSTER, "eu-central-1", "verify-full")
    assert (cfg.token_lifetime, cfg.max_age, cfg.connect_rate) == (900, 3300.0, 100.0)
    assert cfg.label == "dsql" and cfg.prefix == "IAMDB_DSQL_"


def test_every_setting_and_a_named_instance() -> None:
    env = {
        **ENV,
        "IAMDB_DSQL_ORDERS_HOST": "127.0.0.1",
        "IAMDB_DSQL_ORDERS_PORT": "15432",
        "IAMDB_DSQL_ORDERS_IAM_HOST": CLUSTER.upper(),
        "IAMDB_DSQL_ORDERS_USER": "orders_app",
        "IAMDB_DSQL_ORDERS_DBNAME": "postgres",
        "IAMDB_DSQL_ORDERS_SSLROOTCERT": RDS_CA_BUNDLE,
        "IAMDB_DSQL_ORDERS_TOKEN_EXPIRES_SECONDS": "3600",
        "IAMDB_DSQL_ORDERS_MAX_AGE_SECONDS": "1800.5",
        "IAMDB_DSQL_ORDERS_CONNECT_RATE": "25",
        "IAMDB_DSQL_ORDERS_CONNECT_TIMEOUT": "3",
    }
    cfg = load_sql_config("dsql", "Orders", env)
    assert (cfg.host, cfg.port, cfg.user, cfg.label) == (
        "127.0.0.1",
        15432,
        "orders_app",
        "dsql:orders",
    )
    assert (cfg.signing_host, cfg.region) == (CLUSTER.upper(), "eu-central-1")
    assert (cfg.token_lifetime, cfg.max_age, cfg.connect_rate, cfg.connect_timeout) == (
        3600,
        1800.5,
        25.0,
        3,
    )


@pytest.mark.parametrize(
    ("host", "region"),
    [
        ("abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws", "us-east-1"),
        ("ABCDEFGHIJKLMNOPQRSTUVWXYZ.DSQL.AP-NORTHEAST-1.ON.AWS", "ap-northeast-1"),
        ("a0b1c2.dsql.us-gov-west-1.on.aws.", "us-gov-west-1"),
    ],
)
def test_region_comes_from_the_cluster_endpoint(host: str, region: str) -> None:
    assert dsql(IAMDB_DSQL_HOST=host).region == region
    assert _dsql.region_from_endpoint(host) == region


@pytest.mark.parametrize(
    "host", ["abc.dsql.on.aws", "abc.dsql.us-east-1.on.aws.evil.com", "abc.dsql-x.us-east-1.on.aws"]
)
def test_other_names_need_a_region(host: str) -> None:
    assert _dsql.region_from_endpoint(host) is None
    with pytest.raises(ConfigError) as info:
        dsql(IAMDB_DSQL_HOST=host)
    assert info.value.variable == "IAMDB_DSQL_REGION" and "DSQL" in str(info.value)
    assert dsql(IAMDB_DSQL_HOST=host, AWS_REGION="eu-west-3").region == "eu-west-3"


@pytest.mark.parametrize(
    ("extra", "variable"),
    [
        ({"IAMDB_DSQL_HOST": "127.0.0.1"}, "IAMDB_DSQL_IAM_HOST"),  # tokens name the endpoint
        ({"IAMDB_DSQL_IAM_HOST": f"{CLUSTER}:5432"}, "IAMDB_DSQL_IAM_HOST"),  # no port in them
        ({"IAMDB_DSQL_TOKEN_EXPIRES_SECONDS": "0"}, "IAMDB_DSQL_TOKEN_EXPIRES_SECONDS"),
        ({"IAMDB_DSQL_TOKEN_EXPIRES_SECONDS": "604801"}, "IAMDB_DSQL_TOKEN_EXPIRES_SECONDS"),
        ({"IAMDB_DSQL_MAX_AGE_SECONDS": "3601"}, "IAMDB_DSQL_MAX_AGE_SECONDS"),
        ({"IAMDB_DSQL_MAX_AGE_SECONDS": "0"}, "IAMDB_DSQL_MAX_AGE_SECONDS"),
        ({"IAMDB_DSQL_CONNECT_RATE": "0"}, "IAMDB_DSQL_CONNECT_RATE"),
        ({"IAMDB_DSQL_SSLMODE": "prefer"}, "IAMDB_DSQL_SSLMODE"),
    ],
)
def test_mistakes_name_their_variable(extra: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        dsql(**extra)
    assert info.value.variable == variable


def test_tls_defaults_to_the_system_ca_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = tmp_path / "ca-bundle.crt"
    store.write_text(Path(RDS_CA_BUNDLE).read_text())
    monkeypatch.setattr(_dsql, "SYSTEM_CA_FILES", (str(tmp_path / "absent.crt"), str(store)))
    env = {k: v for k, v in ENV.items() if k != "IAMDB_DSQL_SSLROOTCERT"}
    assert load_sql_config("dsql", None, env).sslrootcert == str(store)
    assert rds().sslrootcert == RDS_CA_BUNDLE  # RDS: the bundled RDS CAs
    chosen = tmp_path / "chosen.pem"
    chosen.write_text(store.read_text())
    assert load_sql_config("dsql", None, {**env, "SSL_CERT_FILE": str(chosen)}).sslrootcert == str(
        chosen
    )
    with pytest.raises(ConfigError) as info:  # a chosen file is checked as SSLROOTCERT is
        load_sql_config("dsql", None, {**env, "SSL_CERT_FILE": str(tmp_path / "absent.crt")})
    assert info.value.variable == "SSL_CERT_FILE"
    monkeypatch.setattr(_dsql, "SYSTEM_CA_FILES", (str(tmp_path / "absent.crt"),))
    with pytest.raises(ConfigError) as info:
        load_sql_config("dsql", None, env)
    assert info.value.variable == "IAMDB_DSQL_SSLROOTCERT" and "Amazon Root CA" in str(info.value)


def test_a_tunnel_sends_the_cluster_name_for_sni_and_the_certificate() -> None:
    until = (lambda: 0.0, 10.0)
    tunnel = _params(dsql(IAMDB_DSQL_HOST="127.0.0.1", IAMDB_DSQL_IAM_HOST=CLUSTER), until)
    assert (tunnel["host"], tunnel["hostaddr"], tunnel["dbname"]) == (
        CLUSTER,
        "127.0.0.1",
        "postgres",
    )
    direct = _params(dsql(), until)
    assert direct["host"] == CLUSTER and "hostaddr" not in direct
    rds_tunnel = _params(rds(IAMDB_PG_HOST="127.0.0.1", IAMDB_PG_IAM_HOST=CLUSTER), until)
    assert rds_tunnel["host"] == "127.0.0.1" and "hostaddr" not in rds_tunnel


def test_check_finds_dsql_instances_and_describes_them() -> None:
    environ = {
        "IAMDB_DSQL_HOST": CLUSTER,
        "IAMDB_DSQL_IAM_HOST": CLUSTER,  # the default instance's, not an instance "iam"
        "IAMDB_DSQL_ORDERS_HOST": CLUSTER,
        "IAMDB_PG_HOST": "h",
    }
    assert configured_instances(environ) == [("dsql", None), ("dsql", "orders"), ("pg", None)]
    text = "\n".join(describe(dsql(IAMDB_DSQL_USER="app")))
    assert "dsql:DbConnect, 900 s" in text and "max age: 3300 s" in text and "100/s" in text


# -- tokens -----------------------------------------------------------------------------------


def _botocore(admin: bool, expires: int, now: datetime) -> str:
    client = boto3.client(
        "dsql", region_name="eu-central-1", aws_access_key_id=KEY, aws_secret_access_key=SECRET
    )
    sign = (
        client.generate_db_connect_admin_auth_token
        if admin
        else client.generate_db_connect_auth_token
    )
    original = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda *a, **k: now.replace(tzinfo=None)
    try:
        return str(sign(CLUSTER, "eu-central-1", ExpiresIn=expires))
    finally:
        botocore.auth.get_current_datetime = original


@pytest.mark.parametrize(
    ("user", "expires", "admin"),
    [("admin", "", True), ("orders_app", "", False), ("admin", "3600", True), ("x", "60", False)],
)
def test_the_token_follows_the_role_and_equals_botocores(
    user: str, expires: str, admin: bool
) -> None:
    t = FakeTime(1_790_000_000.0)
    cfg = dsql(IAMDB_DSQL_USER=user, IAMDB_DSQL_TOKEN_EXPIRES_SECONDS=expires)
    cache = TokenCache(resolver=CredentialResolver(Runtime(environ=ENV)), clock=t.clock)
    token = cache.get(cfg.target)
    now = datetime.fromtimestamp(t.now, timezone.utc)
    assert token.value == _botocore(admin, cfg.token_lifetime, now)
    params = dict(parse_qsl(token.value.split("?", 1)[1]))
    assert params["Action"] == ("DbConnectAdmin" if admin else "DbConnect")
    assert params["X-Amz-Expires"] == str(cfg.token_lifetime) == (expires or "900")
    assert cfg.target.key == CLUSTER  # what the limiters pace: the cluster


@pytest.mark.parametrize(("lifetime", "refresh"), [(900, 840), (3600, 3360), (60, 56)])
def test_refresh_age_follows_the_lifetime(lifetime: int, refresh: float) -> None:
    t = FakeTime()
    endpoint = dsql(IAMDB_DSQL_TOKEN_EXPIRES_SECONDS=str(lifetime)).target
    cache = TokenCache(resolver=CredentialResolver(Runtime(environ=ENV)), clock=t.clock)
    assert cache.refresh_age(endpoint) == pytest.approx(refresh)
    first = cache.get(endpoint)
    t.now += refresh - 0.001
    assert cache.get(endpoint) is first
    t.now += 0.001
    assert cache.get(endpoint) is not first


# -- logins: permits and refusals -------------------------------------------------------------


class RecordingLimits(Limits):
    def __init__(self, t: FakeTime) -> None:
        super().__init__(200.0, None, runtime(ENV, t))
        self.asked: list[tuple[str, float | None]] = []

    def permit(  # type: ignore[override]
        self, endpoint: str, deadline: float, probe: Any, *, rate: float | None = None
    ) -> None:
        self.asked.append((endpoint, rate))
        return super().permit(endpoint, deadline, probe, rate=rate)


@pytest.fixture
def driver() -> Iterator[SocketDriver]:
    d = SocketDriver()
    yield d
    d.cleanup()


def managed(
    t: FakeTime, driver: SocketDriver, cfg: SqlConfig, limits: Limits, probe: RecordingProbe
) -> ManagedConnection[socket.socket]:
    return managed_connection(driver, cfg, runtime(ENV, t), limits=limits, probe=probe)


def test_every_dsql_connection_takes_a_permit_at_the_clusters_rate(driver: SocketDriver) -> None:
    """RDS does not count a reused token; DSQL counts every new connection, per cluster."""
    t = FakeTime()
    limits = RecordingLimits(t)
    m = managed(t, driver, dsql(IAMDB_DSQL_CONNECT_RATE="40"), limits, RecordingProbe())
    m.get().close()
    t.now += 1
    m.get()  # a reconnect with the token the cluster accepted: still a permit
    assert driver.tokens[0] == driver.tokens[1]
    assert limits.asked == [(CLUSTER, 40.0), (CLUSTER, 40.0)]


def test_limits_pace_each_endpoint_at_its_own_rate() -> None:
    t = FakeTime()
    limits, probe = Limits(200.0, None, runtime(ENV, t)), RecordingProbe()
    for _ in range(3):
        limits.permit(CLUSTER, t.now + 10, probe, rate=10.0)
    assert t.sleeps == pytest.approx([1 / paced_rate(10.0)] * 2)


RATE_TEXT = (
    'connection failed: connection to server at "10.0.0.7", port 5432 failed: FATAL:  '
    "Unable to accept connection, rate exceeded"
)


def refused(text: str) -> psycopg.OperationalError:
    """psycopg's error for a failed connect: the server's message, no SQLSTATE."""
    return psycopg.OperationalError(text)


def test_53400_is_a_throttle_error_and_other_refusals_are_not() -> None:
    token = Token("secret-token-value", 0.0, KEY)
    cfg = dsql()
    rate = _classify(cfg, refused(RATE_TEXT), token)
    assert isinstance(rate, ThrottleError) and "SQLSTATE 53400" in str(rate)
    assert "IAMDB_DSQL_CONNECT_RATE" in str(rate)
    auth = _classify(cfg, refused('FATAL:  IAM authentication failed for user "admin"'), token)
    assert isinstance(auth, AuthError) and "dsql:DbConnectAdmin" in str(auth)
    assert "AWS IAM GRANT" not in str(auth)  # admin needs no grant
    app = _classify(dsql(IAMDB_DSQL_USER="app"), refused("authentication failed"), token)
    assert "dsql:DbConnect " in str(app) and "AWS IAM GRANT app" in str(app)
    full_text = "FATAL:  Unable to accept connection, too many open connections"
    full = _classify(cfg, refused(full_text), token)
    assert isinstance(full, ConnectError) and "10,000" in str(full)
    assert isinstance(_classify(rds(), refused(RATE_TEXT), token), ConnectError)


def test_a_rate_refusal_is_retried_with_backoff_then_is_a_throttle_error(
    driver: SocketDriver,
) -> None:
    t = FakeTime()
    cfg, probe = dsql(), RecordingProbe()
    refusal = _classify(cfg, refused(RATE_TEXT), Token("x", 0.0, KEY))
    driver.refusals = [refusal, refusal]
    m = managed(t, driver, cfg, RecordingLimits(t), probe)
    m.get()  # the third attempt passes
    assert probe["ServerThrottled"] == 2 and probe["AuthFailures"] == 0
    assert probe["AuthRetries"] == 2 and len(t.sleeps) == 2
    m.close()
    driver.refusals = [refusal] * 10
    with pytest.raises(ThrottleError, match=r"4 attempts over") as info:
        m.get()
    assert "IamDbAuthConnectionFailureThrottling" not in str(info.value)  # RDS's hint
    assert info.value.__context__ is None and info.value.__cause__ is None


# -- maximum connection age -------------------------------------------------------------------


def test_a_connection_at_max_age_is_replaced_at_get_but_never_in_a_transaction(
    driver: SocketDriver,
) -> None:
    t = FakeTime()
    probe = RecordingProbe()
    m = managed(t, driver, dsql(IAMDB_DSQL_MAX_AGE_SECONDS="3300"), RecordingLimits(t), probe)
    first = m.get()
    t.now += 3299
    assert m.get() is first and m.reused
    t.now += 1
    driver.transactions[first.fileno()] = "INTRANS"  # a transaction is open on it: keep it
    assert m.get() is first
    driver.transactions.clear()
    second = m.get()  # idle again: replaced now
    assert second is not first and first.fileno() == -1 and not m.reused
    assert probe["Reconnects"] == 0 and probe["ConnectionsOpened"] == 2  # not a dead one
    t.now += 3299
    assert m.get() is second  # the age counts from the new login


def test_rds_connections_have_no_max_age(driver: SocketDriver) -> None:
    t = FakeTime()
    m = managed(t, driver, rds(), RecordingLimits(t), RecordingProbe())
    first = m.get()
    t.now += 86_400  # a day (pinged for idleness, alive)
    assert m.get() is first


# -- the transaction retry helper -------------------------------------------------------------


class Conflict(Exception):
    sqlstate = "40001"


class OtherError(Exception):
    sqlstate = "23505"


class FakeConn:
    def __init__(self) -> None:
        self.log: list[str] = []

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.log.append("begin")
        try:
            yield
        except BaseException:
            self.log.append("rollback")
            raise
        self.log.append("commit")


class Instance:
    """What run_transaction is given of an instance: ``get_dsql``, the runtime, the probe."""

    def __init__(self, t: FakeTime) -> None:
        self.runtime = runtime(ENV, t, random=0.5)
        self.conn = FakeConn()
        self.gets = 0
        self.probe = RecordingProbe()

    def get_dsql(self) -> FakeConn:
        self.gets += 1
        return self.conn

    def run(self, fn: Any, attempts: Any = 3) -> Any:
        return run_transaction(
            self.get_dsql,  # type: ignore[arg-type]
            fn,
            attempts=attempts,
            runtime=self.runtime,
            probe=self.probe,  # type: ignore[arg-type]
            label="dsql",
        )


def failing(times: int, error: type[Exception] = Conflict) -> Any:
    calls: list[FakeConn] = []

    def fn(conn: FakeConn) -> str:
        calls.append(conn)
        if len(calls) <= times:
            raise error("ERROR: change conflicts with another transaction, please retry: (OC000)")
        return f"done after {len(calls)}"

    fn.calls = calls  # type: ignore[attr-defined]
    return fn


def test_conflicts_are_retried_each_in_a_new_transaction_with_jitter() -> None:
    t = FakeTime()
    registry = Instance(t)
    fn = failing(2)
    assert registry.run(fn) == "done after 3"
    assert registry.conn.log == ["begin", "rollback"] * 2 + ["begin", "commit"]
    assert registry.gets == 3  # get_dsql() per attempt: a replaced connection is picked up
    backoff = DecorrelatedJitter(0.02, 1.0, uniform=registry.runtime.uniform)
    assert t.sleeps == pytest.approx([backoff.next_delay(), backoff.next_delay()])
    assert registry.probe["TransactionRetries"] == 2


def test_the_last_conflict_is_a_conflict_error_keeping_nothing_alive() -> None:
    t = FakeTime()
    registry = Instance(t)
    with pytest.raises(ConflictError, match=r"3 times.*OC000") as info:
        registry.run(failing(99))
    assert info.value.__context__ is None and info.value.__cause__ is None
    assert len(t.sleeps) == 2 and registry.gets == 3


def test_anything_but_a_conflict_propagates_at_once() -> None:
    t = FakeTime()
    registry = Instance(t)
    with pytest.raises(OtherError):
        registry.run(failing(1, OtherError))
    with pytest.raises(ZeroDivisionError):
        registry.run(lambda conn: 1 / 0)
    assert t.sleeps == [] and registry.conn.log == ["begin", "rollback"] * 2


@pytest.mark.parametrize("attempts", [0, -1, 21, 2.5, True, "3"])
def test_attempts_must_be_a_small_positive_integer(attempts: Any) -> None:
    with pytest.raises(ConfigError) as info:
        Instance(FakeTime()).run(failing(0), attempts)
    assert info.value.variable == "attempts"
