"""A throwaway MariaDB whose IAM users log in the way they do on RDS.

RDS for MySQL/MariaDB asks the client for ``mysql_clear_password`` and checks the
password as an IAM token. devstack does the same with a small server plugin in C
(``plugin/iamdb_auth.c``): the plugin forwards user name and token over a Unix socket
to a bridge in this process, which calls ``verify(user, token)`` and answers with a
verdict. Users are created ``IDENTIFIED VIA iamdb_auth REQUIRE SSL``; the server
presents a certificate from devstack's CA.

Slow steps are cached under ``${XDG_CACHE_HOME:-~/.cache}/iamdb-devstack/``: the
compiled plugin (keyed by source, server version and compiler flags) and a freshly
installed data directory (keyed by server version and install options), which is
copied instead of running ``mariadb-install-db`` again (about 0.03 s against 0.5 s).
Cached files are copied into the workdir, because when we run as root the server's
account cannot read ``/root/.cache``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from devstack.procs import RunAs, make_traversable, which_or_fail
from devstack.tls import TlsFiles

if TYPE_CHECKING:
    import pymysql.connections

PLUGIN_SOURCE = Path(__file__).with_name("plugin") / "iamdb_auth.c"
PLUGIN_NAME = "iamdb_auth"
INCLUDE_CANDIDATES = ("/usr/include/mariadb/server", "/usr/include/mysql/server")
CFLAGS = ("-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-DMYSQL_DYNAMIC_PLUGIN")
# Small InnoDB files and buffers: a test server starts, copies and stops faster.
INNODB_OPTIONS = (
    "--innodb-log-file-size=8M",
    "--innodb-buffer-pool-size=16M",
    "--innodb-data-file-path=ibdata1:10M:autoextend",
)
SERVER_OPTIONS = (
    *INNODB_OPTIONS,
    "--innodb-flush-log-at-trx-commit=2",
    "--innodb-doublewrite=0",
    "--performance-schema=OFF",
    "--key-buffer-size=1M",
    "--aria-pagecache-buffer-size=1M",
    "--skip-log-bin",
    "--max-allowed-packet=16M",
)
INSTALL_OPTIONS = ("--auth-root-authentication-method=normal", "--skip-test-db", *INNODB_OPTIONS)
DEFAULT_MAX_CONNECTIONS = 151  # MariaDB's own default; it admits one more, for SUPER (root)
BRIDGE_TIMEOUT = 5.0  # seconds; the plugin also gives up after 5 s
MAX_FIELD = 64 * 1024  # larger than any token (about 1,500 characters with a session token)
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes, NUL included


def cache_dir() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/iamdb-devstack`` (created)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "iamdb-devstack"
    path.mkdir(parents=True, exist_ok=True)
    return path


def server_version(mariadbd: str) -> str:
    """``mariadbd --version``, which also names the distribution build."""
    out = subprocess.run([mariadbd, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _include_dir() -> str:
    override = os.environ.get("IAMDB_DEVSTACK_MARIADB_INCLUDE")
    for cand in (override, *INCLUDE_CANDIDATES):
        if cand and Path(cand, "mysql", "plugin_auth.h").is_file():
            return cand
    raise RuntimeError(
        "devstack: MariaDB server plugin headers (mysql/plugin_auth.h) not found; "
        "install libmariadbd-dev or set IAMDB_DEVSTACK_MARIADB_INCLUDE"
    )


def build_plugin(mariadbd: str, cache: Path | None = None) -> Path:
    """Compile ``iamdb_auth.so`` once per (source, server version, flags); return the cache file."""
    gcc = which_or_fail("gcc")
    flags = [*CFLAGS, f"-I{_include_dir()}"]
    key = hashlib.sha256()
    for part in (
        PLUGIN_SOURCE.read_bytes(),
        server_version(mariadbd).encode(),
        " ".join(flags).encode(),
    ):
        key.update(hashlib.sha256(part).digest())
    target = (cache or cache_dir()) / f"iamdb_auth-{key.hexdigest()[:16]}.so"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        cmd = [gcc, *flags, "-o", str(out), str(PLUGIN_SOURCE)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(
                f"devstack: building the MariaDB plugin failed:\n{res.stderr[-2000:]}"
            )
        os.replace(out, target)  # atomic: concurrent builders agree on the result
    return target


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ValueError("truncated request")
        buf += chunk
    return bytes(buf)


def read_request(sock: socket.socket) -> tuple[str, str]:
    """Parse the plugin's request: ``IAM1`` then length-prefixed user and token."""
    if _recv_exact(sock, 4) != b"IAM1":
        raise ValueError("bad magic")
    fields = []
    for _ in range(2):
        size = int.from_bytes(_recv_exact(sock, 4), "big")
        if size > MAX_FIELD:
            raise ValueError("field too long")
        fields.append(_recv_exact(sock, size).decode("utf-8"))
    return fields[0], fields[1]


