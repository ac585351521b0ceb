"""devstack's Aurora DSQL endpoint: logins verified as DSQL verifies them, connections reaped.

Tokens come from botocore's ``dsql`` client (the reference signer), never from iamdb, so
these tests check devstack independently of the code it is meant to test.
"""

from __future__ import annotations

import datetime as dt
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import botocore.auth
import pytest

from devstack.__main__ import _parser
from devstack.aws import Credentials, dsql_token, rds_token
from devstack.reaper import Reaper
from devstack.sam.policy import DSQL_CLUSTER_ARN
from devstack.stack import DSQL_ENDPOINT, MYSQL_ENDPOINT, PG_ENDPOINT, Stack

pytestmark = pytest.mark.integration

ADMIN, APP = "admin", "iamdb_dsql_app"


def function_creds(stack: Stack) -> Credentials:
    assert stack.aws.function_credentials is not None
    return stack.aws.function_credentials


def developer_creds(stack: Stack) -> Credentials:
    assert stack.aws.developer_credentials is not None
    return stack.aws.developer_credentials


def token(stack: Stack, *, admin: bool = True, creds: Credentials | None = None, **kw: Any) -> str:
    return dsql_token(DSQL_ENDPOINT, creds or function_creds(stack), admin=admin, **kw)


def connect(stack: Stack, password: str, user: str = ADMIN, **kw: Any) -> Any:
    """psycopg to the DSQL endpoint, verifying that the certificate names DSQL_ENDPOINT."""
    import psycopg

    assert stack.dsql is not None and stack.tls is not None
    options: dict[str, Any] = {
        "host": DSQL_ENDPOINT,
        "hostaddr": "127.0.0.1",
        "port": stack.dsql.port,
        "dbname": "postgres",
        "sslmode": "verify-full",
        "sslrootcert": str(stack.tls.ca),
        "connect_timeout": 10,
    }
    options.update(kw)
    return psycopg.connect(user=user, password=password, **options)


def refusal(stack: Stack, password: str, user: str = ADMIN, server: str = "dsql") -> Any:
    """Log in, expect PostgreSQL's usual refusal; return the verifier's one event."""
    import psycopg

    before = len(stack.verifier.events)
    with pytest.raises(psycopg.OperationalError, match=f'authentication failed for user "{user}"'):
        if server == "dsql":
            connect(stack, password, user)
        else:
            assert stack.pg is not None and stack.tls is not None
            psycopg.connect(
                host="127.0.0.1",
                port=stack.pg.port,
                user=user,
                dbname="app",
                password=password,
                sslmode="verify-full",
                sslrootcert=str(stack.tls.ca),
                connect_timeout=10,
            )
    [event] = list(stack.verifier.events)[before:]
    assert (event.server, event.user, event.ok) == (server, user, False)
    return event


@contextmanager
def signing_clock(at: dt.datetime) -> Iterator[None]:
    """botocore signs as if it were ``at`` (UTC)."""
    original = botocore.auth.get_current_datetime
    naive = at.astimezone(dt.timezone.utc).replace(tzinfo=None)
    botocore.auth.get_current_datetime = lambda *a, **k: naive
    try:
        yield
    finally:
        botocore.auth.get_current_datetime = original


def test_admin_logs_in_with_a_botocore_db_connect_admin_token(stack: Stack) -> None:
    before = len(stack.verifier.events)
    with connect(stack, token(stack)) as conn:
        row = conn.execute(
            "SELECT current_user, current_database(), s.ssl"
            " FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()"
        ).fetchone()
        assert row == (ADMIN, "postgres", True)
        conn.execute("CREATE TABLE IF NOT EXISTS dsql_probe (id int PRIMARY KEY)")  # owner
    [event] = list(stack.verifier.events)[before:]
    assert (event.server, event.user, event.ok, event.reason) == ("dsql", ADMIN, True, "ok")


