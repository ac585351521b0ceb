"""get_dsql() and dsql_transaction() against devstack's Aurora DSQL endpoint.

The endpoint verifies every token as DSQL does (service ``dsql``, ``DbConnectAdmin`` for admin,
``DbConnect`` and an ``AWS IAM GRANT`` for other roles, lifetime from ``X-Amz-Expires``, no
port), its reaper drops connections older than its max age as DSQL does after an hour, and it is
a real PostgreSQL, so a SERIALIZABLE transaction gives a real 40001. The refusal for the
connection rate (53400) comes from a small server of our own that answers the PostgreSQL
startup like DSQL does, to real libpq over verified TLS.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import psycopg
import pytest

import iamdb
from devstack.stack import DSQL_ENDPOINT, DSQL_USER, Stack
from iamdb._core.runtime import Runtime
from iamdb._registry import Registry
from tests.fakes import RecordingTelemetry
from tests.integration.kept_alive import kept_alive
from tests.integration.test_fleet_limiter import table_item
from tests.localserver import LocalServer, tls_context

pytestmark = pytest.mark.integration


def registry(clock: Any = time.time) -> tuple[Registry, RecordingTelemetry]:
    """A registry of its own over the test's environment, its metrics recorded."""
    telemetry = RecordingTelemetry()
    runtime = Runtime(environ=dict(os.environ), clock=clock)
    return Registry(runtime=runtime, telemetry=telemetry), telemetry


@pytest.fixture
def reg(stack_env: dict[str, str]) -> Iterator[tuple[Registry, RecordingTelemetry]]:
    made = registry()
    try:
        yield made
    finally:
        made[0].reset()


def params(token: str) -> dict[str, str]:
    return dict(parse_qsl(token.split("?", 1)[1]))


def events(stack: Stack, since: int) -> list[Any]:
    return [e for e in list(stack.verifier.events)[since:] if e.server == "dsql"]


def points(telemetry: RecordingTelemetry, metric: str) -> int:
    """How many data points ``metric`` got (ThrottleWaitMs: one per permit)."""
    return sum(len(values.get(metric, [])) for _, values in telemetry.emitted)


def test_admin_logs_in_with_a_db_connect_admin_token_over_verified_tls(
    stack: Stack, stack_env: dict[str, str]
) -> None:
    before = len(stack.verifier.events)
    conn = iamdb.get_dsql()
    row = conn.execute("SELECT current_user, current_database()").fetchone()
    assert row == ("admin", "postgres")
    # HOST is an IP (a tunnel): libpq got the cluster name for SNI and the certificate check.
    assert (conn.info.host, conn.info.hostaddr) == (DSQL_ENDPOINT, "127.0.0.1")
    assert conn.pgconn.ssl_in_use
    token = iamdb._registry.default.managed("dsql").last_token
    assert token is not None and token.value.startswith(f"{DSQL_ENDPOINT}/?")
    assert params(token.value)["Action"] == "DbConnectAdmin"
    assert params(token.value)["X-Amz-Expires"] == "900"
    for _ in range(5):
        assert iamdb.get_dsql() is conn  # the singleton, reused without a login
    [event] = events(stack, before)
    assert (event.user, event.ok) == ("admin", True)


