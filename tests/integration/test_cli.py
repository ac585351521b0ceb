"""``python -m iamdb`` against devstack: tokens that log in, a check that masks secrets."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.integration.cli import run_iamdb

pytestmark = pytest.mark.integration


def test_token_command_prints_a_token_the_server_accepts(stack: Any, stack_env: Any) -> None:
    result = run_iamdb(stack.env, "token", "pg")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    env = stack.env
    with psycopg.connect(
        host=env["IAMDB_PG_HOST"],
        port=int(env["IAMDB_PG_PORT"]),
        user=env["IAMDB_PG_USER"],
        dbname=env["IAMDB_PG_DBNAME"],
        password=token,
        sslmode="verify-full",
        sslrootcert=env["IAMDB_PG_SSLROOTCERT"],
    ) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("iamdb_app",)


def test_dsql_token_command_prints_a_db_connect_admin_token_the_cluster_accepts(
    stack: Any, stack_env: Any
) -> None:
    result = run_iamdb(stack.env, "token", "dsql")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.startswith(f"{stack.env['IAMDB_DSQL_IAM_HOST']}/?Action=DbConnectAdmin&")
    env = stack.env
    with psycopg.connect(
        host=env["IAMDB_DSQL_IAM_HOST"],
        hostaddr=env["IAMDB_DSQL_HOST"],
        port=int(env["IAMDB_DSQL_PORT"]),
        user="admin",
        dbname="postgres",
        password=token,
        sslmode="verify-full",
        sslrootcert=env["IAMDB_DSQL_SSLROOTCERT"],
    ) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("admin",)


def test_check_connect_reports_every_instance_and_masks_secrets(stack: Any, stack_env: Any) -> None:
    result = run_iamdb(stack.env, "check", "--connect")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    labels = ["[pg]", "[pg:reporting]", "[mysql]", "[mysql:reporting]", "[dsql]"]
    labels += ["[valkey]", "[valkey:orders]"]
    if stack.aurora_pg is not None:  # the data account's, through its roles
        labels += ["[pg:aurora]", "[pg:reader]", "[dsql:tenant]"]
        if stack.aurora_mysql is not None:
            labels += ["[mysql:aurora]", "[mysql:reader]"]
        assert "signed by role: arn:aws:iam::210987654321:role/iamdb-data-access" in out
        assert "external id set" in out and "writes: confirmed at every login" in out
    for label in labels:
        assert label in out
    assert out.count("OK in") == len(labels) and "TLSv1." in out
    assert "token: dsql:DbConnectAdmin, 900 s  max age: 3300 s" in out
    assert "token: elasticache:Connect for ElastiCache 'iamdb-cache'" in out
    assert "user iamdb-app, tls TLSv1." in out
    for secret in (stack.env["AWS_SECRET_ACCESS_KEY"], stack.env["AWS_SESSION_TOKEN"]):
        assert secret not in out and secret not in result.stderr
    assert stack.env["AWS_ACCESS_KEY_ID"] not in out  # masked too, only its ends are shown
    assert "X-Amz-Signature" not in out


def test_bad_setting_exits_2_naming_the_variable(stack: Any, stack_env: Any) -> None:
    result = run_iamdb({**stack.env, "IAMDB_PG_PORT": "54x"}, "token", "pg")
    assert result.returncode == 2
    assert "IAMDB_PG_PORT" in result.stderr and result.stdout == ""


def test_check_says_where_metrics_go(stack: Any, stack_env: Any) -> None:
    assert "metrics: off" in run_iamdb(stack.env, "check").stdout
    shop = run_iamdb({**stack.env, "POWERTOOLS_METRICS_NAMESPACE": "Shop"}, "check")
    assert "metrics: EMF through Powertools, namespace Shop" in shop.stdout
    bad = run_iamdb({**stack.env, "IAMDB_METRICS_NAMESPACE": "AWS/RDS"}, "check")
    assert bad.returncode == 1 and "IAMDB_METRICS_NAMESPACE" in bad.stdout
