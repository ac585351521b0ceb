"""A throwaway PostgreSQL whose TCP logins are RDS IAM tokens checked by devstack's verifier.

TCP clients must use TLS (``hostssl`` only). Members of ``rds_iam`` (as on RDS) authenticate
with ``ldap``: PostgreSQL sends the user name and the cleartext password (the token) to
devstack's LDAP bridge, which asks the verifier. Other roles, and roles that do not exist,
fail a SCRAM password exchange, as on RDS. The superuser ``postgres`` logs in over the Unix
socket in the work directory (``trust``) for administration. ``initdb`` output is cached
as a template under /tmp and copied, which is much faster than running ``initdb`` per stack.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from devstack.procs import RunAs, which_or_fail
from devstack.tls import TlsFiles

SUPERUSER = "postgres"
DEFAULT_MAX_CONNECTIONS = 100
RESERVED_CONNECTIONS = 3  # superuser_reserved_connections: what the application cannot use
IAM_ROLE = "rds_iam"  # as on RDS: members authenticate with IAM tokens
LDAP_PREFIX = "cn="
LDAP_SUFFIX = ",dc=iamdb"


def pg_bindir() -> str:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb`` (Debian layout)."""
    base = Path("/usr/lib/postgresql")
    versions = [p for p in base.glob("*/bin") if (p / "initdb").exists()] if base.is_dir() else []
    versions.sort(key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.name)] or [0])
    initdb = which_or_fail("initdb", *(str(p) for p in reversed(versions)))
    return str(Path(initdb).parent)


