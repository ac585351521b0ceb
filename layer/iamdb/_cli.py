"""``python -m iamdb``: tokens for people, and a configuration check.

- ``python -m iamdb token pg|mysql|dsql [--name N]`` prints an auth token for the configured
  database (iamdb's ``aws rds generate-db-auth-token`` / ``aws dsql generate-db-connect[-admin]
  -auth-token``), for psql or mysql by hand.
- ``python -m iamdb check [--connect]`` prints the resolved configuration of every
  configured instance, secrets masked; with ``--connect`` it logs in once to each and
  reports what it saw.
- ``python -m iamdb mongo-uri [--name N]`` prints a MongoDB connection string holding freshly
  assumed, short-lived credentials (for mongosh or Compass), so admins need no password.
- ``python -m iamdb compass-file PATH [--name N]`` writes the same as a Compass connections
  file (mode 0600) to import with Compass's "Import saved connections".
- ``python -m iamdb valkey-token [--name N]`` prints an ElastiCache / MemoryDB IAM token, the
  password of ``valkey-cli --tls --user <user> --pass "$(python -m iamdb valkey-token)"``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from iamdb._core.env import instance_name, instance_prefix, settings_environ
from iamdb._registry import Registry
from iamdb._sql.config import SQL_SUFFIXES, Engine, SqlConfig
from iamdb._valkey.config import ValkeyConfig
from iamdb.errors import ConfigError, IamDbError

_INSTANCE_HOST = re.compile(r"IAMDB_(PG|MYSQL|DSQL|VALKEY)_(?:(.+)_)?HOST")
_ENGINES: dict[str, Engine] = {"PG": "pg", "MYSQL": "mysql", "DSQL": "dsql"}


def configured_instances(environ: Mapping[str, str]) -> list[tuple[Engine, str | None]]:
    """(engine, name) of every SQL instance that has an ``IAMDB_<ENGINE>[_<NAME>]_HOST``.

    Names follow get_pg()'s rule (:func:`iamdb._core.env.instance_name`): a variable that no
    name reads as its HOST (``IAMDB_PG_IAM_HOST`` is the default instance's IAM_HOST, a
    lower-case or malformed name) is not an instance.
    """
    return [(_ENGINES[kind], name) for kind, name in _configured(environ) if kind in _ENGINES]


def configured_caches(environ: Mapping[str, str]) -> list[str | None]:
    """The names of every Valkey instance with an ``IAMDB_VALKEY[_<NAME>]_HOST``, by the same
    rule."""
    return [name for kind, name in _configured(environ) if kind == "VALKEY"]


def _configured(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    from iamdb._valkey.config import VALKEY_SUFFIXES

    found: list[tuple[str, str | None]] = []
    for var in sorted(environ):
        match = _INSTANCE_HOST.fullmatch(var)
        if match is None or not environ[var].strip():
            continue
        kind, name = match.group(1), match.group(2)
        suffixes = VALKEY_SUFFIXES if kind == "VALKEY" else SQL_SUFFIXES
        if name is not None:
            try:
                name = instance_name(name, suffixes)
            except ConfigError:
                continue
            if instance_prefix(kind, name, suffixes) + "HOST" != var:  # IAMDB_PG_reporting_HOST
                continue
        found.append((kind, name))
    return found


def mask(value: str | None, keep: int = 4) -> str:
    """``AKIA************WXYZ``-style masking for key ids; secrets never get here."""
    if not value:
        return "(not set)"
    return value[:keep] + "*" * max(len(value) - 2 * keep, 4) + value[-keep:]


def describe_credentials(environ: Mapping[str, str]) -> list[str]:
    key = environ.get("AWS_ACCESS_KEY_ID")
    if not key:
        return ["credentials: botocore default chain (profile, SSO, container or instance role)"]
    token = environ.get("AWS_SESSION_TOKEN")
    return [
        f"credentials: environment, access key {mask(key)}",
        f"  secret key: {'set (hidden)' if environ.get('AWS_SECRET_ACCESS_KEY') else 'MISSING'}",
        f"  session token: {f'set (hidden, {len(token)} chars)' if token else 'not set'}",
    ]


def describe_metrics(registry: Registry) -> str:
    """Where iamdb's EMF metrics go, or why there are none (see iamdb._core.telemetry)."""
    namespace = registry.settings.metrics_namespace
    if namespace is None:
        return "metrics: off (set IAMDB_METRICS_NAMESPACE or POWERTOOLS_METRICS_NAMESPACE)"
    if importlib.util.find_spec("aws_lambda_powertools") is None:
        return f"metrics: namespace {namespace}, but aws_lambda_powertools is not installed: none"
    return f"metrics: EMF through Powertools, namespace {namespace}"


