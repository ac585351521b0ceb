"""``python -m devstack invoke``: handlers run by awslambdaric against devstack's servers.

The example functions run from the real template under every Lambda runtime this machine has
an interpreter for, each with the layer built for it (as on Lambda). Failure modes (import
errors, exceptions, timeouts) and the context use tiny functions in a throwaway template, run
with the interpreter of this test run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from devstack.sam.invoke import (
    REPO,
    InitFailed,
    InvokeError,
    build_layers,
    environment,
    find_python,
    function_environment,
    prepare,
)
from devstack.sam.template import Template
from devstack.stack import Stack
from layerbuild.targets import RUNTIMES

LOCAL_RUNTIMES = [r.name for r in RUNTIMES if find_python(r.dotted)]

pytestmark = pytest.mark.integration

RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"

_HANDLERS = """
import json, os, sys, time
import helper  # a module next to the handler: the code directory is first on sys.path

started = time.time()

def context_handler(event, context):
    return {
        "function_name": context.function_name,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "invoked_function_arn": context.invoked_function_arn,
        "aws_request_id": context.aws_request_id,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "sys_path_0": sys.path[0],
        "cwd": os.getcwd(),
        "event": event,
        "env": {k: os.environ.get(k) for k in ("IAMDB_PG_HOST", "AWS_REGION", "HOME_SECRET")},
        "process_started": started,
    }

def raising_handler(event, context):
    raise ValueError("no such order")

def slow_handler(event, context):
    time.sleep(float(event.get("sleep", 30)))
    return {"slept": True}
"""

_TEMPLATE = """\
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    Runtime: {runtime}
    Timeout: {timeout}
    MemorySize: 512
    Environment:
      Variables:
        IAMDB_PG_HOST: from-template
Resources:
  ContextFunction:
    Type: AWS::Serverless::Function
    Properties: {{CodeUri: code/, Handler: app.context_handler}}
  RaisingFunction:
    Type: AWS::Serverless::Function
    Properties: {{CodeUri: code/, Handler: app.raising_handler}}
  SlowFunction:
    Type: AWS::Serverless::Function
    Properties: {{CodeUri: code/, Handler: app.slow_handler, Timeout: 1}}
  BrokenFunction:
    Type: AWS::Serverless::Function
    Properties: {{CodeUri: broken/, Handler: app.handler}}
