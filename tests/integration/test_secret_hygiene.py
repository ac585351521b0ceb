"""No secret in any log record, exception, warning or repr, with DEBUG logging everywhere.

Every engine's happy path (get_pg, get_mysql, get_mongo and a query each) and failure paths
(wrong SQL user, a Mongo role that is no $external user, bad configuration, ``python -m iamdb
check --connect``) run against devstack's real servers with the root, iamdb, psycopg, PyMySQL
and pymongo loggers at DEBUG. Every secret involved is collected as it is made: the function's
secret key and session token, every auth token iamdb signed and its X-Amz-Signature, the
assumed Mongo role's secret key and session token. None may appear anywhere we can see.

A raised exception is searched as far as it reaches (see tests/integration/kept_alive.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import types
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

import iamdb
import iamdb._mongo.client
import iamdb._registry
from devstack.aws import MONGO_UNLISTED_ROLE_ARN
from devstack.stack import Stack
from iamdb._core.env import RDS_CA_BUNDLE
from iamdb._core.settings import load_settings
from iamdb.errors import AuthError, ConfigError, ConnectError
from tests.integration.leaks import BOTOCORE, Secrets, client_side, see_logs

pytestmark = pytest.mark.integration


def _see_iamdb_objects(found: Secrets) -> None:
    registry = iamdb._registry.default
    found.see("Registry", registry)
    found.see("TokenCache", registry.tokens)
    found.see("Settings", registry.settings)
    found.see("load_settings", load_settings())
    found.see("Credentials", registry._resolver.resolve())
    for (engine, name), managed in registry._managed.items():
        found.see(f"ManagedConnection {engine}:{name}", managed)
        found.see(f"SqlConfig {engine}:{name}", managed.cfg)
        found.see(f"Token {engine}:{name}", managed.last_token)
    for lease in found.leases:
        found.see("Lease", lease)
        found.see("Lease.credentials", lease.credentials)
    for role in found.roles:
        found.see("AssumedRole", role)
    handle = registry.mongo_handle()
    found.see("MongoHandle", handle)
    found.see("MongoConfig", handle.cfg)
    found.see("MongoHandle.lease", handle.lease)


def test_happy_paths_leak_nothing(secrets: Secrets, caplog: Any, recwarn: Any) -> None:
    pg = iamdb.get_pg()
    assert pg.execute("SELECT current_user").fetchone() == ("iamdb_app",)
    pg_reporting = iamdb.get_pg("reporting")
    assert pg_reporting.execute("SELECT 1").fetchone() == (1,)
    mysql = iamdb.get_mysql()
    with mysql.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    dsql = iamdb.get_dsql()
    assert iamdb.dsql_transaction(lambda c: c.execute("SELECT 1").fetchone()) == (1,)
    client = iamdb.get_mongo()
    db = client.get_default_database()
    db.hygiene.insert_one({"ok": True})
    assert db.hygiene.count_documents({"ok": True}) >= 1

    registry = iamdb._registry.default
    lease = registry.mongo_handle().lease
    assert lease is not None and lease.credentials.token
    secrets.add_credentials(lease.credentials)
    for managed in registry._managed.values():
        assert managed.last_token is not None
        secrets.add_token(managed.last_token.value)
    assert len(set(secrets.tokens)) >= 4  # pg, pg:reporting, mysql, dsql (their endpoints)
    assert len(secrets.leases) == 1 and len(secrets.roles) == 1

    for where, conn in (("pg", pg), ("pg:reporting", pg_reporting), ("dsql", dsql)):
        secrets.see(f"psycopg repr {where}", repr(conn))
        secrets.see(f"psycopg dsn {where}", conn.info.dsn)
        secrets.see(f"psycopg params {where}", conn.info.get_parameters())
    secrets.see("pymysql repr", repr(mysql))
    secrets.see("pymongo repr", repr(client))
    secrets.see("pymongo db repr", repr(db))
    secrets.see("pymongo pool options", str(client.options.pool_options))
    _see_iamdb_objects(secrets)
    see_logs(secrets, caplog)
    for warning in recwarn.list:
        secrets.see("warning", str(warning.message))
    assert any(r.name.startswith("pymongo") for r in caplog.records)  # DEBUG really on
    assert any(r.name == "iamdb" for r in caplog.records)
    leaks = secrets.leaks()
    assert not leaks, "\n".join(sorted(set(leaks)))


def test_failure_paths_leak_nothing(
    secrets: Secrets, stack: Stack, caplog: Any, recwarn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    iamdb.get_mongo()  # a good lease first: its secrets must not show up in later failures
    for engine in ("pg", "mysql"):
        monkeypatch.setenv(f"IAMDB_{engine.upper()}_USER", "nobody")
    monkeypatch.setenv("IAMDB_DSQL_USER", "iamdb_dsql_app")  # not allowed by the policy
    monkeypatch.setenv("IAMDB_MONGO_ROLE_ARN", MONGO_UNLISTED_ROLE_ARN)
    iamdb.reset()
    errors: list[tuple[str, BaseException]] = []
    for where, call in (
        ("pg wrong user", iamdb.get_pg),
        ("mysql wrong user", iamdb.get_mysql),
        ("dsql role not allowed", iamdb.get_dsql),
        ("mongo not in $external", iamdb.get_mongo),
    ):
        with pytest.raises(AuthError) as info:
            call()
        errors.append((where, info.value))
    assert len(secrets.tokens) >= 3 and len(secrets.leases) >= 2

    monkeypatch.setenv("IAMDB_PG_PORT", "54x")
    iamdb.reset()
    with pytest.raises(ConfigError) as bad:
        iamdb.get_pg()
    assert bad.value.variable == "IAMDB_PG_PORT"
    errors.append(("bad config", bad.value))

    for where, exc in errors:
        secrets.see_exception(where, exc)
    _see_iamdb_objects(secrets)
    see_logs(secrets, caplog)
    for warning in recwarn.list:
        secrets.see("warning", str(warning.message))
    leaks = secrets.leaks()
    assert not leaks, "\n".join(sorted(set(leaks)))


def test_tls_and_network_failures_leak_nothing(
    secrets: Secrets, stack: Stack, caplog: Any, recwarn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server whose certificate does not verify, and nothing listening: ConnectError, and
    nothing the error reaches holds a secret (tokens were signed for both)."""
    assert stack.tls is not None
    errors: list[tuple[str, BaseException]] = []
    for what, variable, value in (
        ("TLS", "SSLROOTCERT", RDS_CA_BUNDLE),  # the RDS CAs did not sign devstack's cert
        ("unreachable", "PORT", str(_closed_port())),
    ):
        for engine, call in (("pg", iamdb.get_pg), ("mysql", iamdb.get_mysql)):
            var = f"IAMDB_{engine.upper()}_{variable}"
            monkeypatch.setenv(var, value)
            iamdb.reset()
            with pytest.raises(ConnectError) as info:
                call()
            monkeypatch.setenv(var, stack.env.get(var, ""))
            errors.append((f"{engine} {what}", info.value))
    ca = stack.tls.ca
    monkeypatch.setenv(
        "IAMDB_MONGO_URI",
        f"mongodb://localhost:{_closed_port()}/app?tls=true&tlsCAFile={ca}"
        "&serverSelectionTimeoutMS=300&connectTimeoutMS=300",
    )
    iamdb.reset()
    with pytest.raises(ConnectError) as info:
        iamdb.get_mongo()
    errors.append(("mongo unreachable", info.value))
    assert len(secrets.tokens) >= 4 and secrets.leases

    for where, exc in errors:
        secrets.see_exception(where, exc)
    see_logs(secrets, caplog)
    for warning in recwarn.list:
        secrets.see("warning", str(warning.message))
    leaks = secrets.leaks()
    assert not leaks, "\n".join(sorted(set(leaks)))


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_the_walk_sees_what_an_exception_keeps_alive(secrets: Secrets) -> None:
    """The deep checks can fail: a secret in a hidden ``__context__``'s attribute, in a dict
    local of a traceback frame, or in ``os.environ`` referenced by a local is found."""

    class DriverError(Exception):
        def __init__(self, password: str) -> None:
            super().__init__("login failed")
            self.pgconn = types.SimpleNamespace(password=password.encode())

    def login(kwargs: dict[str, str], environ: Mapping[str, str]) -> None:
        try:
            raise DriverError(kwargs["password"])
        except DriverError:
            raise AuthError("refused") from None  # from None hides the context, keeps it

    token = "tok-" + "x" * 40
    secrets.add_secret(token)
    secrets.add_secret(os.environ["AWS_SECRET_ACCESS_KEY"])
    try:
        login({"password": token}, os.environ)
    except AuthError as exc:
        secrets.see_exception("walk", exc)
    leaks = "\n".join(secrets.leaks())
    assert "__context__.pgconn" in leaks  # the driver's object behind `from None`
    assert "login().kwargs['password']" in leaks  # a frame's dict local
    assert "login().environ" in leaks  # os.environ through a local