def describe(cfg: SqlConfig) -> list[str]:
    lines = [
        f"[{cfg.label}] ({cfg.prefix}*)",
        f"  connect to: {cfg.host}:{cfg.port}  user: {cfg.user}  database: {cfg.dbname or '-'}",
        f"  token signed for: {cfg.signing_host}:{cfg.signing_port}  region: {cfg.region}",
        f"  tls: {cfg.sslmode}  ca: {cfg.sslrootcert}  connect timeout: {cfg.connect_timeout} s",
    ]
    if cfg.engine == "dsql":
        lines[2] = f"  token signed for: {cfg.signing_host}  region: {cfg.region}"
        lines.append(
            f"  token: dsql:{cfg.target.action}, {cfg.token_lifetime} s  max age: "
            f"{cfg.max_age:g} s  connect rate: {cfg.connect_rate:g}/s"
        )
    if cfg.role is not None:
        external = ", external id set" if cfg.role.external_id else ""
        lines.append(
            f"  signed by role: {cfg.role.arn} ({cfg.role.session_seconds} s sessions{external})"
        )
    if cfg.writer:
        lines.append("  writes: confirmed at every login (a read-only server is tried again)")
    return lines


def probe(registry: Registry, cfg: SqlConfig) -> str:
    """Log in once and describe the session (never the token)."""
    started = time.perf_counter()
    conn = registry.managed(cfg.engine, cfg.name).get()
    took = (time.perf_counter() - started) * 1000
    if cfg.engine == "dsql":  # no pg_stat_ssl on DSQL: what libpq says
        user, version = conn.execute("SELECT current_user, version()").fetchone()
        tls_text = "in use" if conn.pgconn.ssl_in_use else "none"
    elif cfg.engine == "pg":
        user, version = conn.execute("SELECT current_user, version()").fetchone()
        tls = conn.execute("SELECT version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        row = tls.fetchone()
        tls_text = f"{row[0]} {row[1]}" if row and row[0] else "none"
    else:
        with conn.cursor() as cur:
            cur.execute("SELECT CURRENT_USER(), VERSION()")
            user, version = cur.fetchone()
            cur.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
            row = cur.fetchone()
            tls_text = row[1] if row and row[1] else "none"
    return f"  OK in {took:.0f} ms: user {user}, tls {tls_text}, server {str(version)[:60]}"


def describe_cache(cfg: ValkeyConfig) -> list[str]:
    kind = "MemoryDB" if cfg.service == "memorydb" else "ElastiCache"
    mode = ("serverless, " if cfg.serverless else "") + ("cluster mode" if cfg.cluster else "")
    return [
        f"[{cfg.label}] ({cfg.prefix}*)",
        f"  connect to: {cfg.host}:{cfg.port}  user: {cfg.user}  {mode.strip(', ') or 'one shard'}",
        f"  token: {cfg.action} for {kind} {cfg.cache_name!r}  region: {cfg.region}",
        f"  tls: verified  ca: {cfg.sslrootcert or 'system store'}  connect timeout: "
        f"{cfg.connect_timeout} s  re-authenticate after: {cfg.reauth_seconds:g} s",
    ]


def probe_cache(registry: Registry, cfg: ValkeyConfig) -> str:
    """Log in once, ask who we are, the server's version and the TLS in use (never the token)."""
    started = time.perf_counter()
    client = registry.get_valkey(cfg.name)
    took = (time.perf_counter() - started) * 1000
    user = client.acl_whoami()
    server = client.info("server")
    if cfg.cluster:  # one node's answer stands for them all here
        server = next(iter(server.values())) if server and "redis_version" not in server else server
    version = server.get("valkey_version") or server.get("redis_version") or "?"
    from iamdb._valkey.client import first_pool

    pool = first_pool(client)
    conn = pool.get_connection("PING")
    try:
        tls = conn._sock.version() if conn._sock is not None else None
    finally:
        pool.release(conn)
    user = user.decode() if isinstance(user, bytes) else user
    return f"  OK in {took:.0f} ms: user {user}, tls {tls or 'none'}, server {version}"


def cmd_valkey_token(args: argparse.Namespace, registry: Registry) -> int:
    from iamdb._valkey.config import load_valkey_config

    cfg = load_valkey_config(args.name, settings_environ(registry.runtime.environ))
    print(registry.tokens.get(cfg.target).value)
    return 0


def cmd_token(args: argparse.Namespace, registry: Registry) -> int:
    cfg = registry.config(args.engine, args.name)
    token = registry.tokens.get(cfg.target)
    print(token.value)
    return 0


def cmd_check(args: argparse.Namespace, registry: Registry) -> int:
    print("\n".join(describe_credentials(registry.runtime.environ)))
    try:
        print(describe_metrics(registry))
    except IamDbError as exc:
        print(f"metrics: ERROR {type(exc).__name__}: {exc}")
        return 1
    environ = settings_environ(registry.runtime.environ)
    instances, caches = configured_instances(environ), configured_caches(environ)
    if not instances and not caches:
        print(
            "no instance configured (set IAMDB_PG_HOST, IAMDB_MYSQL_HOST, IAMDB_DSQL_HOST or "
            "IAMDB_VALKEY_HOST)"
        )
        return 1
    failures = 0
    for engine, name in instances:
        try:
            cfg = registry.config(engine, name)
            print("\n".join(describe(cfg)))
            if args.connect:
                print(probe(registry, cfg))
        except IamDbError as exc:
            failures += 1
            print(f"  ERROR {type(exc).__name__}: {exc}")
    for cache in caches:
        failures += _check_cache(args, registry, cache)
    return 1 if failures else 0


def _check_cache(args: argparse.Namespace, registry: Registry, name: str | None) -> int:
    """Describe (and with ``--connect``, log in to) one Valkey instance; 1 when it failed."""
    from iamdb._valkey.config import load_valkey_config

    try:
        cfg = load_valkey_config(name, settings_environ(registry.runtime.environ))
        print("\n".join(describe_cache(cfg)))
        if args.connect:
            print(probe_cache(registry, cfg))
    except IamDbError as exc:
        print(f"  ERROR {type(exc).__name__}: {exc}")
        return 1
    return 0


def _mongo_secret(args: argparse.Namespace, registry: Registry) -> tuple[str, str]:
    """(connection string with fresh credentials, human note about their expiry)."""
    from iamdb._mongo.admin import connection_string

    handle = registry.mongo_handle(args.name)
    lease = handle.fresh_lease()
    if lease.expires_at is None:
        when = "when the credentials they were taken from expire"
    else:
        at = dt.datetime.fromtimestamp(lease.expires_at, dt.timezone.utc)
        minutes = (lease.expires_at - time.time()) / 60
        when = f"at {at:%Y-%m-%d %H:%M:%S} UTC (in {minutes:.0f} min)"
    note = (
        f"iamdb: the connection string holds short-lived AWS credentials for "
        f"{lease.principal} (a secret: do not paste or commit it); they expire {when}"
    )
    return connection_string(handle.cfg, lease), note


def cmd_mongo_uri(args: argparse.Namespace, registry: Registry) -> int:
    uri, note = _mongo_secret(args, registry)
    print(note, file=sys.stderr)
    print(uri)
    return 0


def compass_document(uri: str, name: str) -> dict[str, object]:
    """A Compass connections file (the format of Compass's export, without encryption)."""
    return {
        "type": "Compass Connections",
        "version": {"$numberInt": "1"},
        "connections": [
            {
                "id": str(uuid.uuid4()),
                "connectionOptions": {"connectionString": uri},
                "favorite": {"name": name},
            }
        ],
    }


def cmd_compass_file(args: argparse.Namespace, registry: Registry) -> int:
    uri, note = _mongo_secret(args, registry)
    label = "mongo" if args.name is None else f"mongo:{args.name}"
    stamp = dt.datetime.now(dt.timezone.utc)
    document = compass_document(uri, f"iamdb {label} ({stamp:%Y-%m-%d %H:%M} UTC)")
    path = Path(args.path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)  # also when the file existed with a looser mode
        json.dump(document, out, indent=2)
        out.write("\n")
    print(note.replace("the connection string holds", f"{path} holds"), file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iamdb", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    token = sub.add_parser("token", help="print an IAM auth token for a configured database")
    token.add_argument("engine", choices=["pg", "mysql", "dsql"])
    token.add_argument("--name", help="named instance (reads IAMDB_<ENGINE>_<NAME>_*)")
    check = sub.add_parser("check", help="print the resolved configuration, secrets masked")
    check.add_argument("--connect", action="store_true", help="log in once to each instance")
    uri = sub.add_parser("mongo-uri", help="print a MongoDB URI with fresh short-lived credentials")
    uri.add_argument("--name", help="named instance (reads IAMDB_MONGO_<NAME>_*)")
    compass = sub.add_parser("compass-file", help="write a Compass connections file (mode 0600)")
    compass.add_argument("path", help="file to write")
    compass.add_argument("--name", help="named instance (reads IAMDB_MONGO_<NAME>_*)")
    valkey = sub.add_parser(
        "valkey-token", help="print an ElastiCache/MemoryDB IAM token (valkey-cli --pass)"
    )
    valkey.add_argument("--name", help="named instance (reads IAMDB_VALKEY_<NAME>_*)")
    args = parser.parse_args(argv)
    commands = {
        "token": cmd_token,
        "check": cmd_check,
        "mongo-uri": cmd_mongo_uri,
        "compass-file": cmd_compass_file,
        "valkey-token": cmd_valkey_token,
    }
    registry = Registry()
    try:
        return commands[args.command](args, registry)
    except IamDbError as exc:
        print(f"iamdb: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        registry.reset()