def test_a_custom_role_logs_in_with_db_connect(
    stack: Stack, stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The developer's key is granted the custom role (devstack's AWS IAM GRANT)."""
    dev = stack.aws.developer_credentials
    assert dev is not None
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", dev.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", dev.secret_key)
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    monkeypatch.setenv("IAMDB_DSQL_USER", DSQL_USER)
    conn = iamdb.get_dsql()
    assert conn.execute("SELECT current_user").fetchone() == (DSQL_USER,)
    token = iamdb._registry.default.managed("dsql").last_token
    assert token is not None and params(token.value)["Action"] == "DbConnect"


def test_a_role_the_policy_does_not_allow_is_an_auth_error_naming_the_action(
    stack: Stack, stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """template.yaml gives the function dsql:DbConnectAdmin only: DbConnect is refused."""
    monkeypatch.setenv("IAMDB_DSQL_USER", DSQL_USER)
    monkeypatch.setenv("IAMDB_AUTH_RETRIES", "0")
    before = len(stack.verifier.events)
    with pytest.raises(iamdb.AuthError) as info:
        iamdb.get_dsql()
    message = str(info.value)
    assert "dsql:DbConnect " in message and f"AWS IAM GRANT {DSQL_USER}" in message
    assert "IamDbAuthConnectionFailureThrottling" not in message  # RDS's, not DSQL's
    assert [e.reason for e in events(stack, before)] == ["not authorized"]


@pytest.mark.parametrize(("lifetime", "ok"), [("3600", True), ("", False)])
def test_the_token_lifetime_is_what_the_cluster_holds_it_to(
    stack: Stack,
    stack_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    lifetime: str,
    ok: bool,
) -> None:
    """Signed 25 minutes ago: alive with a 3,600 s lifetime, expired with the default 900 s."""
    monkeypatch.delenv("IAMDB_THROTTLE_TABLE")  # a past clock would be the fleet queue's too
    monkeypatch.setenv("IAMDB_DSQL_TOKEN_EXPIRES_SECONDS", lifetime)
    monkeypatch.setenv("IAMDB_AUTH_RETRIES", "0")
    reg, _ = registry(clock=lambda: time.time() - 1500)
    before = len(stack.verifier.events)
    try:
        if ok:
            assert reg.get_dsql().execute("SELECT 1").fetchone() == (1,)
        else:
            with pytest.raises(iamdb.AuthError):
                reg.get_dsql()
    finally:
        reg.reset()
    assert [e.reason for e in events(stack, before)] == ["ok" if ok else "expired"]


def _wait_for(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + 60  # a bound on the wait, not a measurement
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_an_old_connection_is_replaced_between_invocations_before_the_cluster_drops_it(
    stack: Stack, stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """iamdb's max age (1 s) below the endpoint's (4 s): every invocation gets a connection
    iamdb replaced in time, and the reaper never kills one iamdb handed out."""
    monkeypatch.setenv("IAMDB_DSQL_MAX_AGE_SECONDS", "1")
    reaper, original = stack.dsql_reaper, stack.dsql_reaper.max_age
    reg, telemetry = registry()
    handed: list[tuple[Any, int]] = []  # (connection, its backend's pid)
    try:
        reaper.max_age = 4.0
        while len({pid for _, pid in handed}) < 4:  # three replacements
            conn = reg.get_dsql()  # an invocation: get, work, return
            assert conn.execute("SELECT 1").fetchone() == (1,)
            handed.append((conn, conn.info.backend_pid))
            time.sleep(0.25)
        last = handed[-1][0]
        assert all(c.closed for c, _ in handed if c is not last)  # closed by iamdb
        reg.managed("dsql").probe.flush()
        assert telemetry.totals("dsql").get("Reconnects", 0) == 0  # none was found dead
    finally:
        reaper.max_age = original
        reg.reset()
    pids = {pid for _, pid in handed}
    assert not [e for e in reaper.events if e.pid in pids]


def test_an_open_transaction_keeps_its_connection_past_the_max_age(
    stack: Stack, stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IAMDB_DSQL_MAX_AGE_SECONDS", "1")
    reg, _ = registry()
    try:
        conn = reg.get_dsql()
        opened = time.monotonic()
        with conn.transaction():
            conn.execute("SELECT 1")
            _wait_for(lambda: time.monotonic() - opened > 1.5, "the max age")
            assert reg.get_dsql() is conn  # mid-transaction: never replaced
            conn.execute("SELECT 2")
        assert reg.get_dsql() is not conn and conn.closed  # idle again: replaced
    finally:
        reg.reset()


def test_a_connection_the_cluster_dropped_while_idle_is_replaced_on_the_next_call(
    stack: Stack, reg: tuple[Registry, RecordingTelemetry]
) -> None:
    registry_, telemetry = reg
    reaper, original = stack.dsql_reaper, stack.dsql_reaper.max_age
    first = registry_.get_dsql()
    pid = first.info.backend_pid
    try:
        reaper.max_age = 1.0  # DSQL's hour, shortened: the environment was frozen that long
        _wait_for(lambda: any(e.pid == pid for e in reaper.events), "the reaper")
    finally:
        reaper.max_age = original
    second = registry_.get_dsql()
    assert second is not first and second.execute("SELECT 1").fetchone() == (1,)
    registry_.managed("dsql").probe.flush()
    assert telemetry.totals("dsql")["Reconnects"] == 1


def test_every_connection_takes_a_fleet_ticket_on_the_clusters_queue(
    stack: Stack, reg: tuple[Registry, RecordingTelemetry]
) -> None:
    """RDS does not count a reused token; DSQL counts every connection, so each one takes a
    permit and a ticket, from the queue of the cluster endpoint (no port)."""
    registry_, telemetry = reg
    assert stack.dsql is not None and stack.env["IAMDB_THROTTLE_TABLE"]
    first = registry_.get_dsql()
    assert stack.dsql.kill_connections("admin") >= 1
    _wait_for(lambda: _dead(first), "the goodbye")
    second = registry_.get_dsql()
    assert second is not first and second.execute("SELECT 1").fetchone() == (1,)
    registry_.managed("dsql").probe.flush()
    totals = telemetry.totals("dsql")
    assert totals["ConnectionsOpened"] == 2 and totals["TokensSigned"] == 1  # one token
    assert points(telemetry, "ThrottleWaitMs") == 2 and totals.get("LimiterFailOpen", 0) == 0
    assert table_item(DSQL_ENDPOINT.lower()) is not None


def _dead(conn: Any) -> bool:
    """The server's goodbye is readable on the socket (what get_dsql()'s poll sees)."""
    import select

    return bool(select.select([conn.pgconn.socket], [], [], 0)[0])


# -- transactions that conflict ---------------------------------------------------------------


@pytest.fixture
def table(stack: Stack, reg: tuple[Registry, RecordingTelemetry]) -> Iterator[str]:
    name = f"dsql_occ_{uuid.uuid4().hex[:8]}"
    conn = reg[0].get_dsql()
    conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v int NOT NULL)")
    conn.execute(f"INSERT INTO {name} VALUES (1, 0), (2, 0)")
    yield name
    reg[0].get_dsql().execute(f"DROP TABLE {name}")


@pytest.fixture
def other(stack: Stack) -> Iterator[psycopg.Connection[Any]]:
    """A second session (another Lambda environment) on the DSQL endpoint."""
    assert stack.dsql is not None and stack.tls is not None
    with psycopg.connect(
        host=DSQL_ENDPOINT,
        hostaddr="127.0.0.1",
        port=stack.dsql.port,
        user="admin",
        dbname="postgres",
        password=stack.token("dsql", "admin"),
        sslmode="verify-full",
        sslrootcert=str(stack.tls.ca),
        autocommit=True,
    ) as conn:
        yield conn


def skewed_write(table: str, other: psycopg.Connection[Any], conflicts: int) -> Any:
    """A transaction function whose first ``conflicts`` runs race ``other`` into a write skew:
    both read the table, each updates a different row, ``other`` commits first. SERIALIZABLE
    PostgreSQL then refuses ours with 40001, as DSQL's optimistic concurrency does."""
    runs: list[int] = []

    def fn(conn: psycopg.Connection[Any]) -> int:
        runs.append(1)
        conn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        row = conn.execute(f"SELECT sum(v) FROM {table}").fetchone()
        if len(runs) <= conflicts:
            with other.transaction():
                other.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
                other.execute(f"SELECT sum(v) FROM {table}")
                other.execute(f"UPDATE {table} SET v = v + 1 WHERE id = 1")
        conn.execute(f"UPDATE {table} SET v = v + 1 WHERE id = 2")
        return int(row[0]) if row else -1

    fn.runs = runs  # type: ignore[attr-defined]
    return fn


