"""Fixtures for tests against devstack's real servers (moto, PostgreSQL, MariaDB).

``stack`` starts one :class:`devstack.stack.Stack` per test session; ``stack_env`` puts the
stack's environment (what a Lambda function using iamdb would see) into ``os.environ`` for
one test and resets iamdb's singletons around it. They live here, not in tests/integration,
so that iamdb's integration tests and devstack's own (tests/devstack) share the one stack.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest

from devstack.stack import Stack

# Variables from the developer's shell that would change what iamdb or boto3 do.
_ISOLATE = ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_ENDPOINT_URL")


def mariadb_available() -> bool:
    return importlib.util.find_spec("devstack.mariadb") is not None


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    devstack = Stack(mysql=mariadb_available())
    devstack.start()
    try:
        yield devstack
    finally:
        devstack.stop()


def _reset_iamdb() -> None:
    import iamdb

    reset = getattr(iamdb, "reset", None)
    if callable(reset):
        reset()


@pytest.fixture
def stack_env(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    for name in list(os.environ):
        if (name.startswith("IAMDB_") and name not in stack.env) or name in _ISOLATE:
            monkeypatch.delenv(name)
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    _reset_iamdb()
    try:
        yield stack.env
    finally:
        _reset_iamdb()
