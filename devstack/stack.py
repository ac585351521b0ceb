"""The whole devstack: moto, the token verifier, PostgreSQL (via LDAP), MariaDB, the Mongo
peer, an Aurora DSQL endpoint (a second small PostgreSQL cluster) and an ElastiCache cache (a
redis-server behind a front that checks IAM logins, :mod:`devstack.valkey`); and in a second
account (:mod:`devstack.data_account`), two Aurora-like clusters whose writer can move
(PostgreSQL and MariaDB, :mod:`devstack.cluster`) and a DSQL cluster, reached by assuming a role
there.

iamdb connects to 127.0.0.1 but signs tokens for RDS- and DSQL-style endpoint names, as users
do behind tunnels or custom DNS; the verifier holds each server to its endpoint name, its real
port (DSQL: none) and region ``us-east-1``. The DSQL endpoint's reaper drops connections older
than ``dsql_max_age``, as DSQL does after an hour. A second Mongo peer plays an Amazon DocumentDB
cluster (``Stack.docdb``) with a CA of its own (``Stack.docdb_tls``); its endpoint names
resolve only where :func:`devstack.mongo_docdb.loopback_resolver` is installed, so it is left
out of the environment files. :attr:`Stack.env` is the environment a
Lambda function using iamdb would see (``env.sh`` / ``env.json`` on disk).
"""

from __future__ import annotations

import atexit
import functools
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

from devstack import data_account
from devstack.aws import (
    ACCOUNT,
    FUNCTION_ROLE_ARN,
    MONGO_ROLE_ARN,
    ROLE_NAME,
    THROTTLE_TABLE,
    USER_NAME,
    MotoAws,
    dsql_token,
    iso8601,
    rds_token,
)
from devstack.cluster import READER_ADDRESS, Cluster, Instance, Names
from devstack.ldap import LdapBridge
from devstack.mongo_auth import Role
from devstack.postgres import LDAP_PREFIX, LDAP_SUFFIX, Postgres
from devstack.procs import RunAs, free_port, make_traversable
from devstack.reaper import DSQL_MAX_AGE, Reaper
from devstack.sam.policy import (
    DSQL_CLUSTER_ID,
    DSQL_SERVER,
    VALKEY_CACHE,
    VALKEY_SERVER,
    VALKEY_USER,
    TemplatePolicy,
)
from devstack.tls import TlsFiles, make_tls
from devstack.valkey import MAX_AGE as VALKEY_MAX_AGE
from devstack.valkey import RedisServer, ValkeyFront
from devstack.verifier import DSQL, DSQL_ADMIN, ELASTICACHE, RDS, Kind, Verifier

if TYPE_CHECKING:
    from devstack.mariadb import MariaDB
    from devstack.mongo import MongoPeer
    from devstack.mongo_docdb import DocumentDB

log = logging.getLogger("devstack")