def test_a_real_serialization_conflict_is_retried_in_a_new_transaction(
    reg: tuple[Registry, RecordingTelemetry], table: str, other: psycopg.Connection[Any]
) -> None:
    registry_, telemetry = reg
    fn = skewed_write(table, other, conflicts=1)
    seen = registry_.dsql_transaction(fn)
    assert len(fn.runs) == 2 and seen == 1  # the second run saw the other's committed write
    rows = registry_.get_dsql().execute(f"SELECT id, v FROM {table} ORDER BY id").fetchall()
    assert rows == [(1, 1), (2, 1)]  # the first run left nothing behind
    assert telemetry.totals("dsql")["TransactionRetries"] == 1


def test_conflicts_beyond_the_attempts_are_a_conflict_error_holding_no_secret(
    stack: Stack,
    reg: tuple[Registry, RecordingTelemetry],
    table: str,
    other: psycopg.Connection[Any],
) -> None:
    registry_, _ = reg
    fn = skewed_write(table, other, conflicts=5)
    with pytest.raises(iamdb.ConflictError, match=r"2 times \(SQLSTATE 40001") as info:
        registry_.dsql_transaction(fn, attempts=2)
    assert len(fn.runs) == 2
    token = registry_.managed("dsql").last_token
    assert token is not None
    secrets = (token.value, params(token.value)["X-Amz-Signature"],
               stack.env["AWS_SECRET_ACCESS_KEY"], stack.env["AWS_SESSION_TOKEN"])  # fmt: skip
    leaks = [path for path, text in kept_alive(info.value) if any(s in text for s in secrets)]
    assert not leaks