def test_each_role_needs_its_own_action(stack: Stack) -> None:
    assert refusal(stack, token(stack, admin=False)).reason == "wrong action"
    dev = developer_creds(stack)
    assert refusal(stack, token(stack, admin=True, creds=dev), APP).reason == "wrong action"
    with connect(stack, token(stack, admin=False, creds=dev), APP) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (APP,)


def test_the_template_policy_refuses_db_connect_to_the_function(stack: Stack) -> None:
    """template.yaml gives devstack's function dsql:DbConnectAdmin only (DsqlUser=admin)."""
    event = refusal(stack, token(stack, admin=False), APP)
    assert event.reason == "not authorized"
    assert event.access_key == function_creds(stack).access_key
    assert stack.verifier.authorize is not None
    key = stack.aws.lookup(event.access_key)
    assert key is not None
    ok, detail = stack.verifier.authorize(key.arn, "dsql", APP, "dsql:DbConnect")
    assert not ok and DSQL_CLUSTER_ARN in detail


def test_rds_tokens_and_dsql_tokens_stay_at_their_endpoints(stack: Stack) -> None:
    assert stack.dsql is not None and stack.pg is not None and stack.tls is not None
    creds = function_creds(stack)
    rds_at_dsql = rds_token(DSQL_ENDPOINT, stack.dsql.port, ADMIN, creds)
    assert refusal(stack, rds_at_dsql).reason == "wrong service"
    dsql_at_pg = dsql_token(PG_ENDPOINT, creds, admin=False)
    assert refusal(stack, dsql_at_pg, "iamdb_app", server="pg").reason == "wrong service"
    pg_token = rds_token(PG_ENDPOINT, stack.pg.port, ADMIN, creds)  # the RDS endpoint's
    assert refusal(stack, pg_token).reason == "wrong service"
    if stack.mysql is not None:
        import pymysql

        before = len(stack.verifier.events)
        with pytest.raises(pymysql.err.OperationalError) as info:
            pymysql.connect(
                host="127.0.0.1",
                port=stack.mysql.port,
                user="iamdb_app",
                password=dsql_token(MYSQL_ENDPOINT, creds, admin=False),
                ssl=ssl.create_default_context(cafile=str(stack.tls.ca)),
                connect_timeout=10,
                read_timeout=10,
            )
        assert info.value.args[0] == 1045
        [event] = list(stack.verifier.events)[before:]
        assert (event.server, event.ok, event.reason) == ("mysql", False, "wrong service")


def test_lifetime_comes_from_x_amz_expires(stack: Stack) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    with signing_clock(now - dt.timedelta(seconds=3000)):
        hour_old = token(stack, expires_in=3600)  # far beyond RDS's 900 s, within its own
        minute = token(stack, expires_in=60)  # elapsed (and the 300 s of skew too)
    with connect(stack, hour_old) as conn:
        conn.execute("SELECT 1")
    assert refusal(stack, minute).reason == "expired"
    with signing_clock(now - dt.timedelta(seconds=1300)):
        default = token(stack)  # 900 s
    assert refusal(stack, default).reason == "expired"


def test_the_endpoint_signs_no_port(stack: Stack) -> None:
    assert stack.dsql is not None
    with_port = token(stack).replace(f"{DSQL_ENDPOINT}/", f"{DSQL_ENDPOINT}:{stack.dsql.port}/")
    assert refusal(stack, with_port).reason == "wrong port"


def _backend_starts(stack: Stack, pids: list[int]) -> dict[int, float]:
    assert stack.dsql is not None
    with stack.dsql.admin() as admin:
        rows = admin.execute(
            "SELECT pid, extract(epoch FROM backend_start)::float8 FROM pg_stat_activity"
            " WHERE pid = ANY(%s)",
            (pids,),
        ).fetchall()
    return {int(pid): float(started) for pid, started in rows}