def encode_verdict(ok: bool, reason: str) -> bytes:
    """``A`` or ``R`` and a short printable reason (the plugin logs it; never put a token in it)."""
    clean = "".join(c if c.isprintable() else "?" for c in reason)[:200]
    return (b"A" if ok else b"R") + clean.encode("ascii", "replace")


class _BridgeHandler(socketserver.BaseRequestHandler):
    """One plugin request: read it, ask ``verify``, write the verdict, close."""

    server: _BridgeServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(BRIDGE_TIMEOUT)
        try:
            user, token = read_request(sock)
        except (OSError, ValueError):
            self._reply(False, "malformed request")
            return
        try:
            ok, reason = self.server.verify(user, token)
        except Exception as exc:  # a broken verifier refuses the login, it never lets it in
            ok, reason = False, f"verifier raised {type(exc).__name__}"
        self._reply(ok is True, reason)

    def _reply(self, ok: bool, reason: str) -> None:
        with contextlib.suppress(OSError):  # the plugin gave up (timeout) and refused already
            self.request.sendall(encode_verdict(ok, reason))


class _BridgeServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, path: Path, verify: Callable[[str, str], tuple[bool, str]]) -> None:
        self.verify = verify
        super().__init__(str(path), _BridgeHandler)


class VerifierBridge:
    """The Unix socket server that the plugin asks; a thread per login."""

    def __init__(
        self, path: Path, verify: Callable[[str, str], tuple[bool, str]], run_as: RunAs | None
    ) -> None:
        self.path, self._verify, self._run_as = path, verify, run_as
        self._server: _BridgeServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._server is not None:
            return
        self.path.unlink(missing_ok=True)
        server = _BridgeServer(self.path, self._verify)
        os.chmod(self.path, 0o600)
        if self._run_as is not None:
            os.chown(self.path, self._run_as.uid, self._run_as.gid)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="mariadb-verifier",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self.path.unlink(missing_ok=True)


