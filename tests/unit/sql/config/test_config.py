"""Configuration: defaults, named instances, region parsing and every error."""

from __future__ import annotations

import pytest

from iamdb._core.env import RDS_CA_BUNDLE
from iamdb._core.runtime import Runtime
from iamdb._core.settings import load_settings
from iamdb._sql.config import load_sql_config, region_from_endpoint
from iamdb.errors import ConfigError

RDS = "mydb.c9akciq32.eu-west-1.rds.amazonaws.com"


def env(**kw: str) -> dict[str, str]:
    base = {"IAMDB_PG_HOST": RDS, "IAMDB_PG_USER": "app"}
    base.update(kw)
    return base


def test_defaults() -> None:
    cfg = load_sql_config("pg", None, env())
    assert (cfg.host, cfg.port, cfg.user, cfg.dbname) == (RDS, 5432, "app", None)
    assert (cfg.signing_host, cfg.signing_port, cfg.region) == (RDS, 5432, "eu-west-1")
    assert (cfg.sslmode, cfg.sslrootcert, cfg.connect_timeout) == (
        "verify-full",
        RDS_CA_BUNDLE,
        5,
    )
    assert cfg.label == "pg"


def test_the_client_name_is_the_function_name_of_the_environment_given() -> None:
    from iamdb._sql.pg import _params

    assert load_sql_config("pg", None, env()).client_name == "iamdb"
    named = load_sql_config("pg", None, env(AWS_LAMBDA_FUNCTION_NAME="f" * 70))
    until = (lambda: 0.0, 10.0)
    assert _params(named, until)["application_name"] == "f" * 63  # PostgreSQL's NAMEDATALEN - 1


def test_mysql_default_port_and_mysql_sslmode_spelling() -> None:
    e = {"IAMDB_MYSQL_HOST": RDS, "IAMDB_MYSQL_USER": "u", "IAMDB_MYSQL_SSLMODE": "VERIFY_IDENTITY"}
    cfg = load_sql_config("mysql", None, e)
    assert (cfg.port, cfg.sslmode) == (3306, "verify-full")


def test_named_instance_reads_its_own_prefix() -> None:
    e = env(
        IAMDB_PG_REPORTING_HOST="10.0.0.5",
        IAMDB_PG_REPORTING_USER="rep",
        IAMDB_PG_REPORTING_IAM_HOST=f"{RDS}:5433",
        IAMDB_PG_REPORTING_DBNAME="r",
    )
    cfg = load_sql_config("pg", "reporting", e)
    assert (cfg.host, cfg.user, cfg.dbname, cfg.label) == ("10.0.0.5", "rep", "r", "pg:reporting")
    assert (cfg.signing_host, cfg.signing_port, cfg.port) == (RDS, 5433, 5432)
    assert cfg.region == "eu-west-1"


def test_iam_host_without_port_keeps_the_connect_port() -> None:
    cfg = load_sql_config(
        "pg", None, env(IAMDB_PG_HOST="127.0.0.1", IAMDB_PG_PORT="6000", IAMDB_PG_IAM_HOST=RDS)
    )
    assert (cfg.signing_host, cfg.signing_port) == (RDS, 6000)


@pytest.mark.parametrize(
    ("host", "region"),
    [
        ("mydb.c9akciq32.us-east-1.rds.amazonaws.com", "us-east-1"),
        ("MyDB.C9AKCIQ32.US-EAST-2.RDS.AMAZONAWS.COM", "us-east-2"),
        ("aurora.cluster-c9akciq32.ap-southeast-2.rds.amazonaws.com", "ap-southeast-2"),
        ("aurora.cluster-ro-c9akciq32.eu-central-1.rds.amazonaws.com", "eu-central-1"),
        ("custom.cluster-custom-c9akciq32.sa-east-1.rds.amazonaws.com", "sa-east-1"),
        ("myproxy.proxy-c9akciq32.us-west-2.rds.amazonaws.com", "us-west-2"),
        ("mydb.c9akciq32.cn-north-1.rds.amazonaws.com.cn", "cn-north-1"),
        ("mydb.c9akciq32.us-gov-west-1.rds.amazonaws.com", "us-gov-west-1"),
        ("mydb.c9akciq32.us-east-1.rds.amazonaws.com.", "us-east-1"),
        ("db.example.com", None),
        ("10.1.2.3", None),
        ("rds.amazonaws.com", None),
        ("mydb.us-east-1.rds.amazonaws.com.evil.com", None),
    ],
)
def test_region_from_endpoint(host: str, region: str | None) -> None:
    assert region_from_endpoint(host) == region


