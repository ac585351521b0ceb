"""SnapStart-style credentials end to end: only a container credentials endpoint, no AWS_* keys.

A fresh child process gets devstack's environment without ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY`` and ``AWS_SESSION_TOKEN``, and instead the
``AWS_CONTAINER_CREDENTIALS_FULL_URI`` + ``AWS_CONTAINER_AUTHORIZATION_TOKEN`` of devstack's
credentials endpoint serving the function role's session credentials (as Lambda does for
SnapStart functions). It logs in with ``get_pg()`` (the fleet limiter on:
``IAMDB_THROTTLE_TABLE``), ``get_mysql()`` or ``get_mongo()`` and reports which botocore and
boto3 modules are loaded, and who imported them first.

PostgreSQL and MySQL must load none. For MongoDB, pymongo-auth-aws imports boto3 itself (it
is pymongo's MONGODB-AWS implementation): that is recorded, and only an import by iamdb fails.
The devstack invoke of the SnapStart example function (``MongoExampleFunction``) is run too.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.aws import ACCOUNT, REGION, THROTTLE_TABLE
from devstack.sam.container_credentials import CredentialsServer
from devstack.sam.invoke import REPO, build_layers, environment, find_python, prepare
from devstack.stack import PG_ENDPOINT, Stack

pytestmark = pytest.mark.integration

KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")

_CHILD = r"""
import json, os, sys, time, traceback

class ImportedBy:
    '''Records which file first asked for boto3 or botocore (the frame above importlib).'''
    found = {}
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in ("boto3", "botocore") and top not in self.found:
            frames = [f.filename for f in traceback.extract_stack()[:-1]]
            outside = [f for f in frames if "importlib" not in f and "<frozen" not in f]
            self.found[top] = outside[-1] if outside else "?"
        return None

sys.meta_path.insert(0, ImportedBy())
engine = sys.argv[1]
started = time.perf_counter()
import iamdb
if engine == "pg":
    value = iamdb.get_pg().execute("SELECT 1").fetchone()[0]
elif engine == "mysql":
    cursor = iamdb.get_mysql().cursor()
    cursor.execute("SELECT 1")
    value = cursor.fetchone()[0]
else:
    value = iamdb.get_mongo().get_database("iamdb_example").command("ping")["ok"]
