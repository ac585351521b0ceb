"""What the secret-hygiene tests share: every secret seen during a test, collected as iamdb makes
it, and every text that must not contain one (log records, exceptions walked with
:func:`tests.integration.kept_alive.kept_alive`, reprs). ``secrets`` is the fixture.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

import iamdb._mongo.client
from iamdb._aws.credentials import Credentials
from iamdb._aws.sts import Lease
from iamdb._aws.tokens import Token, TokenCache
from tests.integration.kept_alive import kept_alive

LOGGERS = ("", "iamdb", "psycopg", "pymysql", "pymongo", "botocore", "boto3", "urllib3")
SERVER_SIDE = ("moto", "werkzeug", "devstack")  # devstack's in-process servers
BOTOCORE = ("botocore", "boto3", "urllib3", "s3transfer")


class Secrets:
    """Every secret seen during a test, and every text that must not contain one."""

    def __init__(self) -> None:
        self.values: set[str] = set()
        self.texts: list[tuple[str, str]] = []  # (where, text)
        self.tokens: list[str] = []
        self.leases: list[Lease] = []
        self.roles: list[Lease] = []

    def add_secret(self, value: str | None) -> None:
        if value:
            assert len(value) >= 16, "too short to be a meaningful secret"
            self.values.add(value)

    def add_token(self, token: str) -> None:
        self.tokens.append(token)
        self.add_secret(token)
        query = parse_qs(urlsplit("https://" + token).query)
        (signature,) = query["X-Amz-Signature"]
        self.add_secret(signature)

    def add_credentials(self, creds: Credentials) -> None:
        self.add_secret(creds.secret_key)
        self.add_secret(creds.token)

    def see(self, where: str, text: object) -> None:
        self.texts.append((where, text if isinstance(text, str) else repr(text)))

    def see_exception(self, where: str, exc: BaseException) -> None:
        for path, text in kept_alive(exc):
            self.see(f"{where}: {path}", text)

    def leaks(self) -> list[str]:
        return [
            f"{where}: holds a secret of {len(secret)} chars starting {secret[:4]!r}"
            for where, text in self.texts
            for secret in self.values
            if secret in text
        ]


@pytest.fixture
def secrets(
    stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> Iterator[Secrets]:
    """Collects secrets as iamdb makes them; DEBUG logging for every logger involved."""
    found = Secrets()
    found.add_secret(stack_env["AWS_SECRET_ACCESS_KEY"])
    found.add_secret(stack_env["AWS_SESSION_TOKEN"])
    monkeypatch.setenv("IAMDB_LOG_LEVEL", "DEBUG")
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)

    real_get = TokenCache.get

    def spy_get(self: TokenCache, *args: Any, **kwargs: Any) -> Token:
        token = real_get(self, *args, **kwargs)
        found.add_token(token.value)
        return token

    real_fetch = iamdb._mongo.client.fetch_lease

    def spy_fetch(*args: Any, **kwargs: Any) -> Lease:
        lease = real_fetch(*args, **kwargs)
        found.leases.append(lease)
        found.add_credentials(lease.credentials)
        return lease

    real_assume = iamdb._mongo.client.assume_role

    def spy_assume(*args: Any, **kwargs: Any) -> Lease:
        role = real_assume(*args, **kwargs)
        found.roles.append(role)
        found.add_credentials(role.credentials)
        return role

    monkeypatch.setattr(TokenCache, "get", spy_get)
    monkeypatch.setattr(iamdb._mongo.client, "fetch_lease", spy_fetch)
    monkeypatch.setattr(iamdb._mongo.client, "assume_role", spy_assume)
    yield found


def client_side(name: str, family: tuple[str, ...]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in family)


def see_logs(found: Secrets, caplog: Any, *, botocore: bool = False) -> None:
    """Records of the client side: iamdb, the drivers, the root logger; botocore's on request.

    moto and werkzeug are devstack's in-process AWS, a server: what it logs is not the
    client's. botocore's wire logging is checked apart (see the xfail test below).
    """
    for record in caplog.records:
        if client_side(record.name, SERVER_SIDE):
            continue
        if client_side(record.name, BOTOCORE) and not botocore:
            continue
        where = f"log {record.name}:{record.levelname}"
        found.see(where + " message", record.getMessage())
        found.see(where + " args", record.args)
        found.see(where + " formatted", caplog.handler.format(record))  # with the traceback
        found.see(where + " exc_text", record.exc_text or "")
