"""devstack's template policy check: the example role is held to template.yaml's statements."""

from __future__ import annotations

from pathlib import Path

from devstack.policy import TemplatePolicy

ROLE = "arn:aws:sts::123456789012:assumed-role/iamdb-example-function/s"


def test_template_allows_the_configured_users_only() -> None:
    policy = TemplatePolicy.from_template("iamdb-example-function")
    assert policy(ROLE, "pg", "iamdb_app")[0]
    assert policy(ROLE, "mysql", "iamdb_app")[0]
    assert policy(ROLE, "pg", "iamdb_reporting")[0]  # devstack's own grant
    ok, reason = policy(ROLE, "pg", "postgres")
    assert not ok and "dbuser:db-IAMDBDEVSTACKPG0000000000/postgres" in reason


def test_other_principals_are_not_judged() -> None:
    policy = TemplatePolicy.from_template("iamdb-example-function")
    assert policy("arn:aws:iam::123456789012:user/dev", "pg", "postgres")[0]


def test_a_typo_in_the_templates_resource_arn_is_refused(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    text = (repo / "template.yaml").read_text()
    assert ":dbuser:${PgDbiResourceId}/${PgUser}" in text
    # A copy-paste slip: the PostgreSQL statement names the MySQL instance's resource id.
    typo = text.replace(":dbuser:${PgDbiResourceId}/", ":dbuser:${MySqlDbiResourceId}/")
    (tmp_path / "template.yaml").write_text(typo)
    (tmp_path / "samconfig.toml").write_text((repo / "samconfig.toml").read_text())
    policy = TemplatePolicy.from_template("iamdb-example-function", tmp_path / "template.yaml")
    assert not policy(ROLE, "pg", "iamdb_app")[0]
    assert policy(ROLE, "mysql", "iamdb_app")[0]