class Postgres:
    """One PostgreSQL cluster in ``workdir`` (data dir, Unix socket, log) on 127.0.0.1:``port``."""

    def __init__(
        self,
        *,
        workdir: Path,
        port: int,
        tls: TlsFiles,
        ldap_port: int,
        run_as: RunAs | None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self.workdir = workdir
        self.max_connections = max_connections
        self.port = port
        self.tls = tls
        self.ldap_port = ldap_port
        self.run_as = run_as
        self.data = workdir / "data"
        self.logfile = workdir / "postgresql.log"
        self.bindir = pg_bindir()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Create the cluster on first start, then start the server and wait until it is up."""
        if not (self.data / "PG_VERSION").exists():
            self._create_cluster()
        self._pg_ctl("start", "-l", str(self.logfile), "-t", "30")

    def stop(self) -> None:
        """Fast shutdown (disconnects clients); a no-op when the server is not running."""
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("stop", "-m", "fast", "-t", "30")

    def restart(self) -> None:
        """Stop and start again on the same port and data directory."""
        self.stop()
        self.start()

    # -- administration ----------------------------------------------------------------

    def admin(self) -> Any:
        """A psycopg connection as the superuser over the Unix socket (autocommit)."""
        import psycopg

        return psycopg.connect(
            host=str(self.workdir),
            port=self.port,
            user=SUPERUSER,
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        )

    def create_iam_user(self, user: str, database: str | None) -> None:
        """A LOGIN role in ``rds_iam`` without password (it logs in with a token only) that
        owns ``database`` (created if missing; None: no database of its own)."""
        from psycopg import sql

        with self.admin() as conn:
            for role, options in ((IAM_ROLE, "NOLOGIN"), (user, "LOGIN")):
                if not conn.execute(
                    "SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)
                ).fetchone():
                    create = sql.SQL("CREATE ROLE {} {}")
                    conn.execute(create.format(sql.Identifier(role), sql.SQL(options)))
            conn.execute(
                sql.SQL("GRANT {} TO {}").format(sql.Identifier(IAM_ROLE), sql.Identifier(user))
            )
            if database is None:
                return
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
            ).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            # An existing database changes hands too (DSQL's admin owns "postgres").
            conn.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(database), sql.Identifier(user)
                )
            )

    def limit_user(self, user: str, connections: int | None) -> None:
        """``ALTER ROLE ... CONNECTION LIMIT``: at most ``connections`` sessions of ``user``
        (None: no limit); applies to new logins at once. Refused beyond it with SQLSTATE 53300
        ``too many connections for role``, after authentication, as on RDS."""
        from psycopg import sql

        limit = -1 if connections is None else connections
        with self.admin() as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} CONNECTION LIMIT {}").format(
                    sql.Identifier(user), sql.Literal(limit)
                )
            )

    def sessions(self, user: str) -> int:
        """How many sessions ``user`` has open now (each holds a connection slot)."""
        with self.admin() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (user,)
            ).fetchone()
        return int(row[0]) if row else 0

    def kill_connections(self, user: str) -> int:
        """Terminate ``user``'s backends, waiting up to 5 s for each; return how many ended."""
        with self.admin() as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))"
                " FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()",
                (user,),
            ).fetchone()
        return int(row[0]) if row else 0

    def set_read_only(self, on: bool) -> None:
        """Stop (or allow again) writes in every new transaction, as on a demoted writer or a
        Blue/Green switchover's old blue (``default_transaction_read_only``, reloaded: sessions
        then answer ``transaction_read_only = on`` and refuse writes with SQLSTATE 25006).
        Returns once a new session sees it."""
        value = "on" if on else "off"
        with self.admin() as conn:
            conn.execute("SET default_transaction_read_only = off")
            conn.execute(f"ALTER SYSTEM SET default_transaction_read_only = {value}")
            conn.execute("SELECT pg_reload_conf()")
        until = time.monotonic() + 10
        while True:
            with self.admin() as conn:
                row = conn.execute("SHOW default_transaction_read_only").fetchone()
            if row is not None and row[0] == value:
                return
            if time.monotonic() > until:
                raise RuntimeError(f"devstack: default_transaction_read_only stayed {row}")
            time.sleep(0.01)

    # -- internals ---------------------------------------------------------------------

    def _create_cluster(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self._template(), self.data, symlinks=True)
        key = self.workdir / "server.key"
        shutil.copyfile(self.tls.key, key)
        os.chmod(key, 0o600)
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(self._settings())
        (self.data / "pg_hba.conf").write_text(self._hba())
        if self.run_as is not None:
            self.run_as.chown(self.workdir)
        os.chmod(self.data, 0o700)

    def _settings(self) -> str:
        values = {
            "listen_addresses": "127.0.0.1",
            "port": self.port,
            "unix_socket_directories": str(self.workdir),
            "ssl": "on",
            "ssl_cert_file": str(self.tls.cert),
            "ssl_key_file": str(self.workdir / "server.key"),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "32MB",
            "max_connections": self.max_connections,
            "superuser_reserved_connections": RESERVED_CONNECTIONS,
            "log_connections": "on",
        }
        lines = [f"{k} = {_quote(v) if isinstance(v, str) else v}" for k, v in values.items()]
        return "\n# devstack\n" + "\n".join(lines) + "\n"

    def _hba(self) -> str:
        ldap = (
            f"ldap ldapserver=127.0.0.1 ldapport={self.ldap_port}"
            f' ldapprefix="{LDAP_PREFIX}" ldapsuffix="{LDAP_SUFFIX}"'
        )
        # As on RDS: members of rds_iam log in with a token; anyone else (unknown roles too)
        # gets a password exchange (SCRAM, so no cleartext) that fails, never "no such role".
        return (
            "# devstack: admin over the Unix socket; TCP only with TLS\n"
            "local all all trust\n"
            f"hostssl all +{IAM_ROLE} 127.0.0.1/32 {ldap}\n"
            "hostssl all all 127.0.0.1/32 scram-sha-256\n"
        )

    def _template(self) -> Path:
        """A pristine ``initdb`` data directory, cached per user and PostgreSQL version."""
        version = Path(self.bindir).parent.name
        cache = Path(tempfile.gettempdir()) / f"iamdb-devstack-cache-{os.geteuid()}"
        cache.mkdir(mode=0o711, exist_ok=True)
        if cache.stat().st_uid != os.geteuid():  # someone else's directory: don't trust it
            raise RuntimeError(f"devstack: {cache} is not owned by us; remove it")
        os.chmod(cache, 0o711)
        target = cache / f"pg{version}"
        if (target / "PG_VERSION").is_file():
            return target
        build = Path(tempfile.mkdtemp(dir=cache))
        try:
            os.chmod(build, 0o711)
            if self.run_as is not None:
                os.chown(build, self.run_as.uid, self.run_as.gid)
            self._run(
                f"{self.bindir}/initdb", "-D", str(build / "data"), "--no-sync",
                "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C",
                "--no-instructions",
            )  # fmt: skip
            try:
                os.rename(build / "data", target)
            except OSError:
                if not (target / "PG_VERSION").is_file():  # not a lost race: a real error
                    raise
        finally:
            shutil.rmtree(build, ignore_errors=True)
        return target

    def _pg_ctl(self, action: str, *args: str) -> None:
        self._run(f"{self.bindir}/pg_ctl", action, "-D", str(self.data), "-w", *args)

    def _run(self, *cmd: str) -> None:
        """Run a PostgreSQL tool (as the server account when we are root); explain failures."""
        extra: dict[str, Any] = {}
        if self.run_as is not None:
            extra = {
                "user": self.run_as.uid,
                "group": self.run_as.gid,
                "extra_groups": [],
                "env": self.run_as.env(),
            }
        done = subprocess.run(
            cmd,
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            **extra,
        )
        if done.returncode != 0:
            tail = self.logfile.read_text()[-2000:] if self.logfile.exists() else ""
            raise RuntimeError(
                f"devstack: {' '.join(cmd)} failed ({done.returncode}):\n"
                f"{done.stdout}{done.stderr}\n{tail}"
            )


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
