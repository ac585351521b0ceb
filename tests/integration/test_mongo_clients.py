"""Real MongoDB clients nobody here wrote, against devstack's peer, on real sockets.

- ``mongosh`` (npm, pinned in the Makefile, installed in ``build/node`` by ``make test``) logs
  in with exactly what ``python -m iamdb mongo-uri`` / ``compass-file`` print, with no flags: it
  opens with the legacy ``OP_QUERY`` handshake, as the Node.js driver under it and Compass do.
- pymongo at the lowest version ``pyproject.toml`` admits, in a virtual environment of its own
  (cached in ``build/venvs``), runs ``iamdb.get_mongo()`` from this tree.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from devstack.aws import MONGO_ROLE_ARN
from devstack.stack import Stack
from tests.integration.cli import run_iamdb

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
MONGOSH = ROOT / "build" / "node" / "node_modules" / ".bin" / "mongosh"
VENVS = ROOT / "build" / "venvs"
ROLES = [{"role": "readWrite", "db": "app"}]

# Inserts, reads back and reports who the server says is logged in, as one JSON line.
MONGOSH_SCRIPT = """
db.clients.deleteMany({});
db.clients.insertOne({client: "mongosh", n: 1});
const found = db.clients.find({client: "mongosh"}, {_id: 0}).toArray();
const status = db.runCommand({connectionStatus: 1});
print(EJSON.stringify({db: db.getName(), found: found, authInfo: status.authInfo}));
"""

PYMONGO_SCRIPT = """
import json, sys, pymongo, iamdb
db = iamdb.get_mongo().get_default_database()
db.clients.delete_many({})
db.clients.insert_one({"client": "pymongo", "version": pymongo.version})
found = list(db.clients.find({"client": "pymongo"}, {"_id": 0}))
status = db.command("connectionStatus")
aws_sdk = sorted(m for m in sys.modules if m.split(".")[0] in ("boto3", "botocore"))
print(json.dumps({"version": pymongo.version, "found": found, "authInfo": status["authInfo"],
                  "aws_sdk": aws_sdk}))
"""


@pytest.fixture
def peer(stack: Stack) -> Any:
    assert stack.mongo is not None
    stack.mongo.events.clear()
    return stack.mongo


@pytest.fixture(scope="session")
def mongosh() -> Path:
    if not MONGOSH.exists():
        pytest.fail(f"{MONGOSH} is missing: run `make mongosh` (make test does)")
    return MONGOSH


def _mongosh_env(home: Path) -> dict[str, str]:
    """A private HOME, and no telemetry or update checks (they would leave the machine)."""
    config = home / "mongosh.conf"
    config.write_text("mongosh:\n  forceDisableTelemetry: true\n")
    keep = ("PATH", "LANG", "SSL_CERT_FILE")
    return {
        **{k: v for k, v in os.environ.items() if k in keep},
        "HOME": str(home),
        "MONGOSH_GLOBAL_CONFIG_FILE_FOR_TESTING": str(config),
        "MONGOSH_TELEMETRY_ENDPOINT": "",  # empty: mongosh builds no telemetry client at all
    }


def _run_mongosh(mongosh: Path, uri: str, home: Path) -> dict[str, Any]:
    result = subprocess.run(
        [str(mongosh), uri, "--quiet", "--eval", MONGOSH_SCRIPT],
        env=_mongosh_env(home),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    _check(result)
    reported: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return reported


def _check(result: subprocess.CompletedProcess[str]) -> None:
    """Fail with the child's output, never with its repr (pytest would print the URI it holds)."""
    if result.returncode != 0:
        pytest.fail(f"exit status {result.returncode}: {result.stderr or result.stdout}")


def _uri_from_mongo_uri(env: dict[str, str], tmp_path: Path) -> str:
    result = run_iamdb(env, "mongo-uri")
    _check(result)
    return result.stdout.strip()


def _uri_from_compass_file(env: dict[str, str], tmp_path: Path) -> str:
    path = tmp_path / "compass.json"
    result = run_iamdb(env, "compass-file", str(path))
    _check(result)
    (connection,) = json.loads(path.read_text())["connections"]
    uri: str = connection["connectionOptions"]["connectionString"]
    return uri


def _uri_secrets(uri: str) -> list[str]:
    """The role's secret key and session token held in ``uri``."""
    parts = urllib.parse.urlsplit(uri)
    (properties,) = urllib.parse.parse_qs(parts.query)["authMechanismProperties"]
    token = properties.removeprefix("AWS_SESSION_TOKEN:")
    secrets = [urllib.parse.unquote(parts.password or ""), token]
    assert all(len(s) > 30 for s in secrets)
    return secrets


@pytest.mark.parametrize(
    "source", [_uri_from_mongo_uri, _uri_from_compass_file], ids=["mongo-uri", "compass-file"]
)
def test_mongosh_logs_in_with_what_the_cli_prints(
    stack_env: dict[str, str], peer: Any, mongosh: Path, tmp_path: Path, source: Any
) -> None:
    uri = source(stack_env, tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    reported = _run_mongosh(mongosh, uri, home)
    assert reported["db"] == "app"
    assert reported["found"] == [{"client": "mongosh", "n": 1}]
    assert reported["authInfo"] == {
        "authenticatedUsers": [{"user": MONGO_ROLE_ARN, "db": "$external"}],
        "authenticatedUserRoles": ROLES,
    }
    logins = list(peer.events)
    assert logins and all(e.ok and e.user == MONGO_ROLE_ARN for e in logins)
    secrets = _uri_secrets(uri)
    for path in home.rglob("*"):  # mongosh's own logs and state
        if path.is_file():
            text = path.read_text(errors="replace")
            assert not [s for s in secrets if s in text], path


def _pyproject_pin(package: str, operator: str) -> str:
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(rf'"{re.escape(package)}(?:\[[\w,]+\])?{operator}([0-9][0-9.]*)', text)
    assert match, f"pyproject.toml has no {package}{operator}"
    return match.group(1)


@pytest.fixture(scope="session")
def floor_pymongo() -> tuple[Path, str]:
    """(python, version) of a virtual environment with the lowest pymongo iamdb admits."""
    version = _pyproject_pin("pymongo", ">=")
    # Neither pymongo-auth-aws nor boto3: iamdb signs the MONGODB-AWS login itself.
    requirements = [f"pymongo=={version}"]
    venv = VENVS / f"pymongo-{version}"
    python = venv / "bin" / "python"
    stamp = venv / "requirements.txt"
    if not (python.exists() and stamp.exists() and stamp.read_text().split() == requirements):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, *requirements], check=True, timeout=600)
        stamp.write_text("\n".join(requirements) + "\n")
    return python, version


def test_lowest_admitted_pymongo_runs_get_mongo(
    stack_env: dict[str, str], peer: Any, floor_pymongo: tuple[Path, str]
) -> None:
    python, version = floor_pymongo
    env = {**os.environ, **stack_env, "PYTHONPATH": str(ROOT / "layer")}
    result = subprocess.run(
        [str(python), "-c", PYMONGO_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    _check(result)
    reported = json.loads(result.stdout.strip().splitlines()[-1])
    assert reported["version"] == version
    assert reported["found"] == [{"client": "pymongo", "version": version}]
    assert reported["authInfo"] == {
        "authenticatedUsers": [{"user": MONGO_ROLE_ARN, "db": "$external"}],
        "authenticatedUserRoles": ROLES,
    }
    assert [e.ok for e in peer.events] == [True]
    assert reported["aws_sdk"] == []  # AssumeRole and the MONGODB-AWS signature, without boto3
