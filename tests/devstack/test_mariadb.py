"""devstack's MariaDB: the iamdb_auth plugin, the verifier bridge and the server lifecycle.

A real mariadbd with the real C plugin; logins over real TLS sockets with PyMySQL. The
verifier is a fake that accepts tokens starting with ``good-token-<user>`` and records
every (user, token) it is asked about.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pymysql
import pytest

from devstack.mariadb import MariaDB
from devstack.procs import RunAs, free_port
from devstack.tls import TlsFiles, make_tls

pytestmark = pytest.mark.integration

USER, DB = "alice", "appdb"
SLOW = "slowpoke"  # this user's verification blocks until released, then says "accept"


class FakeVerifier:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.release_slow = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, user: str, token: str) -> tuple[bool, str]:
        with self._lock:
            self.calls.append((user, token))
        if user == SLOW:
            self.release_slow.wait(timeout=30)
            return True, "late accept"
        if token.startswith(f"good-token-{user}"):
            return True, "ok"
        return False, "bad token"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"), ["localhost"], ["127.0.0.1"])


@pytest.fixture(scope="module")
def verifier() -> FakeVerifier:
    return FakeVerifier()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tls: TlsFiles, verifier: FakeVerifier
) -> Iterator[MariaDB]:
    db = MariaDB(
        workdir=tmp_path_factory.mktemp("mariadb"),
        port=free_port(),
        tls=tls,
        verify=verifier,
        run_as=RunAs.for_servers("mysql"),
    )
    db.start()
    try:
        db.create_iam_user(USER, DB)
        db.create_iam_user(SLOW, "slowdb")
        yield db
    finally:
        verifier.release_slow.set()
        db.stop()
        db.stop()  # idempotent


def connect(
    server: MariaDB, tls: TlsFiles | None, password: str, user: str = USER, read_timeout: int = 5
) -> Any:
    """PyMySQL over TCP to ``localhost``: TLS with hostname check, or (``tls`` None) no TLS at all.

    PyMySQL 1.2 tries TLS by default ("preferred"), so plaintext needs ``ssl_disabled``.
    """
    kwargs: dict[str, Any] = {"ssl_disabled": True}
    if tls is not None:
        kwargs = {"ssl": ssl.create_default_context(cafile=str(tls.ca))}
    return pymysql.connect(
        host="localhost",
        port=server.port,
        user=user,
        password=password,
        database=None,
        connect_timeout=5,
        read_timeout=read_timeout,
        write_timeout=5,
        **kwargs,
    )


def scalar(conn: Any, sql: str) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


def refused(server: MariaDB, tls: TlsFiles | None, password: str, **kw: Any) -> int:
    with pytest.raises(pymysql.err.OperationalError) as info:
        connect(server, tls, password, **kw).close()
    return int(info.value.args[0])


def ssl_accepts(server: MariaDB) -> int:
    with server.admin() as conn, conn.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE 'Ssl_accepts'")
        return int(cur.fetchone()[1])


def test_plugin_loaded_with_socket_variable(server: MariaDB) -> None:
    with server.admin() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT PLUGIN_STATUS, PLUGIN_MATURITY, PLUGIN_TYPE FROM information_schema.PLUGINS "
            "WHERE PLUGIN_NAME = 'iamdb_auth'"
        )
        assert cur.fetchone() == ("ACTIVE", "Stable", "AUTHENTICATION")
        cur.execute("SELECT @@iamdb_auth_socket")
        assert cur.fetchone()[0] == str(server.plugin_socket_path)


def test_good_token_logs_in_over_verified_tls(
    server: MariaDB, tls: TlsFiles, verifier: FakeVerifier
) -> None:
    with connect(server, tls, f"good-token-{USER}") as conn:
        assert scalar(conn, "SELECT CURRENT_USER()") == f"{USER}@%"
        assert scalar(conn, "SHOW SESSION STATUS LIKE 'Ssl_version'") is not None
    assert (USER, f"good-token-{USER}") in verifier.calls  # no trailing NUL, nothing cut


def test_long_token_reaches_verifier_whole(
    server: MariaDB, tls: TlsFiles, verifier: FakeVerifier
) -> None:
    token = f"good-token-{USER}?Action=connect&X-Amz-Security-Token=" + "AbC%2F+=" * 200
    assert len(token) > 1600
    with connect(server, tls, token) as conn:
        assert scalar(conn, "SELECT 1") == 1
    assert (USER, token) in verifier.calls


def test_bad_token_is_refused_with_1045(
    server: MariaDB, tls: TlsFiles, verifier: FakeVerifier
) -> None:
    assert refused(server, tls, "forged-token") == 1045
    assert (USER, "forged-token") in verifier.calls
    assert refused(server, tls, "") == 1045  # empty password: refused without asking


def test_verifier_unreachable_refuses(server: MariaDB, tls: TlsFiles) -> None:
    moved = server.plugin_socket_path.with_name("moved.sock")
    server.plugin_socket_path.rename(moved)
    try:
        assert refused(server, tls, f"good-token-{USER}") == 1045
    finally:
        moved.rename(server.plugin_socket_path)
    with connect(server, tls, f"good-token-{USER}") as conn:
        assert scalar(conn, "SELECT 1") == 1


def test_hung_verifier_times_out_into_refusal(
    server: MariaDB, tls: TlsFiles, verifier: FakeVerifier
) -> None:
    # The fake would accept, but only after the plugin's 5 s timeout: the login must fail,
    # and the client must get an answer (1045) rather than hit its own 30 s read timeout.
    assert refused(server, tls, "any", user=SLOW, read_timeout=30) == 1045
    verifier.release_slow.set()


def test_non_tls_client_is_refused(server: MariaDB, verifier: FakeVerifier) -> None:
    token = f"good-token-{USER}-plaintext"
    tls_handshakes = ssl_accepts(server)
    assert refused(server, None, token) == 1045
    assert ssl_accepts(server) == tls_handshakes  # this client really was plaintext
    # MariaDB 10.11's plugin API cannot tell the plugin whether the connection is TLS, so
    # the server asks for the password first and enforces REQUIRE SSL afterwards: the token
    # did cross the network in clear. See devstack/plugin/README.md.
    assert (USER, token) in verifier.calls


def test_malformed_requests_do_not_break_the_bridge(server: MariaDB, tls: TlsFiles) -> None:
    for junk in (
        b"",
        b"GET / HTTP/1.0\r\n\r\n",
        b"IAM1\xff\xff\xff\xff",
        b"IAM1\x00\x00\x00\x05ab",
    ):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(server.plugin_socket_path))
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            assert s.recv(100).startswith(b"R")
    with connect(server, tls, f"good-token-{USER}") as conn:
        assert scalar(conn, "SELECT 1") == 1


def test_concurrent_logins(server: MariaDB, tls: TlsFiles) -> None:
    def login(i: int) -> str:
        password = f"good-token-{USER}-{i}" if i % 3 else f"bad-{i}"
        try:
            with connect(server, tls, password) as conn:
                return str(scalar(conn, "SELECT CURRENT_USER()"))
        except pymysql.err.OperationalError as exc:
            return f"refused {exc.args[0]}"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(login, range(24)))
    assert results == [f"{USER}@%" if i % 3 else "refused 1045" for i in range(24)]


def test_kill_connections_breaks_live_connection(server: MariaDB, tls: TlsFiles) -> None:
    conn = connect(server, tls, f"good-token-{USER}")
    try:
        assert scalar(conn, "SELECT 1") == 1
        assert server.kill_connections(USER) >= 1
        with pytest.raises((pymysql.err.OperationalError, pymysql.err.InterfaceError)):
            scalar(conn, "SELECT 1")
    finally:
        conn.close()
    assert server.kill_connections(USER) == 0


def test_restart_keeps_users_and_data(server: MariaDB, tls: TlsFiles) -> None:
    with connect(server, tls, f"good-token-{USER}") as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE IF NOT EXISTS {DB}.kept (v INT)")
        cur.execute(f"INSERT INTO {DB}.kept VALUES (42)")
        conn.commit()
    port = server.port
    server.restart()
    assert server.port == port
    with connect(server, tls, f"good-token-{USER}") as conn:
        assert scalar(conn, f"SELECT SUM(v) FROM {DB}.kept") == 42


def test_workdir_layout(server: MariaDB) -> None:
    assert server.socket_path.is_socket()
    assert server.plugin_socket_path.is_socket()
    assert Path(server.plugin_socket_path).parent == server.socket_path.parent
