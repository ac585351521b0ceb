"""devstack enforces template.yaml's rds-db:connect policy on the example function's role."""

from __future__ import annotations

from typing import Any

import pytest

import iamdb

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("engine", ["pg", "mysql"])
def test_user_outside_the_templates_policy_is_refused(
    stack: Any, stack_env: Any, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    server = stack.pg if engine == "pg" else stack.mysql
    server.create_iam_user("iamdb_unlisted", "unlisted")  # a real IAM user, no grant for it
    prefix = f"IAMDB_{engine.upper()}_"
    monkeypatch.setenv(prefix + "USER", "iamdb_unlisted")
    monkeypatch.setenv(prefix + "DBNAME", "unlisted")
    monkeypatch.setenv("IAMDB_AUTH_RETRIES", "0")
    with pytest.raises(iamdb.AuthError):
        (iamdb.get_pg if engine == "pg" else iamdb.get_mysql)()
    last = [e for e in stack.verifier.events if e.user == "iamdb_unlisted"][-1]
    assert (last.ok, last.reason) == (False, "not authorized")