print(json.dumps({
    "value": value,
    "ms": round((time.perf_counter() - started) * 1000, 1),
    "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("botocore", "boto3")),
    "imported_by": ImportedBy.found,
    "keys_seen": [k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
                  if k in os.environ],
}))
"""


@pytest.fixture
def endpoint(stack: Stack) -> Iterator[CredentialsServer]:
    assert stack.aws.function_credentials is not None
    with CredentialsServer(stack.aws.function_credentials, label="test child") as server:
        yield server


def child_env(stack: Stack, endpoint: CredentialsServer) -> dict[str, str]:
    env = {k: v for k, v in stack.env.items() if k not in KEYS}
    env.pop("AWS_CREDENTIAL_EXPIRATION", None)
    env.update(endpoint.environment())
    env.update(
        PATH=os.environ.get("PATH", "/usr/bin:/bin"),
        PYTHONPATH=str(REPO / "layer"),
        HOME=os.environ.get("HOME", "/tmp"),
        AWS_CONFIG_FILE="/nonexistent",  # nothing for botocore's chain to find, were it asked
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
    )
    return env


def run_child(engine: str, env: dict[str, str]) -> dict[str, Any]:
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, engine],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 0, child.stderr[-4000:]
    report: dict[str, Any] = json.loads(child.stdout.splitlines()[-1])
    report["stderr"] = child.stderr
    print(f"{engine}: {json.dumps({k: v for k, v in report.items() if k != 'stderr'})}")
    return report


def _queue_item(stack: Stack) -> dict[str, Any] | None:
    """The fleet limiter's queue item for devstack's PostgreSQL (moto's in-process state)."""
    from moto.dynamodb.models import dynamodb_backends

    assert stack.pg is not None
    table = dynamodb_backends[ACCOUNT][REGION].get_table(THROTTLE_TABLE)
    for item in table.all_items():
        attrs: dict[str, Any] = item.to_json()["Attributes"]
        if attrs["pk"]["S"] == f"q#{PG_ENDPOINT}:{stack.pg.port}":
            return attrs
    return None


def test_get_pg_with_the_fleet_limiter_loads_no_botocore(
    stack: Stack, endpoint: CredentialsServer, caplog: Any
) -> None:
    env = child_env(stack, endpoint)
    assert env["IAMDB_THROTTLE_TABLE"] == THROTTLE_TABLE
    before = _queue_item(stack)
    with caplog.at_level(logging.INFO, logger="devstack"):
        report = run_child("pg", env)
    assert report["value"] == 1 and report["keys_seen"] == []
    assert report["loaded"] == [] and report["imported_by"] == {}
    assert "served" in caplog.text  # the credentials came from the endpoint
    # the ticket was written to DynamoDB with them (moto checks signatures): not failed open
    assert _queue_item(stack) not in (None, before)
    assert "not usable" not in report["stderr"]


def test_get_mysql_loads_no_botocore(stack: Stack, endpoint: CredentialsServer) -> None:
    if stack.mysql is None:
        pytest.skip("devstack runs without MariaDB here")
    report = run_child("mysql", child_env(stack, endpoint))
    assert report["value"] == 1 and report["keys_seen"] == []
    assert report["loaded"] == [] and report["imported_by"] == {}


def test_get_mongo_imports_boto3_only_through_pymongo_auth_aws(
    stack: Stack, endpoint: CredentialsServer
) -> None:
    report = run_child("mongo", child_env(stack, endpoint))
    assert report["value"] == 1.0 and report["keys_seen"] == []
    importers = report["imported_by"]
    for module, importer in importers.items():
        assert "/layer/iamdb/" not in importer, f"iamdb imported {module} itself ({importer})"
    if importers:  # pymongo-auth-aws asks for boto3, boto3 for botocore
        assert "/pymongo_auth_aws/" in importers["boto3"], importers
        assert any(f"/{p}/" in importers["botocore"] for p in ("boto3", "pymongo_auth_aws"))
    # Recorded, not required: pymongo-auth-aws's boto3 (see the module docstring).
    print(f"mongo: {len(report['loaded'])} botocore/boto3 modules loaded by pymongo-auth-aws")


def test_a_wrong_token_is_refused_and_the_login_fails_cleanly(
    stack: Stack, endpoint: CredentialsServer
) -> None:
    env = child_env(stack, endpoint)
    env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = "not-the-token"
    env.pop("IAMDB_THROTTLE_TABLE")
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, "pg"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode != 0
    assert "CredentialsError" in child.stderr and "HTTP 401" in child.stderr
    assert endpoint.token not in child.stderr


# --- devstack invoke -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def layers() -> dict[str, Path]:
    return build_layers()


@pytest.fixture
def env_json(stack: Stack, stack_env: dict[str, str], tmp_path: Path) -> Path:
    env_json, _ = stack.write_env_files(tmp_path)
    return env_json


def test_invoke_serves_container_credentials_to_the_snapstart_function(
    env_json: Path, layers: dict[str, Path], caplog: Any
) -> None:
    if find_python("3.12") is None:
        pytest.skip("python3.12 (the template's runtime) is not installed")
    event = (REPO / "events" / "mongo.json").read_bytes()
    prepared = prepare("MongoExampleFunction", env_vars=env_json)
    assert prepared.spec.snapstart
    with caplog.at_level(logging.INFO, logger="devstack"), environment(prepared) as env:
        cold = env.invoke(event)
        warm = env.invoke(event)
    for result in (cold, warm):
        assert result.ok, result.payload
        assert result.payload["statusCode"] == 200
    assert json.loads(cold.payload["body"])["reused_connection"] is False
    assert json.loads(warm.payload["body"])["reused_connection"] is True
    served = [r for r in caplog.records if "served" in r.getMessage()]
    assert served and all("MongoExampleFunction" in r.getMessage() for r in served)


def test_invoke_gives_a_snapstart_function_no_keys(env_json: Path, tmp_path: Path) -> None:
    """The environment a SnapStart function sees, read by a handler of our own."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text(
        "import os\n"
        "def handler(event, context):\n"
        "    return {k: os.environ.get(k) for k in event['names']}\n"
    )
    template = tmp_path / "template.yaml"
    template.write_text(
        "Transform: AWS::Serverless-2016-10-31\nResources:\n"
        "  Snap:\n    Type: AWS::Serverless::Function\n    Properties:\n"
        f"      {{CodeUri: code/, Handler: app.handler, Runtime: python{sys.version_info.major}."
        f"{sys.version_info.minor}, SnapStart: {{ApplyOn: PublishedVersions}}}}\n"
        "  Plain:\n    Type: AWS::Serverless::Function\n    Properties:\n"
        f"      {{CodeUri: code/, Handler: app.handler, Runtime: python{sys.version_info.major}."
        f"{sys.version_info.minor}}}\n"
    )
    names = [
        *KEYS,
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
    ]
    event = json.dumps({"names": names}).encode()
    seen = {}
    for function in ("Snap", "Plain"):
        prepared = prepare(function, template_path=template, samconfig_path=None, env_vars=env_json)
        with environment(prepared) as env:
            result = env.invoke(event)
        assert result.ok, result.payload
        seen[function] = result.payload
    snap, plain = seen["Snap"], seen["Plain"]
    assert [snap[k] for k in KEYS] == [None, None, None]
    assert snap["AWS_CONTAINER_CREDENTIALS_FULL_URI"].startswith("http://127.0.0.1:")
    assert len(snap["AWS_CONTAINER_AUTHORIZATION_TOKEN"]) >= 32
    assert snap["AWS_LAMBDA_INITIALIZATION_TYPE"] == "snap-start"
    assert all(plain[k] for k in KEYS)
    assert plain["AWS_CONTAINER_CREDENTIALS_FULL_URI"] is None
    assert plain["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
    # The endpoint died with the environment: its token opens nothing afterwards.
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(snap["AWS_CONTAINER_CREDENTIALS_FULL_URI"], timeout=2)