class MariaDB:
    """A MariaDB in ``workdir`` on 127.0.0.1:``port``, with TLS and IAM-style users."""

    def __init__(
        self,
        *,
        workdir: Path,
        port: int,
        tls: TlsFiles,
        verify: Callable[[str, str], tuple[bool, str]],
        run_as: RunAs | None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self.workdir = workdir
        self.max_connections = max_connections
        self.port = port
        self.run_as = run_as
        self._tls_source = tls
        self.datadir = workdir / "data"
        self.plugin_dir = workdir / "plugin"
        self.tls_dir = workdir / "tls"
        self.log_path = workdir / "mariadbd.log"
        self.pid_path = workdir / "mariadbd.pid"
        self.socket_path = workdir / "run" / "mysqld.sock"
        self.plugin_socket_path = workdir / "run" / "verifier.sock"
        for sock in (self.socket_path, self.plugin_socket_path):
            if len(os.fsencode(sock)) > SUN_PATH_MAX:
                raise RuntimeError(f"devstack: socket path too long for AF_UNIX: {sock}")
        self.bridge = VerifierBridge(self.plugin_socket_path, verify, run_as)
        self._proc: subprocess.Popen[bytes] | None = None
        self._mariadbd = which_or_fail("mariadbd", "/usr/sbin")

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Prepare the workdir (first time), start the verifier bridge and the server."""
        if self._proc is not None:
            return
        self._prepare()
        self.bridge.start()
        try:
            self._spawn()
        except BaseException:
            self.bridge.stop()
            raise

    def stop(self) -> None:
        """SIGTERM the server and wait; stop the bridge. Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.bridge.stop()

    def restart(self) -> None:
        """Stop and start again: same port, same data directory, users and data kept."""
        self.stop()
        self.start()

    # -- administration --------------------------------------------------------------------

    def admin(self) -> pymysql.connections.Connection:
        """A root connection over the Unix socket (no password, no TLS; autocommit)."""
        import pymysql

        return pymysql.connect(
            unix_socket=str(self.socket_path),
            user="root",
            password="",
            ssl_disabled=True,
            connect_timeout=5,
            read_timeout=30,
            write_timeout=30,
            autocommit=True,
        )

    def create_iam_user(self, user: str, database: str) -> None:
        """Create ``user`` (IAM login, TLS required) and ``database``, and grant it all on it."""
        _check_identifier(user)
        _check_identifier(database)
        with self.admin() as conn, conn.cursor() as cur:
            cur.execute(
                f"CREATE OR REPLACE USER %s@'%%' IDENTIFIED VIA {PLUGIN_NAME} REQUIRE SSL", (user,)
            )
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{database}`")
            cur.execute(f"GRANT ALL ON `{database}`.* TO %s@'%%'", (user,))

    def limit_user(self, user: str, connections: int | None) -> None:
        """``MAX_USER_CONNECTIONS``: at most ``connections`` sessions of ``user`` (None: no
        limit); new logins beyond it get error 1203, after authentication, as on RDS."""
        _check_identifier(user)
        with self.admin() as conn, conn.cursor() as cur:
            cur.execute("ALTER USER %s@'%%' WITH MAX_USER_CONNECTIONS %s", (user, connections or 0))

    def sessions(self, user: str) -> int:
        """How many sessions ``user`` has open now (each holds a connection slot)."""
        with self.admin() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s", (user,)
            )
            row = cur.fetchone()
        return int(row[0]) if row else 0

    def kill_connections(self, user: str) -> int:
        """KILL every connection of ``user``; return how many were killed."""
        import pymysql

        killed = 0
        with self.admin() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s AND ID <> "
                "CONNECTION_ID()",
                (user,),
            )
            for (conn_id,) in cur.fetchall():
                try:
                    cur.execute(f"KILL CONNECTION {int(conn_id)}")
                    killed += 1
                except pymysql.err.OperationalError as exc:
                    if exc.args[0] != 1094:  # unknown thread id: it left on its own
                        raise
        return killed

    def set_read_only(self, on: bool) -> None:
        """Stop (or allow again) writes by every user without ``READ ONLY ADMIN``, as on a
        demoted writer or a switchover's old blue (``read_only``: writes fail with 1290)."""
        with self.admin() as conn, conn.cursor() as cur:
            cur.execute(f"SET GLOBAL read_only = {1 if on else 0}")

    # -- internals -------------------------------------------------------------------------

    def _prepare(self) -> None:
        for d in (self.workdir, self.plugin_dir, self.tls_dir, self.socket_path.parent):
            d.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(build_plugin(self._mariadbd), self.plugin_dir / f"{PLUGIN_NAME}.so")
        os.chmod(self.plugin_dir / f"{PLUGIN_NAME}.so", 0o755)
        for src in (self._tls_source.ca, self._tls_source.cert, self._tls_source.key):
            shutil.copyfile(src, self.tls_dir / src.name)
        os.chmod(self.tls_dir / self._tls_source.key.name, 0o600)
        if not (self.datadir / "mysql").is_dir():
            self._install_datadir()
        make_traversable(self.workdir)
        if self.run_as is not None:
            self.run_as.chown(self.workdir)

    def _install_datadir(self) -> None:
        """Copy the cached template data dir, or run mariadb-install-db and cache its result."""
        key = hashlib.sha256(
            (server_version(self._mariadbd) + " ".join(INSTALL_OPTIONS)).encode()
        ).hexdigest()[:16]
        template = cache_dir() / f"mariadb-datadir-{key}"
        if self.datadir.exists():
            shutil.rmtree(self.datadir)
        if template.is_dir():
            shutil.copytree(template, self.datadir, symlinks=True)
            return
        self._run_install_db()
        with tempfile.TemporaryDirectory(dir=template.parent) as tmp:
            staged = Path(tmp) / "datadir"
            shutil.copytree(self.datadir, staged, symlinks=True)
            with contextlib.suppress(OSError):  # another run cached it first
                os.rename(staged, template)

    def _run_install_db(self) -> None:
        install = which_or_fail("mariadb-install-db", "/usr/bin", "/usr/sbin")
        self.datadir.mkdir(parents=True)
        cmd = [install, "--no-defaults", f"--datadir={self.datadir}", *INSTALL_OPTIONS]
        if self.run_as is not None:
            make_traversable(self.workdir)
            self.run_as.chown(self.workdir)
            cmd.append(f"--user={self.run_as.user}")
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.workdir)
        if res.returncode != 0:
            tail = (res.stdout + res.stderr)[-3000:]
            raise RuntimeError(f"devstack: mariadb-install-db failed:\n{tail}")

    def _command(self) -> list[str]:
        tls = self.tls_dir
        cmd = [
            self._mariadbd,
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket_path}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            f"--plugin-dir={self.plugin_dir}",
            f"--plugin-load-add={PLUGIN_NAME}.so",
            f"--iamdb-auth-socket={self.plugin_socket_path}",
            f"--ssl-ca={tls / self._tls_source.ca.name}",
            f"--ssl-cert={tls / self._tls_source.cert.name}",
            f"--ssl-key={tls / self._tls_source.key.name}",
            f"--pid-file={self.pid_path}",
            f"--log-error={self.log_path}",
            f"--tmpdir={self.workdir}",
            f"--max-connections={self.max_connections}",
            *SERVER_OPTIONS,
        ]
        if self.run_as is not None:
            cmd.append(f"--user={self.run_as.user}")
        return cmd

    def _spawn(self) -> None:
        out = open(self.workdir / "mariadbd.stderr", "ab")  # noqa: SIM115 - the child keeps it
        try:
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                cwd=self.workdir,
            )
        finally:
            out.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"devstack: mariadbd exited with {proc.returncode}:\n{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"devstack: mariadbd not ready after {START_TIMEOUT:.0f} s:\n{self._log_tail()}"
                )
            time.sleep(0.02)

    def _answers(self) -> bool:
        """True once root can log in over the Unix socket.

        The listening socket exists before the server is ready (it completes its start-up
        after that, and a SIGTERM in that window was seen to be ignored), so only a real
        login proves readiness.
        """
        import pymysql

        if not self.socket_path.exists():
            return False
        try:
            conn = pymysql.connect(
                unix_socket=str(self.socket_path),
                user="root",
                password="",
                ssl_disabled=True,
                connect_timeout=1,
                read_timeout=1,
            )
        except pymysql.err.MySQLError:
            return False
        conn.close()
        return True

    def _log_tail(self, chars: int = 3000) -> str:
        parts = []
        for p in (self.workdir / "mariadbd.stderr", self.log_path):
            if p.is_file():
                parts.append(p.read_text(errors="replace")[-chars:])
        return "\n".join(parts)


def _check_identifier(name: str) -> None:
    if not (0 < len(name) <= 64 and all(c.isascii() and (c.isalnum() or c == "_") for c in name)):
        raise ValueError(f"devstack: unsupported MySQL identifier {name!r}")