def test_region_precedence() -> None:
    assert load_sql_config("pg", None, env(IAMDB_PG_REGION="us-west-1")).region == "us-west-1"
    e = env(IAMDB_PG_HOST="db.internal", AWS_REGION="ca-central-1")
    assert load_sql_config("pg", None, e).region == "ca-central-1"
    e = env(IAMDB_PG_HOST="127.0.0.1", IAMDB_PG_IAM_HOST=RDS, AWS_REGION="ca-central-1")
    assert load_sql_config("pg", None, e).region == "eu-west-1"


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        ({"IAMDB_PG_HOST": ""}, "IAMDB_PG_HOST"),
        ({"IAMDB_PG_HOST": "db host"}, "IAMDB_PG_HOST"),
        ({"IAMDB_PG_HOST": "h;sslmode=disable"}, "IAMDB_PG_HOST"),
        ({"IAMDB_PG_HOST": "a" * 300}, "IAMDB_PG_HOST"),
        ({"IAMDB_PG_USER": ""}, "IAMDB_PG_USER"),
        ({"IAMDB_PG_USER": "a\x00b"}, "IAMDB_PG_USER"),
        ({"IAMDB_PG_USER": "u" * 200}, "IAMDB_PG_USER"),
        ({"IAMDB_PG_PORT": "0"}, "IAMDB_PG_PORT"),
        ({"IAMDB_PG_PORT": "65536"}, "IAMDB_PG_PORT"),
        ({"IAMDB_PG_PORT": "54x"}, "IAMDB_PG_PORT"),
        ({"IAMDB_PG_PORT": "5432.0"}, "IAMDB_PG_PORT"),
        ({"IAMDB_PG_REGION": "mars-1"}, "IAMDB_PG_REGION"),
        ({"IAMDB_PG_SSLMODE": "prefer"}, "IAMDB_PG_SSLMODE"),
        ({"IAMDB_PG_SSLMODE": "allow"}, "IAMDB_PG_SSLMODE"),
        ({"IAMDB_PG_SSLROOTCERT": "/nonexistent/ca.pem"}, "IAMDB_PG_SSLROOTCERT"),
        ({"IAMDB_PG_CONNECT_TIMEOUT": "-1"}, "IAMDB_PG_CONNECT_TIMEOUT"),
        ({"IAMDB_PG_CONNECT_TIMEOUT": "nan"}, "IAMDB_PG_CONNECT_TIMEOUT"),
        ({"IAMDB_PG_IAM_HOST": "x:99999"}, "IAMDB_PG_IAM_HOST"),
        ({"IAMDB_PG_IAM_HOST": "bad host:1"}, "IAMDB_PG_IAM_HOST"),
        ({"IAMDB_PG_HOST": "db.internal"}, "IAMDB_PG_REGION"),  # no region anywhere
    ],
)
def test_bad_values_name_the_variable(changes: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_sql_config("pg", None, env(**changes))
    assert info.value.variable == variable
    assert str(info.value).startswith(variable + ":")


def test_missing_host_names_the_named_variable() -> None:
    with pytest.raises(ConfigError, match="IAMDB_PG_REPORTING_HOST"):
        load_sql_config("pg", "reporting", env())


@pytest.mark.parametrize("name", ["", "1abc", "a-b", "a" * 40, "x y"])
def test_bad_instance_name(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_sql_config("pg", name, env())
    assert info.value.variable == "name"


def test_settings() -> None:
    s = load_settings({})
    assert (s.token_refresh_seconds, s.healthcheck_idle_seconds, s.log_level) == (840, 30, None)
    s = load_settings({"IAMDB_TOKEN_REFRESH_SECONDS": "600", "IAMDB_LOG_LEVEL": "debug"})
    assert (s.token_refresh_seconds, s.log_level) == (600, "DEBUG")
    for var, bad in [
        ("IAMDB_TOKEN_REFRESH_SECONDS", "901"),
        ("IAMDB_TOKEN_REFRESH_SECONDS", "0"),
        ("IAMDB_HEALTHCHECK_IDLE_SECONDS", "-5"),
        ("IAMDB_LOG_LEVEL", "LOUD"),
    ]:
        with pytest.raises(ConfigError) as info:
            load_settings({var: bad})
        assert info.value.variable == var


def test_check_discovers_exactly_the_instances_get_pg_would_read() -> None:
    """``python -m iamdb check`` and get_pg()/get_mysql() agree on which names exist."""
    from iamdb._cli import configured_instances

    environ = {
        "IAMDB_PG_HOST": RDS,
        "IAMDB_PG_IAM_HOST": RDS,  # the default instance's IAM_HOST, not an instance "iam"
        "IAMDB_PG_REPORTING_HOST": RDS,
        "IAMDB_PG_REPORTING_IAM_HOST": RDS,  # reporting's IAM_HOST, not "reporting_iam"
        "IAMDB_MYSQL_A_B_HOST": RDS,
        "IAMDB_PG_reporting_HOST": RDS,  # get_pg("reporting") reads IAMDB_PG_REPORTING_HOST
        "IAMDB_PG_9X_HOST": RDS,  # no name reads it
        "IAMDB_PG_" + "A" * 40 + "_HOST": RDS,
        "IAMDB_MYSQL_EMPTY_HOST": " ",
    }
    found = configured_instances(environ)
    assert found == [("mysql", "a_b"), ("pg", None), ("pg", "reporting")]
    for engine, name in found:
        cfg = load_sql_config(engine, name, {**environ, "IAMDB_PG_USER": "u", **_users(name)})
        assert cfg.prefix + "HOST" in environ


def _users(name: str | None) -> dict[str, str]:
    return {} if name is None else {f"IAMDB_{e}_{name.upper()}_USER": "u" for e in ("PG", "MYSQL")}


def test_reserved_and_case_variant_names() -> None:
    e = env(IAMDB_PG_REPORTING_HOST=RDS, IAMDB_PG_REPORTING_USER="rep")
    assert load_sql_config("pg", "Reporting", e) == load_sql_config("pg", "reporting", e)
    for name in ("iam", "IAM", "x_iam"):
        with pytest.raises(ConfigError, match="IAM_HOST") as info:
            load_sql_config("pg", name, e)
        assert info.value.variable == "name"


def test_one_configuration_is_one_connection_whatever_the_spelling() -> None:
    from iamdb._registry import Registry

    registry = Registry(
        runtime=Runtime(environ=env(IAMDB_PG_REPORTING_HOST=RDS, IAMDB_PG_REPORTING_USER="rep"))
    )
    try:
        managed = registry.managed("pg", "reporting")
        assert registry.managed("pg", "REPORTING") is managed
        assert registry.managed("pg", "Reporting") is managed
        assert managed.cfg.name == "reporting"
    finally:
        registry.reset()


# -- a role to assume, and a writer -------------------------------------------------------------

ROLE = "arn:aws:iam::210987654321:role/DataAccess"
CLUSTER = "orders.cluster-c9akciq32.eu-west-1.rds.amazonaws.com"


def test_a_role_signs_the_instance_s_tokens_and_is_part_of_its_target() -> None:
    cfg = load_sql_config(
        "pg", None, env(IAMDB_PG_ROLE_ARN=ROLE, IAMDB_PG_EXTERNAL_ID="t-7", AWS_REGION="eu-west-1")
    )
    assert cfg.role is not None and cfg.role.arn == ROLE and cfg.role.external_id == "t-7"
    assert cfg.target.role == cfg.role and cfg.role.setting == "IAMDB_PG_ROLE_ARN"
    assert cfg.target.key == load_sql_config("pg", None, env()).target.key  # paced per server
    assert load_sql_config("pg", None, env()).role is None


@pytest.mark.parametrize(
    ("engine", "changes", "variable"),
    [
        ("pg", {"IAMDB_PG_SESSION_SECONDS": "1499"}, "IAMDB_PG_SESSION_SECONDS"),
        ("pg", {"IAMDB_PG_ROLE_ARN": "arn:aws:iam::1:role/x"}, "IAMDB_PG_ROLE_ARN"),
        ("pg", {"AWS_REGION": ""}, "AWS_REGION"),
        ("dsql", {"IAMDB_DSQL_TOKEN_EXPIRES_SECONDS": "3600"}, "IAMDB_DSQL_SESSION_SECONDS"),
        ("dsql", {"IAMDB_DSQL_WRITER": "true"}, "IAMDB_DSQL_WRITER"),
        ("pg", {"IAMDB_PG_WRITER": "maybe"}, "IAMDB_PG_WRITER"),
    ],
)
def test_role_and_writer_mistakes_name_the_variable(
    engine: str, changes: dict[str, str], variable: str
) -> None:
    base = {
        "IAMDB_PG_HOST": RDS,
        "IAMDB_PG_USER": "app",
        "IAMDB_DSQL_HOST": "abcdefghijklmnopqrstuvwxyz.dsql.eu-west-1.on.aws",
        "AWS_REGION": "eu-west-1",
        f"IAMDB_{engine.upper()}_ROLE_ARN": ROLE,
        **changes,
    }
    with pytest.raises(ConfigError) as info:
        load_sql_config(engine, None, base)  # type: ignore[arg-type]
    assert info.value.variable == variable


def test_a_long_dsql_token_needs_a_longer_session() -> None:
    cfg = load_sql_config(
        "dsql",
        None,
        {
            "IAMDB_DSQL_HOST": "abcdefghijklmnopqrstuvwxyz.dsql.eu-west-1.on.aws",
            "IAMDB_DSQL_ROLE_ARN": ROLE,
            "IAMDB_DSQL_TOKEN_EXPIRES_SECONDS": "3600",
            "IAMDB_DSQL_SESSION_SECONDS": "4200",
            "AWS_REGION": "eu-west-1",
        },
    )
    assert cfg.role is not None and cfg.target.lifetime == 3600


@pytest.mark.parametrize(
    ("host", "writer"),
    [
        (CLUSTER, True),
        (CLUSTER.upper(), True),
        ("orders.cluster-c9akciq32.cn-north-1.rds.amazonaws.com.cn", True),
        ("orders.cluster-ro-c9akciq32.eu-west-1.rds.amazonaws.com", False),
        ("orders.cluster-custom-c9akciq32.eu-west-1.rds.amazonaws.com", False),
        (RDS, False),  # an instance endpoint: writer or reader, its name does not say
        ("orders.proxy-c9akciq32.eu-west-1.rds.amazonaws.com", False),
    ],
)
def test_the_writer_check_is_on_by_default_for_cluster_endpoints_only(
    host: str, writer: bool
) -> None:
    assert load_sql_config("pg", None, env(IAMDB_PG_HOST=host)).writer is writer


def test_the_writer_setting_overrides_the_name_and_follows_the_signing_host() -> None:
    assert not load_sql_config(
        "pg", None, env(IAMDB_PG_HOST=CLUSTER, IAMDB_PG_WRITER="false")
    ).writer
    assert load_sql_config("pg", None, env(IAMDB_PG_WRITER="TRUE")).writer
    tunnel = env(IAMDB_PG_HOST="10.1.2.3", IAMDB_PG_IAM_HOST=CLUSTER)
    assert load_sql_config("pg", None, tunnel).writer  # the name the token is signed for
    reader = env(IAMDB_PG_READER_HOST=CLUSTER.replace("cluster-", "cluster-ro-"))
    reader["IAMDB_PG_READER_USER"] = "app"
    assert not load_sql_config("pg", "reader", reader).writer
