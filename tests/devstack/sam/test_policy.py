"""devstack's template policy check: the example role is held to template.yaml's statements."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.sam.policy import DSQL_CLUSTER_ARN, TemplatePolicy
from tests.paths import ROOT

ROLE = "arn:aws:sts::123456789012:assumed-role/iamdb-example-function/s"
REPO = ROOT
CONNECT = "rds-db:connect"


def test_template_allows_the_configured_users_only() -> None:
    policy = TemplatePolicy.from_template("iamdb-example-function")
    assert policy(ROLE, "pg", "iamdb_app", CONNECT)[0]
    assert policy(ROLE, "mysql", "iamdb_app", CONNECT)[0]
    assert policy(ROLE, "pg", "iamdb_reporting", CONNECT)[0]  # devstack's own grant
    ok, reason = policy(ROLE, "pg", "postgres", CONNECT)
    assert not ok and "dbuser:db-IAMDBDEVSTACKPG0000000000/postgres" in reason


def test_other_principals_are_not_judged() -> None:
    policy = TemplatePolicy.from_template("iamdb-example-function")
    assert policy("arn:aws:iam::123456789012:user/dev", "pg", "postgres", CONNECT)[0]


def _copy(
    tmp_path: Path, template: tuple[str, str] = ("", ""), samconfig: tuple[str, str] = ("", "")
) -> Path:
    """template.yaml and samconfig.toml copied into ``tmp_path``, each with one (old, new)
    replacement (empty old: unchanged)."""
    for name, (old, new) in (("template.yaml", template), ("samconfig.toml", samconfig)):
        text = (REPO / name).read_text()
        assert old in text
        (tmp_path / name).write_text(text.replace(old, new) if old else text)
    return tmp_path / "template.yaml"


def test_a_typo_in_the_templates_resource_arn_is_refused(tmp_path: Path) -> None:
    # A copy-paste slip: the PostgreSQL statement names the MySQL instance's resource id.
    typo = _copy(tmp_path, (":dbuser:${PgDbiResourceId}/", ":dbuser:${MySqlDbiResourceId}/"))
    policy = TemplatePolicy.from_template("iamdb-example-function", typo)
    assert not policy(ROLE, "pg", "iamdb_app", CONNECT)[0]
    assert policy(ROLE, "mysql", "iamdb_app", CONNECT)[0]


def test_dsql_admin_is_allowed_db_connect_admin_only() -> None:
    """The template's DsqlConnectPolicy, for devstack's DsqlUser=admin: DbConnectAdmin only."""
    policy = TemplatePolicy.from_template("iamdb-example-function")
    assert policy(ROLE, "dsql", "admin", "dsql:DbConnectAdmin") == (True, "allowed")
    ok, reason = policy(ROLE, "dsql", "iamdb_dsql_app", "dsql:DbConnect")
    assert not ok
    assert reason == f"no dsql:DbConnect on {DSQL_CLUSTER_ARN} in template.yaml's policies"
    assert not policy(ROLE, "pg", "iamdb_app", "dsql:DbConnect")[0]


def test_dsql_custom_role_gets_db_connect(tmp_path: Path) -> None:
    template = _copy(tmp_path, samconfig=('"DsqlUser=admin",\n]', '"DsqlUser=iamdb_dsql_app",\n]'))
    policy = TemplatePolicy.from_template("iamdb-example-function", template)
    assert policy(ROLE, "dsql", "iamdb_dsql_app", "dsql:DbConnect")[0]
    assert not policy(ROLE, "dsql", "admin", "dsql:DbConnectAdmin")[0]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (":cluster/${DsqlClusterId}", ":cluster/${DsqlClusterId}x"),
        ("dsql:DbConnectAdmin, dsql:DbConnect]", "dsql:DbConectAdmin, dsql:DbConnect]"),
        ("arn:${AWS::Partition}:dsql:", "arn:${AWS::Partition}:rds-db:"),
    ],
    ids=["cluster-id", "action", "service"],
)
def test_a_typo_in_the_dsql_policy_is_refused(tmp_path: Path, old: str, new: str) -> None:
    policy = TemplatePolicy.from_template("iamdb-example-function", _copy(tmp_path, (old, new)))
    assert not policy(ROLE, "dsql", "admin", "dsql:DbConnectAdmin")[0]
