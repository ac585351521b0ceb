"""The whole devstack: moto, the token verifier, PostgreSQL (via LDAP) and MariaDB.

iamdb connects to 127.0.0.1 but signs tokens for RDS-style endpoint names, as users do
behind tunnels or custom DNS; the verifier holds each server to its endpoint name, its real
port and region ``us-east-1``. :attr:`Stack.env` is the environment a Lambda function using
iamdb would see (``env.sh`` / ``env.json`` on disk).
"""

from __future__ import annotations

import atexit
import json
import logging
import shlex
import shutil
import ssl
import tempfile
import threading
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devstack.aws import MONGO_ROLE_ARN, ROLE_NAME, THROTTLE_TABLE, MotoAws, rds_token
from devstack.container_credentials import iso8601
from devstack.ldap import LdapBridge
from devstack.policy import TemplatePolicy
from devstack.postgres import LDAP_PREFIX, LDAP_SUFFIX, Postgres
from devstack.procs import RunAs, free_port, make_traversable
from devstack.tls import TlsFiles, make_tls
from devstack.verifier import Verifier

if TYPE_CHECKING:
    from devstack.mariadb import MariaDB
    from devstack.mongo import MongoPeer

log = logging.getLogger("devstack")

REGION = "us-east-1"
PG_ENDPOINT = "iamdb-pg.c0devstack00.us-east-1.rds.amazonaws.com"
MYSQL_ENDPOINT = "iamdb-mysql.c0devstack00.us-east-1.rds.amazonaws.com"
# (env infix, database user, database): the default instance and the named one.
USERS = (("", "iamdb_app", "app"), ("REPORTING_", "iamdb_reporting", "reporting"))
FUNCTION_NAME = "iamdb-example"