def test_async_paths_leak_nothing(
    secrets: Secrets, caplog: Any, recwarn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """iamdb.aio as an async handler runs it (asyncio.run): both engines' happy paths, then
    refused logins (a wrong SQL user; a Mongo role that is no $external user)."""
    from iamdb import aio

    async def happy() -> list[tuple[str, object]]:
        conn = await aio.get_pg()
        assert await (await conn.execute("SELECT current_user")).fetchone() == ("iamdb_app",)
        client = await aio.get_mongo()
        await client.get_default_database().hygiene.insert_one({"aio": True})
        return [
            ("psycopg async repr", repr(conn)),
            ("psycopg async dsn", conn.info.dsn),
            ("psycopg async params", conn.info.get_parameters()),
            ("pymongo async repr", repr(client)),
            ("pymongo async pool options", str(client.options.pool_options)),
        ]

    for where, text in asyncio.run(happy()):
        secrets.see(where, text)
    for key, handle in iamdb._registry.default._aio.items():
        secrets.see(f"aio handle {key}", handle)
    monkeypatch.setenv("IAMDB_PG_USER", "nobody")
    monkeypatch.setenv("IAMDB_MONGO_ROLE_ARN", MONGO_UNLISTED_ROLE_ARN)
    iamdb.reset()
    errors: list[tuple[str, BaseException]] = []
    for where, get in (
        ("aio pg wrong user", aio.get_pg),
        ("aio mongo not in $external", aio.get_mongo),
    ):
        with pytest.raises(AuthError) as info:
            asyncio.run(get())  # type: ignore[arg-type]
        errors.append((where, info.value))
    assert len(secrets.tokens) >= 2 and len(secrets.leases) >= 2

    for where, exc in errors:
        secrets.see_exception(where, exc)
    _see_iamdb_objects(secrets)
    see_logs(secrets, caplog)
    for warning in recwarn.list:
        secrets.see("warning", str(warning.message))
    leaks = secrets.leaks()
    assert not leaks, "\n".join(sorted(set(leaks)))


def test_the_walk_follows_what_generators_and_tasks_keep(secrets: Secrets) -> None:
    """The async extension of the walk can fail: a secret in the frame of a suspended
    generator, or in a finished future, both held by a local of a traceback frame (and
    nowhere else: the walk sees each object once)."""
    secrets.add_secret("tok-" + "y" * 40)

    def steps() -> Iterator[int]:
        password = "".join(["tok-", "y" * 40])  # a string of its own
        yield len(password)

    async def runner() -> None:
        pending = steps()
        next(pending)
        answer = asyncio.get_running_loop().create_future()
        answer.set_result({"password": "".join(["tok-", "y" * 40])})
        raise AuthError("refused")

    try:
        asyncio.run(runner())
    except AuthError as exc:
        secrets.see_exception("walk", exc)
    leaks = "\n".join(secrets.leaks())
    assert "runner().pending generator steps().password" in leaks  # the generator's frame
    assert "runner().answer.outcome['password']" in leaks  # the future's result


def test_check_connect_output_leaks_nothing(secrets: Secrets, stack: Stack) -> None:
    """``python -m iamdb check --connect`` with DEBUG logging: stdout and stderr are clean."""
    env = {**os.environ, **stack.env, "IAMDB_LOG_LEVEL": "DEBUG"}
    result = subprocess.run(
        [sys.executable, "-m", "iamdb", "check", "--connect"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # every instance of stack.env logs in (test_cli checks which): none fails
    assert result.stdout.count("OK in") >= 7 and "  ERROR " not in result.stdout
    # The subprocess signs its own tokens: none is known here, so look for their shape too.
    secrets.see("check stdout", result.stdout)
    secrets.see("check stderr", result.stderr)
    for text in (result.stdout, result.stderr):
        assert "X-Amz-Signature" not in text and "X-Amz-Security-Token" not in text
    leaks = secrets.leaks()
    assert not leaks, "\n".join(sorted(set(leaks)))


def test_botocore_debug_wire_logs_leak_nothing(secrets: Secrets, caplog: Any) -> None:
    """iamdb's AWS calls (AssumeRole, whose answer holds the role's secret key; the fleet
    limiter's UpdateItem, signed with the function's session token) and its MONGODB-AWS
    signature (the role's session token) no longer go through botocore at all: with botocore's
    loggers at DEBUG, none of them logs a line, so none can leak."""
    import iamdb._mongo.aws

    iamdb.get_mongo().get_default_database().hygiene.count_documents({})
    assert iamdb.get_pg().execute("SELECT 1").fetchone() == (1,)
    see_logs(secrets, caplog, botocore=True)
    leaks = secrets.leaks()
    assert not leaks, "\n".join(sorted(set(leaks)))
    assert sys.modules["pymongo_auth_aws"] is iamdb._mongo.aws  # iamdb signed the login
    messages = [r.getMessage() for r in caplog.records if client_side(r.name, BOTOCORE)]
    assert messages == []
    assert len(secrets.roles) == 1 and secrets.tokens


def test_the_detector_sees_a_logged_token(secrets: Secrets, caplog: Any) -> None:
    """The checks above can fail: a token or signature logged by iamdb is caught."""
    iamdb.get_pg()
    token = iamdb._registry.default.managed("pg").last_token
    assert token is not None
    signature = parse_qs(urlsplit("https://" + token.value).query)["X-Amz-Signature"][0]
    logging.getLogger("iamdb").debug("oops %s", signature)
    see_logs(secrets, caplog)
    assert any("log iamdb:DEBUG" in leak for leak in secrets.leaks())
    secrets.see("an exception", RuntimeError(f"refused {token.value}"))
    assert any(leak.startswith("an exception") for leak in secrets.leaks())
