"""The template reader (devstack/sam/template.py) and the CI validation
(scripts/validate_template.py).

Validation is proven on broken copies of the real template: a bad ``!Ref`` in a function's
``Layers``, a wrong runtime, a typo in the policy's ``dbuser`` ARN must each fail; so must a
layer with the wrong runtime or architecture, one without its SSM parameter, a function given
another runtime's layer and SAR metadata ``sam publish`` would refuse (iamdb's own rules, checked
in-process).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devstack.sam.template import (
    NO_VALUE,
    Template,
    TemplateError,
    load_samconfig,
    load_yaml,
    parse_overrides,
)
from tests.paths import ROOT

REPO = ROOT
TEMPLATE = REPO / "template.yaml"


def _template(tmp_path: Path, text: str, **overrides: str) -> Template:
    path = tmp_path / "template.yaml"
    path.write_text(text)
    return Template.load(path, overrides)


_SMALL = """\
Parameters:
  Stage: {Type: String, Default: dev, AllowedValues: [dev, prod]}
  Subnets: {Type: CommaDelimitedList, Default: ""}
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
  InVpc: !Not [!Equals [!Join ["", !Ref Subnets], ""]]
Globals:
  Function:
    Runtime: python3.12
    Timeout: 10
    Layers: [!Ref Lib]
    Environment:
      Variables: {A: global, B: global}
Resources:
  Lib:
    Type: AWS::Serverless::LayerVersion
    Properties: {LayerName: !Sub "lib-${Stage}", ContentUri: lib/}
  Table:
    Type: AWS::DynamoDB::Table
    Properties: {TableName: !Sub "${AWS::StackName}-t"}
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: code/
      Handler: app.handler
      Timeout: 3
      Environment:
        Variables:
          B: !If [IsProd, prod-b, dev-b]
          C: !GetAtt Table.Arn
          D: !Select [1, !Split [",", "x,y,z"]]
          E: !Sub ["${X}-${!Literal}", {X: !Ref "AWS::Region"}]
          F: 5432
      VpcConfig: !If [InVpc, {SubnetIds: !Ref Subnets}, !Ref "AWS::NoValue"]
      Policies:
        - Statement:
            - Effect: Allow
              Action: rds-db:connect
              Resource: !Sub "arn:${AWS::Partition}:rds-db:${AWS::Region}:\\
                ${AWS::AccountId}:dbuser:db-1/u"
