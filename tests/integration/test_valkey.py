"""get_valkey() against devstack's ElastiCache cache: a real redis-server behind a front that
checks every AUTH/HELLO token as ElastiCache does and closes connections whose last login is
older than its maximum age (shortened here, as the issue asks)."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import iamdb
from iamdb._core.runtime import Runtime
from iamdb._registry import Registry
from tests.integration.leaks import Secrets, see_logs

pytestmark = pytest.mark.integration


def front_events(stack: Any, kind: str, since: float = 0.0) -> list[Any]:
    return [e for e in stack.valkey.events if e.kind == kind and e.at >= since]


def new_invocation(monkeypatch: pytest.MonkeyPatch) -> None:
    """What Lambda's runtime does before each invocation: a new trace id."""
    monkeypatch.setenv("_X_AMZN_TRACE_ID", f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex}")


@pytest.fixture
def short_max_age(stack: Any) -> Iterator[float]:
    """The front closes connections 4 s after their last login (ElastiCache: 12 hours)."""
    saved, stack.valkey.max_age = stack.valkey.max_age, 4.0
    try:
        yield 4.0
    finally:
        stack.valkey.max_age = saved


def test_logs_in_over_verified_tls_and_is_reused(stack: Any, stack_env: Any) -> None:
    started = time.time()
    client = iamdb.get_valkey()
    assert client.acl_whoami() == "iamdb-app"
    assert client.set("iamdb:test", "1") and client.get("iamdb:test") == b"1"
    assert iamdb.get_valkey() is client
    seen = iamdb.info("valkey")
    assert (seen.connected, seen.reused, seen.logins, seen.tokens_signed) == (True, True, 1, 1)
    logins = front_events(stack, "auth", started)
    assert [(e.user, e.ok) for e in logins] == [("iamdb-app", True)]
    conn = client.connection_pool.get_connection("PING")
    try:
        assert conn._sock.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        client.connection_pool.release(conn)


def test_reset_closes_every_connection(stack: Any, stack_env: Any) -> None:
    for name in (None, "orders"):
        iamdb.get_valkey(name).ping()
    assert stack.valkey.open_connections() >= 1 and stack.valkey_cluster.open_connections() >= 1
    iamdb.reset()
    deadline = time.time() + 5
    while time.time() < deadline and (
        stack.valkey.open_connections() or stack.valkey_cluster.open_connections()
    ):
        time.sleep(0.05)
    assert (stack.valkey.open_connections(), stack.valkey_cluster.open_connections()) == (0, 0)


def test_new_connections_take_a_fresh_token_after_14_minutes(stack: Any, stack_env: Any) -> None:
    """On a fake clock: the second connection, opened 850 s later, presents a new token."""
    from iamdb._info import describe

    now = [time.time() - 1000]  # both tokens stay within the front's 900 s + 300 s of skew
    registry = Registry(runtime=Runtime(clock=lambda: now[0]))
    started = time.time()
    try:
        client = registry.get_valkey()
        pool = client.connection_pool
        now[0] += 850
        first = pool.get_connection("PING")  # the idle, logged-in one
        second = pool.get_connection("PING")  # a new login: the pool asks for credentials
        pool.release(first)
        pool.release(second)
        assert second.logged_in_at == now[0]
        assert registry.tokens.peek(registry.valkey_handle().cfg.target) is not None
        assert describe(registry, "valkey", None).tokens_signed == 2
        assert [e.ok for e in front_events(stack, "auth", started)] == [True, True]
    finally:
        registry.reset()