# -- the cluster refuses new connections for their rate ---------------------------------------

_SSL_REQUEST = 80877103
_GSS_REQUEST = 80877104


def _answer_rate_exceeded(tls: ssl.SSLContext) -> Any:
    """A server answering the PostgreSQL startup as DSQL does beyond 100 connections/s."""

    def handler(conn: socket.socket, server: LocalServer) -> None:
        while True:  # SSLRequest (and GSSENCRequest, refused) before TLS
            length, code = struct.unpack("!II", _read(conn, 8))
            if code == _GSS_REQUEST:
                conn.sendall(b"N")
                continue
            assert (length, code) == (8, _SSL_REQUEST)
            conn.sendall(b"S")
            break
        with tls.wrap_socket(conn, server_side=True) as wrapped:
            (length,) = struct.unpack("!I", _read(wrapped, 4))
            _read(wrapped, length - 4)  # the StartupMessage: user, database
            fields = b"".join(
                kind + text + b"\0"
                for kind, text in (
                    (b"S", b"FATAL"),
                    (b"V", b"FATAL"),
                    (b"C", b"53400"),
                    (b"M", b"Unable to accept connection, rate exceeded"),
                )
            )
            body = fields + b"\0"
            wrapped.sendall(b"E" + struct.pack("!I", len(body) + 4) + body)

    return handler


def _read(conn: Any, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        assert chunk, "the client closed early"
        data += chunk
    return data


def test_a_rate_refusal_is_retried_then_a_throttle_error_holding_no_secret(
    stack: Stack, stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert stack.tls is not None
    with LocalServer(_answer_rate_exceeded(tls_context(stack.tls))) as server:
        monkeypatch.setenv("IAMDB_DSQL_PORT", str(server.port))
        monkeypatch.setenv("IAMDB_AUTH_RETRIES", "1")
        reg, telemetry = registry()
        try:
            with pytest.raises(iamdb.ThrottleError) as info:
                reg.get_dsql()
            token = reg.tokens.get(reg.config("dsql").target)
        finally:
            reg.reset()
    assert not server.errors and server.accepted == 2  # retried once, with backoff
    message = str(info.value)
    assert "SQLSTATE 53400" in message and "rate exceeded" in message
    assert "2 attempts over" in message and "IAMDB_DSQL_CONNECT_RATE" in message
    totals = telemetry.totals("dsql")
    assert totals["ServerThrottled"] == 2 and totals.get("AuthFailures", 0) == 0
    secrets = (token.value, stack.env["AWS_SECRET_ACCESS_KEY"], stack.env["AWS_SESSION_TOKEN"])
    assert not [p for p, text in kept_alive(info.value) if any(s in text for s in secrets)]