REGION = "us-east-1"
# What the Mongo role's $external user is granted (reported by connectionStatus).
MONGO_ROLES = (Role("readWrite", "app"),)
PG_ENDPOINT = "iamdb-pg.c0devstack00.us-east-1.rds.amazonaws.com"
MYSQL_ENDPOINT = "iamdb-mysql.c0devstack00.us-east-1.rds.amazonaws.com"
# (env infix, database user, database): the default instance and the named one.
USERS = (("", "iamdb_app", "app"), ("REPORTING_", "iamdb_reporting", "reporting"))
DSQL_ENDPOINT = f"{DSQL_CLUSTER_ID}.dsql.{REGION}.on.aws"
DSQL_DBNAME = "postgres"  # DSQL's one database
DSQL_USER = "iamdb_dsql_app"  # a custom role, granted to the function's role and developer
DEVELOPER_ARN = f"arn:aws:iam::{ACCOUNT}:user/{USER_NAME}"
# The DocumentDB cluster's endpoints (the cluster's, its reader's) and its one instance's.
DOCDB_ENDPOINT = f"iamdb-docdb.cluster-c0devstack00.{REGION}.docdb.amazonaws.com"
DOCDB_READER_ENDPOINT = f"iamdb-docdb.cluster-ro-c0devstack00.{REGION}.docdb.amazonaws.com"
DOCDB_INSTANCE = f"iamdb-docdb-1.c0devstack00.{REGION}.docdb.amazonaws.com"
DOCDB_NAMES = (DOCDB_ENDPOINT, DOCDB_READER_ENDPOINT, DOCDB_INSTANCE)
FUNCTION_NAME = "iamdb-example"
# The data account's Aurora-like clusters (devstack.cluster): their endpoints' names.
DATA_SUFFIX = f"c0data000000.{REGION}.rds.amazonaws.com"
AURORA_PG = Names("iamdb-aurora-pg", DATA_SUFFIX)
AURORA_MYSQL = Names("iamdb-aurora-mysql", DATA_SUFFIX)
CLUSTER_USER = ("iamdb_app", "app")  # the database user on both instances, and its database
# A user of the cache that template.yaml's policy does not name: its logins are refused as on
# AWS (no elasticache:Connect on its ARN) although the cache knows it.
VALKEY_UNLISTED_USER = "iamdb-unlisted"