class Stack:
    """Start with :meth:`start`, read :attr:`env`, always :meth:`stop` (also runs at exit)."""

    pg_server = "pg"  # names the verifier knows the servers by (Event.server)
    mysql_server = "mysql"

    def __init__(
        self,
        root: Path | None = None,
        *,
        iam_rate: float | None = None,
        pg: bool = True,
        mysql: bool = True,
        mongo: bool = True,
    ) -> None:
        self._root_arg = root
        self.root: Path | None = None
        self.iam_rate = iam_rate
        self._want_pg, self._want_mysql = pg, mysql
        self.aws = MotoAws()
        self.verifier = Verifier(self.aws.lookup, authorize=TemplatePolicy.from_template(ROLE_NAME))
        self.pg: Postgres | None = None
        self.mysql: MariaDB | None = None
        self._want_mongo = mongo
        self.mongo: MongoPeer | None = None  # the MONGODB-AWS verifying peer
        self.tls: TlsFiles | None = None
        self.env: dict[str, str] = {}
        self._ldap: LdapBridge | None = None
        self._lock = threading.Lock()
        self._running = False

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start everything, create the database users, check one login per server."""
        with self._lock:
            self._running = True
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every server and remove the temporary data. Idempotent."""
        with self._lock:
            if not self._running:
                return
            self._running = False
        atexit.unregister(self.stop)
        steps: list[tuple[str, Callable[[], None] | None]] = [
            ("mariadb", self.mysql.stop if self.mysql else None),
            ("mongo", self.mongo.stop if self.mongo else None),
            ("postgres", self.pg.stop if self.pg else None),
            ("ldap", self._ldap.stop if self._ldap else None),
            ("moto", self.aws.stop),
            ("temp data", self._remove_data),
        ]
        for what, step in steps:
            if step is None:
                continue
            try:
                step()
            except Exception:
                log.exception("devstack: stopping %s failed", what)

    def _start(self) -> None:
        root = self._make_root()
        self.tls = make_tls(root / "tls", ["localhost", PG_ENDPOINT, MYSQL_ENDPOINT], ["127.0.0.1"])
        jobs: list[Callable[[], None]] = [self.aws.start]
        if self._want_pg:
            jobs.append(self._start_pg)
        if self._want_mysql:
            jobs.append(self._start_mysql)
        if self._want_mongo:
            jobs.append(self._start_mongo)
        with ThreadPoolExecutor(len(jobs), thread_name_prefix="devstack-start") as pool:
            futures = [pool.submit(job) for job in jobs]
        for future in futures:
            future.result()
        self.env = self._make_env()
        self.check_logins()

    def _make_root(self) -> Path:
        if self._root_arg is None:
            self.root = Path(tempfile.mkdtemp(prefix="iamdb-devstack-"))
        else:
            self.root = Path(self._root_arg).resolve()
            self.root.mkdir(parents=True, exist_ok=True)
        make_traversable(self.root)
        return self.root

    def _remove_data(self) -> None:
        if self.root is None:
            return
        if self._root_arg is None:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            for sub in ("tls", "pg", "mysql"):
                shutil.rmtree(self.root / sub, ignore_errors=True)

    def _start_pg(self) -> None:
        assert self.root is not None and self.tls is not None
        port = free_port()
        self.verifier.register_server(self.pg_server, PG_ENDPOINT, port, REGION, self.iam_rate)
        self._ldap = LdapBridge(
            self._verify_for(self.pg_server), prefix=LDAP_PREFIX, suffix=LDAP_SUFFIX
        )
        self._ldap.start()
        self.pg = Postgres(
            workdir=self.root / "pg",
            port=port,
            tls=self.tls,
            ldap_port=self._ldap.port,
            run_as=RunAs.for_servers("postgres"),
        )
        self.pg.start()
        for _, user, database in USERS:
            self.pg.create_iam_user(user, database)

    def _start_mysql(self) -> None:
        from devstack.mariadb import MariaDB

        assert self.root is not None and self.tls is not None
        port = free_port()
        self.verifier.register_server(
            self.mysql_server, MYSQL_ENDPOINT, port, REGION, self.iam_rate
        )
        self.mysql = MariaDB(
            workdir=self.root / "mysql",
            port=port,
            tls=self.tls,
            verify=self._verify_for(self.mysql_server),
            run_as=RunAs.for_servers("mysql"),
        )
        self.mysql.start()
        for _, user, database in USERS:
            self.mysql.create_iam_user(user, database)

    def _start_mongo(self) -> None:
        from devstack.mongo import MongoPeer

        self.mongo = MongoPeer(
            sts_endpoint=self.aws.endpoint_url,
            lookup=self.aws.lookup,
            users=[MONGO_ROLE_ARN],
            tls=self.tls,
        )
        self.mongo.start()

    def _verify_for(self, server: str) -> Callable[[str, str], tuple[bool, str]]:
        def verify(user: str, token: str) -> tuple[bool, str]:
            verdict = self.verifier.verify(server, user, token)
            return verdict.ok, verdict.reason

        return verify

    # -- environment -------------------------------------------------------------------

    def _make_env(self) -> dict[str, str]:
        creds = self.aws.function_credentials
        assert creds is not None and creds.token is not None and self.tls is not None
        assert creds.expiration is not None
        env = {
            "AWS_ACCESS_KEY_ID": creds.access_key,
            "AWS_SECRET_ACCESS_KEY": creds.secret_key,
            "AWS_SESSION_TOKEN": creds.token,
            # botocore's name; devstack invoke serves it to SnapStart functions as Expiration
            "AWS_CREDENTIAL_EXPIRATION": iso8601(creds.expiration),
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL_STS": self.aws.endpoint_url,
            "AWS_ENDPOINT_URL_IAM": self.aws.endpoint_url,
            "AWS_ENDPOINT_URL_DYNAMODB": self.aws.endpoint_url,
            "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
            "IAMDB_THROTTLE_TABLE": THROTTLE_TABLE,  # the fleet-wide IAM login limiter
        }
        if self.mongo is not None:
            ca = urllib.parse.quote(str(self.tls.ca), safe="/")
            env["IAMDB_MONGO_URI"] = (
                f"mongodb://localhost:{self.mongo.port}/app?tls=true&tlsCAFile={ca}"
            )
            env["IAMDB_MONGO_ROLE_ARN"] = MONGO_ROLE_ARN
        servers = [("PG", self.pg, PG_ENDPOINT), ("MYSQL", self.mysql, MYSQL_ENDPOINT)]
        for engine, server, endpoint in servers:
            if server is None:
                continue
            for infix, user, database in USERS:
                prefix = f"IAMDB_{engine}_{infix}"
                env[prefix + "HOST"] = "127.0.0.1"
                env[prefix + "PORT"] = str(server.port)
                env[prefix + "USER"] = user
                env[prefix + "DBNAME"] = database
                env[prefix + "IAM_HOST"] = endpoint
                env[prefix + "SSLROOTCERT"] = str(self.tls.ca)
        return env

    def write_env_files(self, directory: Path) -> tuple[Path, Path]:
        """Write ``env.json`` (``sam local invoke --env-vars``) and ``env.sh``; mode 0600."""
        directory.mkdir(parents=True, exist_ok=True)
        env_json, env_sh = directory / "env.json", directory / "env.sh"
        for path in (env_json, env_sh):
            path.touch(mode=0o600)
            path.chmod(0o600)
        env_json.write_text(json.dumps({"Parameters": self.env}, indent=2) + "\n")
        lines = [f"export {k}={shlex.quote(v)}" for k, v in sorted(self.env.items())]
        env_sh.write_text("# devstack environment (credentials valid only for this run)\n"
                          + "\n".join(lines) + "\n")  # fmt: skip
        return env_json, env_sh

    # -- checks ------------------------------------------------------------------------

    def token(self, engine: str, user: str = "iamdb_app") -> str:
        """A botocore-signed token for ``engine`` ("pg" or "mysql") with the function's keys."""
        server = self.pg if engine == "pg" else self.mysql
        assert server is not None and self.aws.function_credentials is not None
        endpoint = PG_ENDPOINT if engine == "pg" else MYSQL_ENDPOINT
        return rds_token(endpoint, server.port, user, self.aws.function_credentials)

    def check_logins(self) -> None:
        """Log in once per server with a botocore token over verified TLS (raises otherwise)."""
        assert self.tls is not None
        if self.pg is not None:
            import psycopg

            with psycopg.connect(
                host="127.0.0.1",
                port=self.pg.port,
                user="iamdb_app",
                dbname="app",
                password=self.token("pg"),
                sslmode="verify-full",
                sslrootcert=str(self.tls.ca),
                connect_timeout=10,
            ) as conn:
                conn.execute("SELECT 1")
        if self.mysql is not None:
            import pymysql

            conn2: Any = pymysql.connect(
                host="127.0.0.1",
                port=self.mysql.port,
                user="iamdb_app",
                database="app",
                password=self.token("mysql"),
                ssl=ssl.create_default_context(cafile=str(self.tls.ca)),
                connect_timeout=10,
                read_timeout=10,
            )
            try:
                with conn2.cursor() as cur:
                    cur.execute("SELECT 1")
            finally:
                conn2.close()
