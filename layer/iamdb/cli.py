"""``python -m iamdb``: tokens for people, and a configuration check.

- ``python -m iamdb token pg|mysql [--name N]`` prints an auth token for the configured
  database (iamdb's ``aws rds generate-db-auth-token``), for psql or mysql by hand.
- ``python -m iamdb check [--connect]`` prints the resolved configuration of every
  configured instance, secrets masked; with ``--connect`` it logs in once to each and
  reports what it saw.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence

from iamdb.config import Engine, SqlConfig
from iamdb.errors import IamDbError
from iamdb.registry import Registry

_INSTANCE_HOST = re.compile(r"IAMDB_(PG|MYSQL)_(?:([A-Z][A-Z0-9_]*)_)?HOST")


def configured_instances(environ: Mapping[str, str]) -> list[tuple[Engine, str | None]]:
    """(engine, name) of every instance that has an ``IAMDB_<ENGINE>[_<NAME>]_HOST``."""
    found: list[tuple[Engine, str | None]] = []
    for var in sorted(environ):
        match = _INSTANCE_HOST.fullmatch(var)
        name_part = match.group(2) or "" if match else ""
        if (
            match
            and environ[var].strip()
            and not (name_part == "IAM" or name_part.endswith("_IAM"))
        ):
            engine: Engine = "pg" if match.group(1) == "PG" else "mysql"
            name = match.group(2).lower() if match.group(2) else None
            found.append((engine, name))
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


def describe(cfg: SqlConfig) -> list[str]:
    return [
        f"[{cfg.label}] ({cfg.prefix}*)",
        f"  connect to: {cfg.host}:{cfg.port}  user: {cfg.user}  database: {cfg.dbname or '-'}",
        f"  token signed for: {cfg.signing_host}:{cfg.signing_port}  region: {cfg.region}",
        f"  tls: {cfg.sslmode}  ca: {cfg.sslrootcert}  connect timeout: {cfg.connect_timeout} s",
    ]


def probe(registry: Registry, cfg: SqlConfig) -> str:
    """Log in once and describe the session (never the token)."""
    started = time.perf_counter()
    conn = registry.managed(cfg.engine, cfg.name).get()
    took = (time.perf_counter() - started) * 1000
    if cfg.engine == "pg":
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


def cmd_token(args: argparse.Namespace, registry: Registry) -> int:
    cfg = registry.config(args.engine, args.name)
    token = registry.tokens.get(cfg.signing_host, cfg.signing_port, cfg.user, cfg.region)
    print(token.value)
    return 0


def cmd_check(args: argparse.Namespace, registry: Registry) -> int:
    environ = os.environ
    print("\n".join(describe_credentials(environ)))
    instances = configured_instances(environ)
    if not instances:
        print("no instance configured (set IAMDB_PG_HOST or IAMDB_MYSQL_HOST)")
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
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iamdb", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    token = sub.add_parser("token", help="print an RDS IAM auth token for a configured database")
    token.add_argument("engine", choices=["pg", "mysql"])
    token.add_argument("--name", help="named instance (reads IAMDB_<ENGINE>_<NAME>_*)")
    check = sub.add_parser("check", help="print the resolved configuration, secrets masked")
    check.add_argument("--connect", action="store_true", help="log in once to each instance")
    args = parser.parse_args(argv)
    registry = Registry()
    try:
        return cmd_token(args, registry) if args.command == "token" else cmd_check(args, registry)
    except IamDbError as exc:
        print(f"iamdb: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        registry.reset()