class Stack:
    """Start with :meth:`start`, read :attr:`env`, always :meth:`stop` (also runs at exit)."""

    pg_server = "pg"  # names the verifier knows the servers by (Event.server)
    mysql_server = "mysql"
    dsql_server = DSQL_SERVER

    def __init__(
        self,
        root: Path | None = None,
        *,
        iam_rate: float | None = None,
        pg: bool = True,
        mysql: bool = True,
        mongo: bool = True,
        dsql: bool = True,
        dsql_max_age: float = DSQL_MAX_AGE,
        data: bool = True,
        max_connections: int | None = None,
        user_connections: int | None = None,
        valkey: bool = True,
        valkey_max_age: float = VALKEY_MAX_AGE,
    ) -> None:
        """``max_connections``: PostgreSQL's and MariaDB's connection slots (PostgreSQL keeps
        3 of them for its superuser, MariaDB one more for root); ``user_connections``: at most
        that many sessions per database user (``CONNECTION LIMIT``, ``MAX_USER_CONNECTIONS``).
        None: the servers' defaults (100 and 151), no user limit."""
        self._root_arg = root
        self.max_connections, self.user_connections = max_connections, user_connections
        self.root: Path | None = None
        self.iam_rate = iam_rate
        self._want_pg, self._want_mysql, self._want_dsql = pg, mysql, dsql
        self._want_data = data
        self.aws = MotoAws()
        self._template_policy = TemplatePolicy.from_template(ROLE_NAME)
        self._data_policies = data_account.RolePolicies({})  # the data account's servers
        self.verifier = Verifier(self.aws.lookup, authorize=self._authorize)
        self.pg: Postgres | None = None
        self.mysql: MariaDB | None = None
        self._want_mongo = mongo
        self.mongo: MongoPeer | None = None  # the MONGODB-AWS verifying peer
        self.docdb: MongoPeer | None = None  # the same, playing a DocumentDB cluster
        self.docdb_tls: TlsFiles | None = None  # its own CA (DOCDB_NAMES only)
        self.dsql: Postgres | None = None  # the Aurora DSQL endpoint's cluster
        self.dsql_reaper = Reaper(self._dsql_admin, server=DSQL_SERVER, max_age=dsql_max_age)
        self.aurora_pg: Cluster | None = None  # the data account's: a writer that moves
        self.aurora_mysql: Cluster | None = None
        self.data_dsql: Postgres | None = None  # the data account's DSQL cluster
        self._want_valkey, self._valkey_max_age = valkey, valkey_max_age
        self.redis: RedisServer | None = None  # the cache's server, plaintext on loopback
        self.valkey: ValkeyFront | None = None  # what clients reach: TLS, IAM logins checked
        self.valkey_cluster: ValkeyFront | None = None  # the cache in cluster mode (one shard)
        self.tls: TlsFiles | None = None
        self.env: dict[str, str] = {}
        self._ldap_bridges: list[LdapBridge] = []
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
            ("dsql reaper", self.dsql_reaper.stop),
            *((f"{c.names.cluster_id} endpoints", c.stop) for c in self.clusters()),
            *(
                (f"{c.names.cluster_id} instance", instance.db.stop)
                for c in self.clusters()
                for instance in c.instances
            ),
            ("data dsql", self.data_dsql.stop if self.data_dsql else None),
            ("mariadb", self.mysql.stop if self.mysql else None),
            ("mongo", self.mongo.stop if self.mongo else None),
            ("docdb", self.docdb.stop if self.docdb else None),
            ("postgres", self.pg.stop if self.pg else None),
            ("dsql", self.dsql.stop if self.dsql else None),
            ("valkey front", self.valkey.stop if self.valkey else None),
            ("redis", self.redis.stop if self.redis else None),
            ("valkey cluster front", self.valkey_cluster.stop if self.valkey_cluster else None),
            ("redis cluster", self.valkey_cluster.server.stop if self.valkey_cluster else None),
            *(("ldap", bridge.stop) for bridge in self._ldap_bridges),
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
        names = [
            "localhost",
            PG_ENDPOINT,
            MYSQL_ENDPOINT,
            DSQL_ENDPOINT,
            data_account.DSQL_ENDPOINT,
        ]
        for cluster in (AURORA_PG, AURORA_MYSQL):
            for named in (cluster, cluster.renamed("old1"), Cluster.green(cluster)):
                names += named.all(2)
        self.tls = make_tls(root / "tls", names, ["127.0.0.1", READER_ADDRESS])
        jobs: list[Callable[[], None]] = [self.aws.start]
        if self._want_pg:
            jobs.append(self._start_pg)
        if self._want_dsql:
            jobs.append(self._start_dsql)
        if self._want_mysql:
            jobs.append(self._start_mysql)
        if self._want_mongo:
            jobs.append(self._start_mongo)
        if self._want_data:
            jobs += [self._start_aurora_pg, self._start_data_dsql]
            if self._want_mysql:
                jobs.append(self._start_aurora_mysql)
        if self._want_valkey:
            jobs.append(self._start_valkey)
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
            for sub in ("tls", "pg", "mysql", "dsql", "data", "valkey", "valkey-cluster"):
                shutil.rmtree(self.root / sub, ignore_errors=True)

    def _start_pg(self) -> None:
        slots = {} if self.max_connections is None else {"max_connections": self.max_connections}
        self.pg = self._postgres(self.pg_server, PG_ENDPOINT, RDS, slots)
        for _, user, database in USERS:
            self.pg.create_iam_user(user, database)
            if self.user_connections is not None:
                self.pg.limit_user(user, self.user_connections)

    def _start_dsql(self) -> None:
        """DSQL's roles: ``admin`` (owns ``postgres``, as DSQL's admin may create tables) and
        a custom role that ``AWS IAM GRANT`` maps to the function's role and the developer."""
        grants = {DSQL_USER: [FUNCTION_ROLE_ARN, DEVELOPER_ARN]}
        self.dsql = self._postgres(self.dsql_server, DSQL_ENDPOINT, DSQL, {}, iam_grants=grants)
        self.dsql.create_iam_user(DSQL_ADMIN, DSQL_DBNAME)
        self.dsql.create_iam_user(DSQL_USER, None)
        self.dsql_reaper.start()

    def _postgres(
        self,
        server: str,
        endpoint: str,
        kind: Kind,
        options: dict[str, int] | None = None,
        *,
        signed_port: int | None = None,
        workdir: Path | None = None,
        **register: Any,
    ) -> Postgres:
        """A PostgreSQL cluster in ``<root>/<server>`` (or ``workdir``) whose IAM logins
        ``server`` verifies, for tokens signed for ``endpoint`` and its own port (or
        ``signed_port``: a cluster endpoint's); ``options``: more of :class:`Postgres`'s
        arguments; ``register``: more of the verifier's terms."""
        assert self.root is not None and self.tls is not None
        port = free_port()
        if kind.signs_port and signed_port is None:
            signed_port = port
        register.setdefault("account", ACCOUNT)
        self.verifier.register_server(
            server, endpoint, signed_port, REGION, self.iam_rate, kind=kind, **register
        )
        bridge = LdapBridge(self._verify_for(server), prefix=LDAP_PREFIX, suffix=LDAP_SUFFIX)
        bridge.start()
        self._ldap_bridges.append(bridge)
        pg = Postgres(
            workdir=workdir or self.root / server,
            port=port,
            tls=self.tls,
            ldap_port=bridge.port,
            run_as=RunAs.for_servers("postgres"),
            **(options or {}),
        )
        pg.start()
        return pg

    def _dsql_admin(self) -> Any:
        assert self.dsql is not None
        return self.dsql.admin()

    def _start_mysql(self) -> None:
        self.mysql = self._mariadb(self.mysql_server, MYSQL_ENDPOINT)
        for _, user, database in USERS:
            self.mysql.create_iam_user(user, database)
            if self.user_connections is not None:
                self.mysql.limit_user(user, self.user_connections)

    def _mariadb(
        self,
        server: str,
        endpoint: str,
        *,
        signed_port: int | None = None,
        workdir: Path | None = None,
        **register: Any,
    ) -> MariaDB:
        """A MariaDB in ``<root>/mysql`` (or ``workdir``) whose IAM logins ``server`` verifies
        (as :meth:`_postgres`)."""
        from devstack.mariadb import MariaDB

        assert self.root is not None and self.tls is not None
        port = free_port()
        register.setdefault("account", ACCOUNT)
        self.verifier.register_server(
            server, endpoint, signed_port or port, REGION, self.iam_rate, **register
        )
        mysql = MariaDB(
            workdir=workdir or self.root / "mysql",
            port=port,
            tls=self.tls,
            verify=self._verify_for(server),
            run_as=RunAs.for_servers("mysql"),
            **({} if self.max_connections is None else {"max_connections": self.max_connections}),
        )
        mysql.start()
        return mysql

    # -- the data account ------------------------------------------------------------------

    def clusters(self) -> list[Cluster]:
        """The data account's Aurora-like clusters that run."""
        return [c for c in (self.aurora_pg, self.aurora_mysql) if c is not None]

    def _start_aurora_pg(self) -> None:
        self.aurora_pg = self._cluster(AURORA_PG, data_account.AURORA_PG_RESOURCE_ID, "pg")

    def _start_aurora_mysql(self) -> None:
        self.aurora_mysql = self._cluster(
            AURORA_MYSQL, data_account.AURORA_MYSQL_RESOURCE_ID, "mysql"
        )

    def _cluster(self, names: Names, resource_id: str, engine: str) -> Cluster:
        """Two instances of ``engine`` in the data account behind ``names``' endpoints."""
        assert self.root is not None
        port = free_port()
        user, database = CLUSTER_USER
        instances: list[Instance] = []
        for number in (1, 2):
            server = f"{names.cluster_id}-{number}"
            self._data_policies.resources[server] = functools.partial(
                data_account.dbuser_arn, resource_id
            )
            where: dict[str, Any] = {
                "signed_port": port,
                "workdir": self.root / "data" / server,
                "also": (names.reader, names.instance(number)),
                "account": data_account.DATA_ACCOUNT,
            }
            db: Any
            if engine == "pg":
                db = self._postgres(server, names.writer, RDS, **where)
            else:
                db = self._mariadb(server, names.writer, **where)
            db.create_iam_user(user, database)
            instances.append(Instance(server, number, db))
        cluster = Cluster(names, port, (instances[0], instances[1]), self.verifier, (user,))
        cluster.start()
        return cluster

    def _start_data_dsql(self) -> None:
        """The data account's DSQL cluster: ``admin`` and the custom role granted to its roles."""
        assert self.root is not None
        server = data_account.DSQL_SERVER
        self._data_policies.resources[server] = lambda _: data_account.DSQL_CLUSTER_ARN
        grants = {DSQL_USER: [data_account.DATA_ROLE_ARN, data_account.TENANT_ROLE_ARN]}
        self.data_dsql = self._postgres(
            server,
            data_account.DSQL_ENDPOINT,
            DSQL,
            workdir=self.root / "data" / server,
            iam_grants=grants,
            account=data_account.DATA_ACCOUNT,
        )
        self.data_dsql.create_iam_user(DSQL_ADMIN, DSQL_DBNAME)
        self.data_dsql.create_iam_user(DSQL_USER, None)

    def _authorize(self, principal: str, server: str, user: str, action: str) -> tuple[bool, str]:
        """The IAM policy check: the data account's roles' policies for its servers, the
        example function's template for the others."""
        if server in self._data_policies.resources:
            return self._data_policies(principal, server, user, action)
        return self._template_policy(principal, server, user, action)

    def _start_mongo(self) -> None:
        from devstack.mongo_docdb import DocumentDB

        assert self.root is not None
        self.mongo = self._mongo_peer(self.tls, None)
        self.docdb_tls = make_tls(self.root / "tls" / "docdb", list(DOCDB_NAMES))
        self.docdb = self._mongo_peer(self.docdb_tls, DocumentDB(DOCDB_INSTANCE))

    def _start_valkey(self) -> None:
        """The cache ``iamdb-cache`` (ElastiCache, node-based) with its IAM-enabled users."""
        assert self.root is not None and self.tls is not None
        self.verifier.register_server(VALKEY_SERVER, VALKEY_CACHE, None, REGION, kind=ELASTICACHE)
        self.redis = RedisServer(
            self.root / "valkey", [VALKEY_USER, VALKEY_UNLISTED_USER], RunAs.for_servers("redis")
        )
        self.redis.start()
        self.valkey = ValkeyFront(
            self.redis, self.tls, self._verify_for(VALKEY_SERVER), max_age=self._valkey_max_age
        )
        self.valkey.start()
        sharded = RedisServer(self.root / "valkey-cluster", [VALKEY_USER],
                              RunAs.for_servers("redis"), announce=free_port())  # fmt: skip
        sharded.start()
        self.valkey_cluster = ValkeyFront(
            sharded, self.tls, self._verify_for(VALKEY_SERVER), max_age=self._valkey_max_age
        )
        self.valkey_cluster.start()

    def _mongo_peer(self, tls: TlsFiles | None, documentdb: DocumentDB | None) -> MongoPeer:
        """A started MONGODB-AWS peer admitting the Mongo role (``documentdb``: as DocumentDB)."""
        from devstack.mongo import MongoPeer

        peer = MongoPeer(
            sts_endpoint=self.aws.endpoint_url,
            lookup=self.aws.lookup,
            users={MONGO_ROLE_ARN: MONGO_ROLES},
            tls=tls,
            documentdb=documentdb,
        )
        peer.start()
        return peer

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
        if self.dsql is not None:
            env.update(
                IAMDB_DSQL_HOST="127.0.0.1",
                IAMDB_DSQL_PORT=str(self.dsql.port),
                IAMDB_DSQL_IAM_HOST=DSQL_ENDPOINT,
                IAMDB_DSQL_USER=DSQL_ADMIN,
                IAMDB_DSQL_DBNAME=DSQL_DBNAME,
                IAMDB_DSQL_REGION=REGION,
                IAMDB_DSQL_SSLROOTCERT=str(self.tls.ca),  # DSQL's real CAs: the public store
            )
        env.update(self._data_env())
        if self.valkey is not None:
            env.update(
                IAMDB_VALKEY_HOST="localhost",
                IAMDB_VALKEY_PORT=str(self.valkey.port),
                IAMDB_VALKEY_USER=VALKEY_USER,
                IAMDB_VALKEY_CACHE_NAME=VALKEY_CACHE,
                IAMDB_VALKEY_SSLROOTCERT=str(self.tls.ca),
            )
        if self.valkey_cluster is not None:  # get_valkey("orders"): the same cache, cluster mode
            env.update(
                IAMDB_VALKEY_ORDERS_HOST="localhost",
                IAMDB_VALKEY_ORDERS_PORT=str(self.valkey_cluster.port),
                IAMDB_VALKEY_ORDERS_USER=VALKEY_USER,
                IAMDB_VALKEY_ORDERS_CACHE_NAME=VALKEY_CACHE,
                IAMDB_VALKEY_ORDERS_CLUSTER="true",
                IAMDB_VALKEY_ORDERS_SSLROOTCERT=str(self.tls.ca),
            )
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

    def _data_env(self) -> dict[str, str]:
        """The data account's instances: ``aurora`` (the writer endpoint) and ``reader`` for
        each cluster, ``tenant`` for DSQL (with an external id), each assuming a role there."""
        assert self.tls is not None
        env: dict[str, str] = {}
        user, database = CLUSTER_USER
        for engine, cluster in (("PG", self.aurora_pg), ("MYSQL", self.aurora_mysql)):
            if cluster is None:
                continue
            for name, host, iam_host in (
                ("AURORA", "127.0.0.1", cluster.names.writer),
                ("READER", READER_ADDRESS, cluster.names.reader),
            ):
                prefix = f"IAMDB_{engine}_{name}_"
                env |= {
                    prefix + "HOST": host,
                    prefix + "PORT": str(cluster.port),
                    prefix + "IAM_HOST": iam_host,
                    prefix + "USER": user,
                    prefix + "DBNAME": database,
                    prefix + "SSLROOTCERT": str(self.tls.ca),
                    prefix + "ROLE_ARN": data_account.DATA_ROLE_ARN,
                }
        if self.data_dsql is not None:
            env |= {
                "IAMDB_DSQL_TENANT_HOST": "127.0.0.1",
                "IAMDB_DSQL_TENANT_PORT": str(self.data_dsql.port),
                "IAMDB_DSQL_TENANT_IAM_HOST": data_account.DSQL_ENDPOINT,
                "IAMDB_DSQL_TENANT_USER": DSQL_USER,
                "IAMDB_DSQL_TENANT_DBNAME": DSQL_DBNAME,
                "IAMDB_DSQL_TENANT_SSLROOTCERT": str(self.tls.ca),
                "IAMDB_DSQL_TENANT_ROLE_ARN": data_account.TENANT_ROLE_ARN,
                "IAMDB_DSQL_TENANT_EXTERNAL_ID": data_account.TENANT_EXTERNAL_ID,
            }
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
        """A botocore-signed token for ``engine`` ("pg", "mysql" or "dsql") with the
        function's keys (DSQL: DbConnectAdmin for ``admin``, DbConnect for other users)."""
        creds = self.aws.function_credentials
        assert creds is not None
        if engine == "dsql":
            return dsql_token(DSQL_ENDPOINT, creds, admin=user == DSQL_ADMIN)
        server = self.pg if engine == "pg" else self.mysql
        assert server is not None
        endpoint = PG_ENDPOINT if engine == "pg" else MYSQL_ENDPOINT
        return rds_token(endpoint, server.port, user, creds)

    def check_logins(self) -> None:
        """Log in once per server with a botocore token over verified TLS (raises otherwise)."""
        assert self.tls is not None
        for engine, pg, user, dbname in (
            ("pg", self.pg, "iamdb_app", "app"),
            ("dsql", self.dsql, DSQL_ADMIN, DSQL_DBNAME),
        ):
            if pg is None:
                continue
            import psycopg

            with psycopg.connect(
                host="127.0.0.1",
                port=pg.port,
                user=user,
                dbname=dbname,
                password=self.token(engine, user),
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