"""


@pytest.fixture(scope="module")
def toy_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("toy")
    (root / "code").mkdir()
    (root / "code" / "app.py").write_text(_HANDLERS)
    (root / "code" / "helper.py").write_text("")
    (root / "broken").mkdir()
    (root / "broken" / "app.py").write_text("import no_such_module_anywhere\n")
    template = root / "template.yaml"
    template.write_text(_TEMPLATE.format(runtime=RUNTIME, timeout=5))
    return template


def _toy(template: Path, function: str, **kwargs: Any) -> Any:
    prepared = prepare(function, template_path=template, samconfig_path=None, **kwargs)
    return environment(prepared, log=sys.stderr)


@pytest.fixture(scope="module")
def layers() -> dict[str, Path]:
    return build_layers()


@pytest.fixture
def env_json(stack: Stack, stack_env: dict[str, str], tmp_path: Path) -> Path:
    env_json, _ = stack.write_env_files(tmp_path)
    return env_json


@pytest.mark.parametrize("runtime", LOCAL_RUNTIMES)
@pytest.mark.parametrize(
    ("function", "event", "engine"),
    [
        ("PgExampleFunction", "pg.json", "postgresql"),
        ("MySqlExampleFunction", "mysql.json", "mysql"),
        ("SqlAlchemyExampleFunction", "sqlalchemy.json", "postgresql"),
        ("DsqlExampleFunction", "dsql.json", "aurora-dsql"),
        ("MongoExampleFunction", "mongo.json", "mongodb"),
        ("ValkeyExampleFunction", "valkey.json", "valkey"),
    ],
)
def test_example_cold_then_warm_reuses_the_connection(
    runtime: str, function: str, event: str, engine: str, env_json: Path, layers: dict[str, Path]
) -> None:
    if (
        engine == "mysql"
        and "IAMDB_MYSQL_HOST" not in json.loads(env_json.read_text())["Parameters"]
    ):
        pytest.skip("devstack runs without MariaDB here")
    payload = (REPO / "events" / event).read_bytes()
    prepared = prepare(function, env_vars=env_json, runtime=runtime)
    layer = f"iamdb-python{runtime[6:].replace('.', '')}-x86_64"
    assert prepared.spec.runtime == runtime
    assert prepared.python == find_python(runtime[6:])
    assert str(layers[layer] / "python") in prepared.python_path  # /opt/python
    assert not any(p.startswith(sys.prefix) for p in prepared.python_path)  # never the venv
    with environment(prepared, log=sys.stderr) as env:
        cold = env.invoke(payload)
        warm = env.invoke(payload)
    for result in (cold, warm):
        assert result.ok, result.payload
        assert result.payload["statusCode"] == 200
        assert result.payload["headers"]["content-type"] == "application/json"
    cold_body, warm_body = json.loads(cold.payload["body"]), json.loads(warm.payload["body"])
    assert cold.init_ms is not None and warm.init_ms is None
    assert cold_body["engine"] == engine
    assert cold_body["reused_connection"] is False
    assert warm_body["reused_connection"] is True
    assert warm_body["hits"] == cold_body["hits"] + 1  # really inserted and read back
    if cold_body["token_age_seconds"] is not None:  # None: the engine's login keeps no token
        assert warm_body["token_age_seconds"] >= cold_body["token_age_seconds"]
    assert cold_body["function"] == f"iamdb-{function}"
    assert cold_body["request_id"] == cold.request_id != warm.request_id


@pytest.mark.parametrize("runtime", [None, *(r for r in LOCAL_RUNTIMES if r != "python3.12")][:2])
def test_cli_repeat_prints_one_json_line_per_event(
    runtime: str | None, env_json: Path, layers: dict[str, Path]
) -> None:
    if find_python((runtime or "python3.12")[6:]) is None:
        pytest.skip(f"{runtime or 'python3.12 (the template default)'} is not installed")
    chosen = ["--runtime", runtime] if runtime else []
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "devstack",
            "invoke",
            "PgExampleFunction",
            "-e",
            str(REPO / "events" / "pg.json"),
            "--env-vars",
            str(env_json),
            "--repeat",
            "3",
            *chosen,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    reused = [json.loads(r["body"])["reused_connection"] for r in lines]
    assert reused == [False, True, True]
    assert result.stderr.count("REPORT RequestId:") == 3
    assert "Traceback" not in result.stderr  # a run that succeeded shows none
    token = json.loads(env_json.read_text())["Parameters"]["AWS_SESSION_TOKEN"]
    assert token not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("runtime", "message"),
    [
        ("python3.10", "no Lambda runtime 'python3.10'"),
        ("python3.9", "known are python3.11, python3.12, python3.13, python3.14"),
    ],
)
def test_cli_refuses_a_runtime_with_no_layer(runtime: str, message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devstack", "invoke", "PgExampleFunction", "--runtime", runtime],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_runtime_needs_the_template_to_choose_it(toy_template: Path) -> None:
    """A function whose Runtime is written out is not moved by --runtime: it says so."""
    other = next(r.name for r in RUNTIMES if r.name != RUNTIME)
    with pytest.raises(InvokeError, match=f"its Runtime is {RUNTIME}, not {other}"):
        prepare("ContextFunction", template_path=toy_template, samconfig_path=None, runtime=other)


def test_context_and_layout_are_lambdas(toy_template: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps({"Parameters": {"IAMDB_PG_HOST": "db", "HOME_SECRET": "x"}}))
    with _toy(toy_template, "ContextFunction", env_vars=env_file) as env:
        first = env.invoke(b'{"order": 7}')
        second = env.invoke(b'{"order": 8}')
    assert first.ok and second.ok
    ctx = first.payload
    assert ctx["function_name"] == "iamdb-ContextFunction"
    assert ctx["memory_limit_in_mb"] == "512"
    assert ctx["invoked_function_arn"].endswith(":function:iamdb-ContextFunction")
    assert ctx["aws_request_id"] == first.request_id
    assert 0 < ctx["remaining_ms"] <= 5000
    assert ctx["sys_path_0"] == str(toy_template.parent / "code")
    assert ctx["cwd"] == str(toy_template.parent / "code")
    assert ctx["event"] == {"order": 7}
    # the file overrides declared variables only, as sam local does
    assert ctx["env"]["IAMDB_PG_HOST"] == "db" and ctx["env"]["HOME_SECRET"] is None
    assert second.payload["process_started"] == ctx["process_started"]  # same warm process


def test_handler_exception_is_an_error_result(toy_template: Path) -> None:
    with _toy(toy_template, "RaisingFunction") as env:
        result = env.invoke(b"{}")
        again = env.invoke(b"{}")  # the environment survives a handler's exception
    assert not result.ok and not again.ok
    assert result.payload["errorType"] == "ValueError"
    assert result.payload["errorMessage"] == "no such order"
    assert again.init_ms is None


def test_timeout_kills_the_environment_and_the_next_event_starts_a_new_one(
    toy_template: Path,
) -> None:
    with _toy(toy_template, "SlowFunction") as env:
        timed_out = env.invoke(b'{"sleep": 30}')
        after = env.invoke(b'{"sleep": 0}')
    assert timed_out.timed_out and not timed_out.ok
    assert timed_out.payload["errorType"] == "Sandbox.Timedout"
    assert after.ok and after.init_ms is not None  # a fresh (cold) environment


def test_import_failure_is_reported_not_hung(toy_template: Path) -> None:
    with pytest.raises(InitFailed) as failed, _toy(toy_template, "BrokenFunction") as env:
        env.invoke(b"{}")
    assert failed.value.error["errorType"] == "Runtime.ImportModuleError"
    assert "no_such_module_anywhere" in failed.value.error["errorMessage"]


def test_cli_exit_codes(toy_template: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "devstack", "invoke", "-t", str(toy_template), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=REPO,
        )

    broken = cli("BrokenFunction")
    assert broken.returncode == 1
    assert "Unable to import module 'app'" in broken.stderr
    assert json.loads(broken.stdout)["errorType"] == "Runtime.ImportModuleError"
    raising = cli("RaisingFunction", "--repeat", "2")
    assert raising.returncode == 1 and len(raising.stdout.splitlines()) == 2
    assert cli("NoSuchFunction").returncode == 2
    assert cli("ContextFunction", "--env-vars", "/nonexistent.json").returncode == 2


def test_missing_layer_is_a_clear_error(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "app.py").write_text("def handler(e, c):\n    return 1\n")
    template.write_text(
        textwrap.dedent(f"""\
        Resources:
          Lib:
            Type: AWS::Serverless::LayerVersion
            Properties: {{ContentUri: lib/}}
          Fn:
            Type: AWS::Serverless::Function
            Properties: {{CodeUri: code/, Handler: app.handler, Runtime: {RUNTIME},
                          Layers: [!Ref Lib]}}
        """)
    )
    with pytest.raises(InvokeError, match="layer Lib is not built"):
        prepare("Fn", template_path=template, samconfig_path=None)


def test_function_environment_is_lambdas_not_the_callers() -> None:
    spec = Template.load(REPO / "template.yaml").function("PgExampleFunction")
    env = function_environment(
        spec,
        {
            "IAMDB_PG_HOST": "127.0.0.1",
            "AWS_ACCESS_KEY_ID": "ASIAX",
            "UNDECLARED": "x",
            "AWS_ENDPOINT_URL_STS": "http://127.0.0.1:1",
        },
        code_dir=Path("/var/task"),
        python_path=["/opt/python", "/var/runtime"],
        runtime_api="127.0.0.1:9001",
        caller_env={"PATH": "/bin", "HOME": "/root", "AWS_SECRET_ACCESS_KEY": "s"},
    )
    assert env["IAMDB_PG_HOST"] == "127.0.0.1"
    assert env["AWS_ACCESS_KEY_ID"] == "ASIAX" and env["AWS_SECRET_ACCESS_KEY"] == "s"
    assert env["AWS_ENDPOINT_URL_STS"] == "http://127.0.0.1:1"
    assert "UNDECLARED" not in env and "HOME" not in env
    assert env["PYTHONPATH"] == "/var/task:/opt/python:/var/runtime"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_EXECUTION_ENV"] == "AWS_Lambda_python3.12"