"""


def test_short_tags_become_intrinsics(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(
        "Resources:\n  R:\n    Type: X\n    Properties: {A: !Ref P, B: !GetAtt R.Arn, "
        "C: !Sub s, D: !Join ['', [a]]}\n"
    )
    props = load_yaml(tmp_path / "t.yaml")["Resources"]["R"]["Properties"]
    assert props == {
        "A": {"Ref": "P"},
        "B": {"Fn::GetAtt": ["R", "Arn"]},
        "C": {"Fn::Sub": "s"},
        "D": {"Fn::Join": ["", ["a"]]},
    }


def test_globals_merge_and_intrinsics_resolve(tmp_path: Path) -> None:
    fn = _template(tmp_path, _SMALL).function("Fn")
    assert fn.runtime == "python3.12" and fn.timeout_s == 3 and fn.memory_mb == 128
    assert fn.layers == ["Lib"] and fn.external_layers == []
    assert fn.environment == {
        "A": "global",
        "B": "dev-b",
        "C": "arn:aws:dynamodb:us-east-1:123456789012:table/iamdb-t",
        "D": "y",
        "E": "us-east-1-${Literal}",
        "F": "5432",
    }
    assert fn.code_uri == (tmp_path / "code").resolve()
    assert fn.policy_statements[0]["Resource"] == (
        "arn:aws:rds-db:us-east-1:123456789012:dbuser:db-1/u"
    )


def test_overrides_conditions_and_no_value(tmp_path: Path) -> None:
    dev = _template(tmp_path, _SMALL)
    assert dev.resolve(dev.function_properties("Fn")["VpcConfig"]) is NO_VALUE
    assert "VpcConfig" not in dev.resolve(dev.function_properties("Fn"))
    prod = _template(tmp_path, _SMALL, Stage="prod", Subnets="subnet-1,subnet-2")
    assert prod.function("Fn").environment["B"] == "prod-b"
    assert prod.resolve(prod.function_properties("Fn")["VpcConfig"]) == {
        "SubnetIds": ["subnet-1", "subnet-2"]
    }
    assert prod.ref("Lib") == "arn:aws:lambda:us-east-1:123456789012:layer:lib-prod:1"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"Stage": "qa"}, "is not one of"),
        ({"Nope": "1"}, "name no template parameter"),
    ],
)
def test_bad_overrides_are_refused(tmp_path: Path, overrides: dict[str, str], message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        _template(tmp_path, _SMALL, **overrides)


def test_unknown_ref_is_an_error(tmp_path: Path) -> None:
    t = _template(tmp_path, _SMALL.replace("!Ref Lib", "!Ref Lob"))
    with pytest.raises(TemplateError, match="Lob"):
        t.function("Fn")


def test_parse_overrides_like_sam() -> None:
    assert parse_overrides('A=1 B="two words" C=') == {"A": "1", "B": "two words", "C": ""}
    assert parse_overrides(["A=1", "B=x=y"]) == {"A": "1", "B": "x=y"}
    with pytest.raises(TemplateError):
        parse_overrides("novalue")


def test_repository_template_and_samconfig() -> None:
    local = load_samconfig(REPO / "samconfig.toml", "local_invoke")
    assert local.env_vars == ".devstack/env.json"
    template = Template.load(TEMPLATE, local.parameter_overrides)
    assert sorted(template.function_ids()) == [
        "DsqlExampleFunction",
        "MongoExampleFunction",
        "MySqlExampleFunction",
        "PgExampleFunction",
        "SqlAlchemyExampleFunction",
        "ValkeyExampleFunction",
    ]
    pg = template.function("PgExampleFunction")
    assert pg.handler == "app.handler" and pg.code_uri == REPO / "functions" / "pg_example"
    assert pg.layers == ["IamDbLayerPython312X86"]  # the x86_64 layer of the default runtime
    for runtime in ("python3.11", "python3.14"):  # the layer follows PythonRuntime
        chosen = Template.load(TEMPLATE, {**local.parameter_overrides, "PythonRuntime": runtime})
        fn = chosen.function("PgExampleFunction")
        assert fn.runtime == runtime
        assert fn.layers == [f"IamDbLayerPython{runtime[6:].replace('.', '')}X86"]
        assert (
            chosen.layer_name(fn.layers[0]) == f"iamdb-python{runtime[6:].replace('.', '')}-x86_64"
        )
    assert {s["Action"]: s["Resource"] for s in pg.policy_statements} == {
        "rds-db:connect": "arn:aws:rds-db:us-east-1:123456789012:dbuser:"
        "db-IAMDBDEVSTACKPG0000000000/iamdb_app",
        "dynamodb:UpdateItem": "arn:aws:dynamodb:us-east-1:123456789012:table/iamdb-throttle",
    }
    mongo = template.function("MongoExampleFunction")
    assert mongo.policy_statements == [
        {
            "Sid": "AssumeMongoRole",
            "Effect": "Allow",
            "Action": "sts:AssumeRole",
            "Resource": "arn:aws:iam::123456789012:role/iamdb-mongo-access",
        }
    ]
    example = template.function("DsqlExampleFunction")
    assert example.environment["IAMDB_DSQL_HOST"] == (
        "iamdbdevstack0000000000000.dsql.us-east-1.on.aws"
    )
    assert example.environment["IAMDB_DSQL_USER"] == "admin"
    assert example.environment["IAMDB_DSQL_SSLROOTCERT"] == ""  # the system's CA store
    assert [s["Action"] for s in example.policy_statements] == ["dynamodb:UpdateItem"]
    assert template.function_properties("DsqlExampleFunction")["Policies"][0] == {
        "Ref": "DsqlConnectPolicy"
    }
    dsql = template.resolve(template.resource("DsqlConnectPolicy")["Properties"])
    assert dsql["PolicyDocument"]["Statement"] == [
        {
            "Sid": "DsqlConnect",
            "Effect": "Allow",
            "Action": "dsql:DbConnectAdmin",  # devstack's DsqlUser is admin
            "Resource": "arn:aws:dsql:us-east-1:123456789012:cluster/iamdbdevstack0000000000000",
        }
    ]
    deploy = load_samconfig(REPO / "samconfig.toml", "deploy")
    assert deploy.values["capabilities"] == "CAPABILITY_IAM"
    Template.load(TEMPLATE, deploy.parameter_overrides)  # every deploy override is valid
    custom = Template.load(TEMPLATE, {**local.parameter_overrides, "DsqlUser": "iamdb_dsql_app"})
    statement = custom.resolve(custom.resource("DsqlConnectPolicy")["Properties"])
    assert statement["PolicyDocument"]["Statement"][0]["Action"] == "dsql:DbConnect"


# -- CI validation on broken copies --------------------------------------------------------------


def _validate(template: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "validate_template.py"),
            "--template",
            str(template),
            "--samconfig",
            str(REPO / "samconfig.toml"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_repository_template_validates() -> None:
    result = _validate(TEMPLATE)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "[Python311, !Ref IamDbLayerPython311X86,",
            "[Python311, !Ref IamDbLayr311,",
            "IamDbLayr311",
        ),
        ("    Runtime: !Ref PythonRuntime\n", "    Runtime: python3.21\n", "python3.21"),
        ("dbuser:${PgDbiResourceId}/", "dbuser:${PgDbiResourceID}/", "PgDbiResourceID"),
        ("cluster/${DsqlClusterId}", "cluster/${DsqlClusterID}", "DsqlClusterID"),
        (
            "Handler: app.handler\n      Policies:",
            "Handler: app.handler\n      Polices:",
            "Polices",
        ),
    ],
    ids=["bad-ref", "bad-runtime", "typo-in-policy-arn", "typo-in-dsql-arn", "misspelt-property"],
)
def test_validation_catches_a_broken_copy(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    text = TEMPLATE.read_text()
    assert old in text
    broken = tmp_path / "template.yaml"
    broken.write_text(text.replace(old, new, 1))
    result = _validate(broken)
    assert result.returncode == 1
    assert expected in result.stderr


# -- policy evaluation (what devstack enforces for rds-db:connect) ------------------------------


def test_template_policy_allows_exactly_the_configured_dbuser() -> None:
    from devstack.sam.template import dbuser_arn, function_statements, policy_allows

    local = load_samconfig(REPO / "samconfig.toml", "local_invoke").parameter_overrides
    statements = function_statements(Template.load(TEMPLATE, local))
    pg = statements["PgExampleFunction"]
    good = dbuser_arn("db-IAMDBDEVSTACKPG0000000000", "iamdb_app")
    assert policy_allows(pg, "rds-db:connect", good)
    assert not policy_allows(pg, "rds-db:connect", good.replace("iamdb_app", "admin"))
    assert not policy_allows(pg, "rds-db:connect", dbuser_arn("db-OTHER", "iamdb_app"))
    assert not policy_allows(statements["MongoExampleFunction"], "rds-db:connect", good)
    assert policy_allows(
        pg, "dynamodb:UpdateItem", "arn:aws:dynamodb:us-east-1:123456789012:table/iamdb-throttle"
    )
    assert not policy_allows(
        pg, "dynamodb:DeleteItem", "arn:aws:dynamodb:us-east-1:123456789012:table/iamdb-throttle"
    )


def test_policy_wildcards_and_deny() -> None:
    from devstack.sam.template import policy_allows

    allow = {
        "Effect": "Allow",
        "Action": "rds-db:*",
        "Resource": "arn:aws:rds-db:*:*:dbuser:db-1/*",
    }
    deny = {"Effect": "Deny", "Action": "rds-db:connect", "Resource": "*:dbuser:db-1/root"}
    assert policy_allows([allow], "RDS-DB:Connect", "arn:aws:rds-db:us-east-1:1:dbuser:db-1/app")
    assert not policy_allows(
        [allow, deny], "rds-db:connect", "arn:aws:rds-db:us-east-1:1:dbuser:db-1/root"
    )
    assert not policy_allows([allow], "rds-db:connect", "arn:aws:rds-db:us-east-1:1:dbuser:db-2/a")


# -- iamdb's own rules: one layer per target, its parameter and output, SAR metadata -------------


def _rules(tmp_path: Path, old: str, new: str) -> list[str]:
    from scripts.validate_template import iamdb_rules

    text = TEMPLATE.read_text()
    assert old in text
    broken = tmp_path / "template.yaml"
    broken.write_text(text.replace(old, new, 1))
    (tmp_path / "README.md").write_text("readme")
    return iamdb_rules(Template.load(broken), None)


def test_the_repository_template_passes_iamdb_rules() -> None:
    from scripts.validate_template import iamdb_rules

    assert iamdb_rules(Template.load(TEMPLATE), REPO / "samconfig.toml") == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "CompatibleRuntimes: [python3.13]",
            "CompatibleRuntimes: [python3.12]",
            "IamDbLayerPython313X86: CompatibleRuntimes must be ['python3.13']",
        ),
        (
            "CompatibleArchitectures: [arm64]",
            "CompatibleArchitectures: [x86_64]",
            "IamDbLayerPython311Arm64: CompatibleArchitectures must be ['arm64']",
        ),
        (
            "BuildArchitecture: arm64",
            "BuildArchitecture: x86_64",
            "IamDbLayerPython311Arm64: Metadata.BuildArchitecture must be 'arm64'",
        ),
        (
            "LayerName: iamdb-python314-arm64",
            "LayerName: iamdb-python314-arm",
            "IamDbLayerPython314Arm64: LayerName must be 'iamdb-python314-arm64'",
        ),
        (
            "Name: !Sub ${LayerParameterPath}/python3.12/x86_64",
            "Name: !Sub ${LayerParameterPath}/python3.12/x86",
            "IamDbLayerPython312X86Parameter: an SSM parameter /iamdb/layer/python3.12/x86_64",
        ),
        (
            "!If [Python312, !Ref IamDbLayerPython312X86,",
            "!If [Python312, !Ref IamDbLayerPython312Arm64,",
            "PgExampleFunction: with PythonRuntime=python3.12 uses ['IamDbLayerPython312Arm64']",
        ),
        (
            "AllowedValues: [python3.11, python3.12, python3.13, python3.14]",
            "AllowedValues: [python3.11, python3.12, python3.13]",
            "PythonRuntime: AllowedValues must be",
        ),
        ("    Author: iamdb\n", "    Author: The iamdb team\n", "SAR metadata: Author"),
        ("    SemanticVersion: ", "    SemanticVersion: 9", "SAR metadata: SemanticVersion"),
    ],
    ids=[
        "layer-runtime",
        "layer-architecture",
        "build-architecture",
        "layer-name",
        "ssm-parameter",
        "function-layer",
        "runtimes",
        "sar-author",
        "sar-version",
    ],
)
def test_iamdb_rules_catch_a_broken_copy(tmp_path: Path, old: str, new: str, expected: str) -> None:
    problems = _rules(tmp_path, old, new)
    assert any(p.startswith(expected) for p in problems), problems