def test_new_connections_sign_with_rotated_credentials_at_once(
    stack: Any, stack_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The credentials change while the token is fresh: the next new connection presents a
    token signed with the new key, not the cached one (AWS's IAM demo application kept signing
    with credentials about to expire: aws-samples/elasticache-iam-auth-demo-app #19)."""
    client = iamdb.get_valkey()
    pool = client.connection_pool
    old_key = stack_env["AWS_ACCESS_KEY_ID"]
    new = stack.aws.developer_credentials  # another principal devstack's IAM knows
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", new.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", new.secret_key)
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    first = pool.get_connection("PING")  # the idle, logged-in one
    second = pool.get_connection("PING")  # a new login: the pool asks for credentials
    pool.release(first)
    pool.release(second)
    logins = [e for e in stack.verifier.events if e.user == "iamdb-app"][-2:]
    assert [(e.access_key, e.ok) for e in logins] == [(old_key, True), (new.access_key, True)]
    assert iamdb.info("valkey").tokens_signed == 2


def test_connections_re_authenticate_before_the_maximum_age(
    stack: Any, stack_env: Any, monkeypatch: pytest.MonkeyPatch, short_max_age: float
) -> None:
    """REAUTH_SECONDS 2 under the front's 4: the connection outlives the maximum age."""
    monkeypatch.setenv("IAMDB_VALKEY_REAUTH_SECONDS", "2")
    started = time.time()
    client = iamdb.get_valkey()
    client.set("iamdb:age", "0")
    for _ in range(7):  # invocations one second apart, 7 s in all
        time.sleep(1.0)
        new_invocation(monkeypatch)
        assert iamdb.get_valkey() is client
        client.incr("iamdb:age")
    assert client.get("iamdb:age") == b"7"
    seen = iamdb.info("valkey")
    assert seen.logins == 1 and seen.reconnects == 0 and seen.reauthentications >= 2
    assert front_events(stack, "closed for age", started) == []
    assert (
        len([e for e in front_events(stack, "auth", started) if e.ok]) == 1 + seen.reauthentications
    )


def test_without_re_authentication_the_front_closes_the_connection(
    stack: Any, stack_env: Any, monkeypatch: pytest.MonkeyPatch, short_max_age: float
) -> None:
    """The failure the re-authentication prevents: the connection dies at the maximum age, and
    the next get_valkey() must log in again (a new connection, not a re-authentication)."""
    started = time.time()
    client = iamdb.get_valkey()  # REAUTH_SECONDS: 11 hours
    time.sleep(5.5)
    assert front_events(stack, "closed for age", started)
    new_invocation(monkeypatch)
    assert iamdb.get_valkey().ping()
    seen = iamdb.info("valkey")
    assert (seen.logins, seen.reconnects, seen.reauthentications) == (2, 1, 0)
    assert client is iamdb.get_valkey()


def test_re_authentication_never_touches_a_connection_inside_a_transaction(
    stack: Any, stack_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IAMDB_VALKEY_REAUTH_SECONDS", "1")
    started = time.time()
    client = iamdb.get_valkey()
    with client.pipeline() as pipe:
        pipe.watch("iamdb:tx")  # immediate mode: the pipeline holds its connection
        pipe.multi()
        pipe.set("iamdb:tx", "done")
        time.sleep(1.2)
        new_invocation(monkeypatch)
        iamdb.get_valkey()  # re-authenticates the idle connections, never this one
        assert pipe.execute() == [True]
    assert front_events(stack, "auth in multi", started) == []
    assert client.get("iamdb:tx") == b"done"


def test_connections_dropped_while_frozen_are_replaced_on_the_next_call(
    stack: Any, stack_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = iamdb.get_valkey()
    client.set("iamdb:freeze", "1")
    stack.valkey.close_all()  # a failover while the environment was frozen
    time.sleep(0.2)
    new_invocation(monkeypatch)
    assert iamdb.get_valkey() is client
    assert client.get("iamdb:freeze") == b"1"
    seen = iamdb.info("valkey")
    assert (seen.logins, seen.reconnects) == (2, 1)


def test_an_environment_frozen_with_sigstop_reconnects_after_the_thaw(
    stack: Any, stack_env: Any
) -> None:
    from tests.lifecycle import Environment

    init = (
        "import iamdb\n"
        "def handler(event, context):\n"
        "    iamdb.set_lambda_context(context)\n"
        "    n = iamdb.get_valkey().incr('iamdb:lifecycle')\n"
        "    seen = iamdb.info('valkey')\n"
        "    return [n, seen.logins, seen.reconnects]\n"
    )
    with Environment(init, stack.env) as env:
        first = env.invoke()
        assert first.ok, first.message
        stack.valkey.close_all()  # dropped while the process is stopped
        time.sleep(0.3)
        second = env.invoke()
        third = env.invoke()
    assert second.ok and third.ok, second.message + third.message
    assert second.value[0] == first.value[0] + 1
    assert second.value[1:] == [2, 1] and third.value[1:] == [2, 1]


def test_a_user_the_policy_does_not_name_is_refused_as_on_aws(
    stack: Any, stack_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IAMDB_VALKEY_USER", "iamdb-unlisted")
    monkeypatch.setenv("IAMDB_AUTH_RETRIES", "0")
    with pytest.raises(iamdb.AuthError) as caught:
        iamdb.get_valkey()
    error = caught.value
    assert (error.engine, error.instance, error.attempts) == ("valkey", "valkey", 1)
    assert "elasticache:Connect" in str(error) and "user:iamdb-unlisted" in str(error)
    assert stack.valkey.events[-1].reason == "not authorized"


def test_a_token_for_another_cache_is_refused(
    stack: Any, stack_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IAMDB_VALKEY_CACHE_NAME", "someone-elses-cache")
    monkeypatch.setenv("IAMDB_AUTH_RETRIES", "0")
    with pytest.raises(iamdb.AuthError, match="IAMDB_VALKEY_CACHE_NAME"):
        iamdb.get_valkey()
    assert stack.valkey.events[-1].reason == "wrong host"


def test_a_cache_without_tls_is_a_connect_error_that_says_so(
    stack: Any, stack_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IAMDB_VALKEY_PORT", str(stack.redis.port))  # the server, plaintext
    monkeypatch.setenv("IAMDB_VALKEY_CONNECT_TIMEOUT", "1")
    before = len(stack.valkey.events)
    with pytest.raises(iamdb.ConnectError, match="in-transit encryption"):
        iamdb.get_valkey()
    assert len(stack.valkey.events) == before  # no token went anywhere


def test_no_secret_in_errors_logs_or_reprs(
    stack: Any, secrets: Secrets, caplog: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = iamdb.get_valkey()
    secrets.see("client repr", repr(client))
    secrets.see("pool repr", repr(client.connection_pool))
    monkeypatch.setenv("IAMDB_VALKEY_USER", "iamdb-unlisted")
    monkeypatch.setenv("IAMDB_AUTH_RETRIES", "1")
    iamdb.reset()
    with pytest.raises(iamdb.AuthError) as caught:
        iamdb.get_valkey()
    secrets.see_exception("refused", caught.value)
    # a refusal on a connection the pool opens by itself: valkey-py's own error, detached
    handle = iamdb._registry.default.valkey_handle()
    lazy = handle._client or iamdb._valkey.client.new_client(handle.cfg, handle.provider)
    with pytest.raises(Exception) as raw:
        lazy.ping()
    secrets.see_exception("lazy refusal", raw.value)
    see_logs(secrets, caplog)
    assert secrets.tokens and secrets.leaks() == []


def test_the_real_cli_logs_in_with_the_printed_token(stack: Any, stack_env: Any) -> None:
    env = stack.env
    command = (
        f"redis-cli --tls --cacert {env['IAMDB_VALKEY_SSLROOTCERT']} -h localhost "
        f"-p {env['IAMDB_VALKEY_PORT']} --user {env['IAMDB_VALKEY_USER']} "
        '--pass "$(python -m iamdb valkey-token)" --no-auth-warning ACL WHOAMI'
    )
    import os
    import sys
    from pathlib import Path

    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    out = subprocess.run(
        ["bash", "-c", command],
        env={**os.environ, **env, "PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "iamdb-app"
    assert stack.valkey.events[-1].ok


def test_the_example_function_runs_from_the_layer_like_lambda(
    stack: Any, stack_env: Any, tmp_path: Any
) -> None:
    """template.yaml's ValkeyExampleFunction through devstack invoke (awslambdaric, the built
    layer): its policy lets it in, a warm call reuses the client, a dropped connection is
    replaced at the next invocation."""
    import io
    import json

    from devstack.sam.invoke import build_layers, environment, prepare
    from layerbuild.targets import find_python
    from tests.paths import ROOT

    if find_python("3.12") is None:
        pytest.skip("python3.12 (the template's runtime) is not installed")
    build_layers()
    env_json, _ = stack.write_env_files(tmp_path)
    payload = (ROOT / "events" / "valkey.json").read_bytes()
    log = io.StringIO()
    with environment(prepare("ValkeyExampleFunction", env_vars=env_json), log=log) as env:
        cold = env.invoke(payload)
        warm = env.invoke(payload)
        stack.valkey.close_all()
        thawed = env.invoke(payload)
    assert cold.ok and warm.ok and thawed.ok, log.getvalue()[-3000:]
    bodies = [json.loads(r.payload["body"]) for r in (cold, warm, thawed)]
    assert [b["reused_connection"] for b in bodies] == [False, True, False]
    assert bodies[0]["user"] == "iamdb-app" and bodies[2]["hits"] == bodies[0]["hits"] + 2


def test_cluster_mode_logs_every_node_connection_in_and_re_authenticates_them(
    stack: Any, stack_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """get_valkey("orders"): devstack's cache in cluster mode (one shard announcing its front)."""
    import valkey

    from iamdb._valkey.client import pools

    monkeypatch.setenv("IAMDB_VALKEY_ORDERS_REAUTH_SECONDS", "1")
    started = time.time()
    client = iamdb.get_valkey("orders")
    assert isinstance(client, valkey.ValkeyCluster)
    for key in ("a", "b", "{user:1}c"):  # keys in many slots, one shard
        client.set(f"iamdb:{key}", key)
        assert client.get(f"iamdb:{key}") == key.encode()
    connections = [c for pool in pools(client) for c in pool._available_connections]
    assert connections and all(c.logged_in_at is not None for c in connections)
    time.sleep(1.2)
    new_invocation(monkeypatch)
    assert iamdb.get_valkey("orders") is client and client.ping()
    seen = iamdb.info("valkey", "orders")
    assert seen.reauthentications >= 1 and seen.reconnects == 0
    assert all(e.ok for e in front_events(stack, "auth", started) if e.user == "iamdb-app")
