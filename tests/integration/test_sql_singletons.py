"""get_pg() / get_mysql() against devstack's real servers, which verify every token like RDS.

Each test gets the devstack environment (``stack_env``) and a clean default registry.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest

import iamdb
from iamdb._core.runtime import Runtime
from iamdb._info import describe
from iamdb._registry import Registry
from tests.fakes import RecordingTelemetry

pytestmark = pytest.mark.integration

ENGINES = ["pg", "mysql"]


def getter(engine: str) -> Callable[..., Any]:
    return iamdb.get_pg if engine == "pg" else iamdb.get_mysql


def query(engine: str, conn: Any, sql: str) -> Any:
    if engine == "pg":
        return conn.execute(sql).fetchone()
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()


def tls_in_use(engine: str, conn: Any) -> str:
    if engine == "pg":
        row = query(engine, conn, "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        return str(row[0])
    return str(query(engine, conn, "SHOW SESSION STATUS LIKE 'Ssl_version'")[1])


def accepted(stack: Any, server: str, user: str) -> int:
    return sum(1 for e in stack.verifier.events if e.server == server and e.user == user and e.ok)


def server_of(stack: Any, engine: str) -> str:
    return stack.pg_server if engine == "pg" else stack.mysql_server


def current_user(engine: str, conn: Any) -> str:
    sql = (
        "SELECT current_user"
        if engine == "pg"
        else "SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1)"
    )
    return str(query(engine, conn, sql)[0])


@pytest.mark.parametrize("engine", ENGINES)
def test_logs_in_over_verified_tls_as_the_configured_user(
    stack: Any, stack_env: Any, engine: str
) -> None:
    conn = getter(engine)()
    assert current_user(engine, conn) == "iamdb_app"
    assert tls_in_use(engine, conn).startswith("TLSv1.")
    assert accepted(stack, server_of(stack, engine), "iamdb_app") >= 1


def test_the_session_is_named_after_the_registrys_function_name(stack: Any, stack_env: Any) -> None:
    """application_name comes from the environment the registry was given, not os.environ
    (whose AWS_LAMBDA_FUNCTION_NAME is devstack's function)."""
    environ = {**os.environ, "AWS_LAMBDA_FUNCTION_NAME": "orders-api"}
    registry = Registry(runtime=Runtime(environ=environ))
    try:
        conn = registry.get_pg()
        assert query("pg", conn, "SELECT current_setting('application_name')")[0] == "orders-api"
    finally:
        registry.reset()


@pytest.mark.parametrize("engine", ENGINES)
def test_singleton_is_reused_without_new_logins(stack: Any, stack_env: Any, engine: str) -> None:
    first = getter(engine)()
    before = accepted(stack, server_of(stack, engine), "iamdb_app")
    for _ in range(20):
        assert getter(engine)() is first
        query(engine, first, "SELECT 1")
    assert accepted(stack, server_of(stack, engine), "iamdb_app") == before


@pytest.mark.parametrize("engine", ENGINES)
def test_named_instance(stack: Any, stack_env: Any, engine: str) -> None:
    conn = getter(engine)("reporting")
    assert current_user(engine, conn) == "iamdb_reporting"
    assert getter(engine)("reporting") is conn and getter(engine)() is not conn


@pytest.mark.parametrize("engine", ENGINES)
def test_backend_killed_while_frozen_is_replaced_on_next_call(
    stack: Any, stack_env: Any, engine: str
) -> None:
    first = getter(engine)()
    query(engine, first, "SELECT 1")
    server = stack.pg if engine == "pg" else stack.mysql
    assert server.kill_connections("iamdb_app") >= 1
    time.sleep(0.2)  # the goodbye travels while the environment is "frozen"
    second = getter(engine)()
    assert second is not first
    assert query(engine, second, "SELECT 1")[0] == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_restarted_server_is_recovered_on_next_call(
    stack: Any, stack_env: Any, engine: str
) -> None:
    first = getter(engine)()
    query(engine, first, "SELECT 1")
    (stack.pg if engine == "pg" else stack.mysql).restart()
    second = getter(engine)()
    assert query(engine, second, "SELECT 1")[0] == 1
    assert second is not first


@pytest.mark.parametrize("engine", ENGINES)
def test_silently_dead_connection_is_caught_by_the_idle_ping(
    stack: Any, stack_env: Any, engine: str
) -> None:
    """After IAMDB_HEALTHCHECK_IDLE_SECONDS, get() makes a round trip before handing out."""
    now = [time.time()]
    telemetry = RecordingTelemetry()
    registry = Registry(runtime=Runtime(clock=lambda: now[0]), telemetry=telemetry)
    managed = registry.managed(engine)  # type: ignore[arg-type]
    try:
        first = managed.get()
        now[0] += 31
        assert managed.get() is first  # alive: the ping succeeded, no new login
        managed.probe.flush()
        assert telemetry.totals(engine)["ConnectionsOpened"] == 1
    finally:
        registry.reset()


@pytest.mark.parametrize("engine", ENGINES)
def test_old_tokens_are_refused_and_iamdb_never_presents_one(
    stack: Any, stack_env: Any, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A clock 21 minutes behind would also be 21 minutes behind the fleet's queue: this test
    # is about tokens, so it runs without the fleet limiter.
    monkeypatch.delenv("IAMDB_THROTTLE_TABLE")
    now = [time.time() - 1300]  # 21 minutes ago: beyond 900 s lifetime + 300 s skew
    registry = Registry(runtime=Runtime(clock=lambda: now[0]))
    try:
        # A connection made "back then" carries a token the verifier must refuse today ...
        with pytest.raises(iamdb.AuthError):
            registry.managed(engine).get()  # type: ignore[arg-type]
        # ... but a token signed back then and cached is never presented once it is old.
        registry.reset()
        cfg = registry.config(engine)  # type: ignore[arg-type]
        old = registry.tokens.get(cfg.target)
        now[0] = time.time()
        conn = registry.managed(engine).get()  # type: ignore[arg-type]
        assert query(engine, conn, "SELECT 1")[0] == 1
        assert registry.managed(engine).last_token is not old  # type: ignore[arg-type]
        # two signatures: ``old`` (the test's own, uncounted) and the login's new one
        assert describe(registry, engine, None).tokens_signed == 1
    finally:
        registry.reset()


@pytest.mark.parametrize("engine", ENGINES)
def test_wrong_user_gives_auth_error(
    stack: Any, stack_env: Any, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    monkeypatch.setenv(f"IAMDB_{engine.upper()}_USER", "nobody")
    with pytest.raises(iamdb.AuthError) as info:
        getter(engine)()
    message = str(info.value)
    assert "nobody" in message and "IamDbAuthConnectionFailureThrottling" in message
    assert stack.env["AWS_SESSION_TOKEN"] not in message


@pytest.mark.parametrize("engine", ENGINES)
def test_unverifiable_certificate_means_no_token_reaches_the_verifier(
    stack: Any, stack_env: Any, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    """Against the bundled RDS CAs devstack's certificate does not verify: no login happens."""
    monkeypatch.delenv(f"IAMDB_{engine.upper()}_SSLROOTCERT")
    before = len(stack.verifier.events)
    with pytest.raises(iamdb.ConnectError, match=r"certificate|SSL|ssl"):
        getter(engine)()
    assert len(stack.verifier.events) == before


def test_pg_plaintext_is_refused_before_any_token_is_checked(
    stack: Any, stack_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IAMDB_PG_SSLMODE", "disable")
    before = len(stack.verifier.events)
    with pytest.raises(iamdb.IamDbError):
        iamdb.get_pg()
    assert len(stack.verifier.events) == before


@pytest.mark.parametrize("engine", ENGINES)
def test_connect_error_when_nothing_listens(
    stack_env: Any, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    from devstack.procs import free_port

    monkeypatch.setenv(f"IAMDB_{engine.upper()}_PORT", str(free_port()))
    monkeypatch.setenv(f"IAMDB_{engine.upper()}_CONNECT_TIMEOUT", "2")
    with pytest.raises(iamdb.ConnectError) as info:
        getter(engine)()
    assert "could not connect" in str(info.value)