def test_reaper_drops_old_connections_and_leaves_young_ones(stack: Stack) -> None:
    """A sweep at a chosen instant: ``old`` began more than max_age before it, ``young`` not."""
    import psycopg

    assert stack.dsql is not None
    password = token(stack)
    old = connect(stack, password)
    young = connect(stack, password)
    try:
        starts = _backend_starts(stack, [old.info.backend_pid, young.info.backend_pid])
        old_start, young_start = starts[old.info.backend_pid], starts[young.info.backend_pid]
        assert old_start < young_start
        max_age = 1800.0
        instant = (old_start + young_start) / 2 + max_age
        reaper = Reaper(stack.dsql.admin, server="dsql", max_age=max_age, clock=lambda: instant)
        with stack.dsql.admin() as admin:  # Unix-socket administration is never reaped
            [reaped] = reaper.sweep()
            admin.execute("SELECT 1")
        reaper.stop()
        assert (reaped.server, reaped.user, reaped.pid) == ("dsql", ADMIN, old.info.backend_pid)
        assert reaped.age > max_age
        assert list(reaper.events) == [reaped]
        with pytest.raises(psycopg.OperationalError, match="terminating connection"):
            old.execute("SELECT 1")
        assert young.execute("SELECT 1").fetchone() == (1,)
    finally:
        old.close()
        young.close()


def test_running_reaper_enforces_a_shortened_max_age(stack: Stack) -> None:
    import psycopg

    reaper, original = stack.dsql_reaper, stack.dsql_reaper.max_age
    conn = connect(stack, token(stack))
    pid = conn.info.backend_pid
    try:
        reaper.max_age = 1.0
        deadline = time.monotonic() + 60  # a bound on the wait, not a measurement
        while not any(e.pid == pid for e in reaper.events) and time.monotonic() < deadline:
            time.sleep(0.1)
        [reaped] = [e for e in reaper.events if e.pid == pid]
        assert reaped.age > 1.0
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    finally:
        reaper.max_age = original
        conn.close()


def test_env_carries_the_dsql_endpoint(stack: Stack) -> None:
    import psycopg

    env = stack.env
    assert stack.dsql is not None and stack.tls is not None
    default = {k: v for k, v in env.items() if k.startswith("IAMDB_DSQL_")}
    default = {k: v for k, v in default.items() if not k.startswith("IAMDB_DSQL_TENANT_")}
    assert default == {
        "IAMDB_DSQL_HOST": "127.0.0.1",
        "IAMDB_DSQL_PORT": str(stack.dsql.port),
        "IAMDB_DSQL_IAM_HOST": DSQL_ENDPOINT,
        "IAMDB_DSQL_USER": "admin",
        "IAMDB_DSQL_DBNAME": "postgres",
        "IAMDB_DSQL_REGION": "us-east-1",
        "IAMDB_DSQL_SSLROOTCERT": str(stack.tls.ca),
    }
    creds = Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"],
                        env["AWS_SESSION_TOKEN"], None)  # fmt: skip
    password = dsql_token(
        env["IAMDB_DSQL_IAM_HOST"], creds, admin=True, region=env["IAMDB_DSQL_REGION"]
    )
    with psycopg.connect(
        host=env["IAMDB_DSQL_HOST"],
        port=int(env["IAMDB_DSQL_PORT"]),
        user=env["IAMDB_DSQL_USER"],
        dbname=env["IAMDB_DSQL_DBNAME"],
        password=password,
        sslmode="verify-full",
        sslrootcert=env["IAMDB_DSQL_SSLROOTCERT"],
        connect_timeout=10,
    ) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("admin",)


def test_max_age_is_a_stack_option_and_an_up_flag() -> None:
    assert Stack(dsql_max_age=5.0).dsql_reaper.max_age == 5.0
    args = _parser().parse_args(["up", "--dsql-max-age", "2.5", "--no-dsql"])
    assert (args.dsql_max_age, args.no_dsql) == (2.5, True)
    assert _parser().parse_args(["up"]).dsql_max_age == 3600.0
    with pytest.raises(SystemExit):
        _parser().parse_args(["up", "--dsql-max-age", "0"])
