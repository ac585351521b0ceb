"""A role to assume for PostgreSQL, MySQL and Aurora DSQL, against devstack's data account.

The databases live in a second account (devstack.data_account): the verifier admits only that
account's principals and checks rds-db:connect / dsql:DbConnect against the assumed role's
policies in moto, and moto checks the role's trust policy (and its sts:ExternalId condition)
when the function assumes it. So a wrong trust policy, a missing permission or the function's
own credentials fail here as they would on AWS.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import iamdb
from devstack import data_account
from devstack.stack import Stack
from iamdb._aws.roles import LEASE_MARGIN_SECONDS
from iamdb._core.runtime import Runtime
from iamdb._registry import Registry
from iamdb.errors import AuthError
from tests.conftest import mariadb_available
from tests.fakes import FakeClock
from tests.paths import LAYER

pytestmark = pytest.mark.integration

ENGINES = ["pg", "mysql", "dsql"]
NAMES = {"pg": "aurora", "mysql": "aurora", "dsql": "tenant"}


@pytest.fixture
def data_env(stack_env: dict[str, str], stack: Stack) -> Iterator[dict[str, str]]:
    if stack.aurora_pg is None or stack.data_dsql is None:
        pytest.skip("devstack runs without its data account")
    for cluster in stack.clusters():
        cluster.reset()
    yield stack_env


def _engine(engine: str) -> None:
    if engine == "mysql" and not mariadb_available():
        pytest.skip("MariaDB is not installed here")


def _get(engine: str, registry: Any = iamdb) -> Any:
    return getattr(registry, f"get_{engine}")(NAMES[engine])


def _who(engine: str, conn: Any) -> str:
    if engine == "mysql":
        with conn.cursor() as cur:
            cur.execute("SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1)")
            return str(cur.fetchone()[0])
    return str(conn.execute("SELECT current_user").fetchone()[0])


def _role_var(engine: str) -> str:
    return f"IAMDB_{engine.upper()}_{NAMES[engine].upper()}_ROLE_ARN"


@pytest.mark.parametrize("engine", ENGINES)
def test_a_login_to_another_account_signs_with_the_assumed_role(
    data_env: dict[str, str], stack: Stack, engine: str
) -> None:
    _engine(engine)
    conn = _get(engine)
    assert _who(engine, conn) == ("iamdb_dsql_app" if engine == "dsql" else "iamdb_app")
    event = stack.verifier.events[-1]
    assert event.ok and event.server.startswith(("iamdb-aurora", "data-dsql"))
    key = stack.aws.lookup(event.access_key)
    assert key is not None and key.arn.startswith(
        f"arn:aws:sts::{data_account.DATA_ACCOUNT}:assumed-role/"
    )
    expected = data_account.TENANT_ROLE_ARN if engine == "dsql" else data_account.DATA_ROLE_ARN
    assert key.arn.split("/")[1] == expected.rsplit("/", 1)[1]
    info = iamdb.info(engine, NAMES[engine])
    assert info.logins == 1 and info.tokens_signed == 1


def test_instances_naming_one_role_share_one_assume_role(
    data_env: dict[str, str], stack: Stack
) -> None:
    before = _assumed(data_account.DATA_ROLE_ARN)
    iamdb.get_pg("aurora")
    iamdb.get_pg("reader")
    if mariadb_available():
        iamdb.get_mysql("aurora")
    assert _assumed(data_account.DATA_ROLE_ARN) == before + 1
    keys = {e.access_key for e in list(stack.verifier.events)[-3:]}
    assert len(keys) == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_a_role_that_does_not_trust_the_function_is_an_auth_error_naming_it(
    data_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, stack: Stack, engine: str
) -> None:
    _engine(engine)
    monkeypatch.setenv(_role_var(engine), data_account.UNTRUSTED_ROLE_ARN)
    seen = len(stack.verifier.events)
    with pytest.raises(AuthError) as info:
        _get(engine)
    message = str(info.value)
    assert data_account.UNTRUSTED_ROLE_ARN in message and "trust policy" in message
    assert f"account {data_account.DATA_ACCOUNT}" in message
    assert info.value.instance == f"{engine}:{NAMES[engine]}"
    assert len(stack.verifier.events) == seen  # no token was signed, no login tried


def test_a_missing_external_id_is_refused_by_the_trust_policy(
    data_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IAMDB_DSQL_TENANT_EXTERNAL_ID")
    with pytest.raises(AuthError) as info:
        iamdb.get_dsql("tenant")
    assert data_account.TENANT_ROLE_ARN in str(info.value)
    assert "IAMDB_DSQL_TENANT_EXTERNAL_ID" in str(info.value)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_role_without_the_database_permission_is_an_auth_error_naming_it(
    data_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, stack: Stack, engine: str
) -> None:
    _engine(engine)
    monkeypatch.setenv(_role_var(engine), data_account.NOCONNECT_ROLE_ARN)
    monkeypatch.delenv("IAMDB_DSQL_TENANT_EXTERNAL_ID")
    monkeypatch.setenv("IAMDB_AUTH_RETRIES", "0")
    with pytest.raises(AuthError) as info:
        _get(engine)
    message = str(info.value)
    action = "dsql:DbConnect" if engine == "dsql" else "rds-db:connect"
    assert data_account.NOCONNECT_ROLE_ARN in message and _role_var(engine) in message
    assert f"lacks {action} on arn:aws:" in message and data_account.DATA_ACCOUNT in message
    event = stack.verifier.events[-1]
    assert (event.ok, event.reason) == (False, "not authorized")


@pytest.mark.parametrize("engine", ENGINES)
def test_the_function_s_own_credentials_are_refused_by_another_account_s_database(
    data_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, stack: Stack, engine: str
) -> None:
    _engine(engine)
    for var in (_role_var(engine), "IAMDB_DSQL_TENANT_EXTERNAL_ID"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("IAMDB_AUTH_RETRIES", "0")
    with pytest.raises(AuthError) as info:
        _get(engine)
    assert "sign with a role there" in str(info.value)
    assert stack.verifier.events[-1].reason == "wrong account"


def test_a_reconnect_reuses_the_role_s_token_and_the_limiters_pace_the_server(
    data_env: dict[str, str], stack: Stack
) -> None:
    assert stack.aurora_pg is not None
    first = iamdb.get_pg("aurora")
    stack.aurora_pg.kill_sessions(stack.aurora_pg.writer)
    again = iamdb.get_pg("aurora")
    assert again is not first
    info = iamdb.info("pg", "aurora")
    assert (info.logins, info.tokens_signed, info.reconnects) == (2, 1, 1)
    # the fleet queue's key is the server the token is signed for, whoever signs it
    registry = iamdb._registry.default
    assert registry.config("pg", "aurora").target.key == (
        f"{stack.aurora_pg.names.writer}:{stack.aurora_pg.port}"
    )


def test_credentials_are_renewed_before_any_token_could_outlive_them(
    data_env: dict[str, str], stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three hours of invocations, a new login each, on a fake clock shared by iamdb, moto's
    STS (the Expiration it issues) and the verifier (what it holds tokens and credentials to)."""
    import moto.sts.models

    clock = FakeClock(dt.datetime.now(dt.timezone.utc).timestamp())
    monkeypatch.setattr(
        moto.sts.models,
        "utcnow",
        lambda: dt.datetime.fromtimestamp(clock(), dt.timezone.utc).replace(tzinfo=None),
    )
    monkeypatch.setattr(stack.verifier, "_clock", clock)
    monkeypatch.delenv("IAMDB_THROTTLE_TABLE")
    registry = Registry(runtime=Runtime(environ=dict(os.environ), clock=clock))
    seen = len(stack.verifier.events)
    keys: list[str] = []
    try:
        for _ in range(0, 181, 7):  # an invocation every 7 minutes
            conn = registry.get_pg("aurora")
            conn.execute("SELECT 1")
            token = registry.managed("pg", "aurora").last_token
            assert token is not None
            key = stack.aws.lookup(token.access_key)
            assert key is not None and key.expires_at is not None
            # the token, valid 900 s from its signature, dies before the credentials
            assert key.expires_at - (token.signed_at + 900) >= LEASE_MARGIN_SECONDS
            keys.append(token.access_key)
            conn.close()  # the next invocation logs in again
            clock.advance(7 * 60)
    finally:
        registry.reset()
    events = list(stack.verifier.events)[seen:]
    assert events and all(e.ok for e in events)
    assert len(set(keys)) == 5  # assumed at 0, then about every 39 minutes of 3 hours


def test_the_cli_token_is_signed_with_the_role_and_opens_a_session(
    data_env: dict[str, str], stack: Stack
) -> None:
    """``python -m iamdb token pg --name aurora``: what psql would be given as PGPASSWORD."""
    assert stack.aurora_pg is not None and stack.tls is not None
    out = subprocess.run(
        [sys.executable, "-m", "iamdb", "token", "pg", "--name", "aurora"],
        env={**os.environ, "PYTHONPATH": str(LAYER)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    with psycopg.connect(
        host="127.0.0.1",
        port=stack.aurora_pg.port,
        user="iamdb_app",
        dbname="app",
        password=out.stdout.strip(),
        sslmode="verify-full",
        sslrootcert=str(stack.tls.ca),
    ) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("iamdb_app",)


def _assumed(role_arn: str) -> int:
    """How many sessions of ``role_arn`` moto's STS issued."""
    from moto.sts.models import sts_backends

    roles = sts_backends[data_account.DATA_ACCOUNT]["aws"].assumed_roles
    return sum(1 for r in roles if r.role_arn == role_arn)
