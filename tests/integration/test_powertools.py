"""iamdb with Powertools for AWS Lambda: its logs, EMF metrics and X-Ray subsegments, for real.

Handlers run in child processes (Powertools and the X-Ray SDK keep process-wide state): the
example function through devstack's Lambda runtime, and ``powertools_app.py`` as a script
against devstack's servers. Their stdout is what CloudWatch Logs would get; devstack's X-Ray
daemon gets the subsegments.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.sam.invoke import build_layers, environment, find_python, prepare
from devstack.sam.xray import XRayDaemon
from devstack.stack import Stack
from tests.paths import ROOT

pytestmark = pytest.mark.integration

REPO = ROOT
APP = Path(__file__).with_name("powertools_app.py")
NAMESPACE = "IamDbTest"


# -- reading what a handler printed ----------------------------------------------------------


def json_lines(text: str) -> list[dict[str, Any]]:
    found = []
    for line in text.splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            found.append(json.loads(line[start:]))
        except ValueError:
            continue
    return found


def emf_records(lines: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """iamdb's EMF records (the ones with an ``engine`` dimension) in ``namespace``."""
    return [
        line
        for line in lines
        if "engine" in line
        and any(
            m["Namespace"] == namespace for m in line.get("_aws", {}).get("CloudWatchMetrics", [])
        )
    ]


def value(record: dict[str, Any], metric: str) -> float:
    """A metric's value in an EMF record (Powertools writes a list of data points)."""
    found = record[metric]
    return float(sum(found)) if isinstance(found, list) else float(found)


def metric_names(record: dict[str, Any]) -> set[str]:
    return {m["Name"] for d in record["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}


def subsegments(documents: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every subsegment in the documents, nested ones included."""
    stack = list(documents)
    while stack:
        doc = stack.pop()
        yield doc
        stack.extend(doc.get("subsegments", []))


# -- the example function through devstack's Lambda runtime -----------------------------------


@pytest.fixture
def env_json(stack: Stack, stack_env: dict[str, str], tmp_path: Path) -> Path:
    env_json, _ = stack.write_env_files(tmp_path)
    return env_json


@pytest.fixture(scope="module")
def layers() -> dict[str, Path]:
    return build_layers()


def test_example_logs_meters_and_traces_through_powertools(
    stack: Stack, env_json: Path, layers: dict[str, Path]
) -> None:
    if find_python("3.12") is None:
        pytest.skip("python3.12 (the template's runtime) is not installed")
    payload = (REPO / "events" / "pg.json").read_bytes()
    log = io.StringIO()
    with environment(prepare("PgExampleFunction", env_vars=env_json), log=log) as env:
        cold = env.invoke(payload)
        warm = env.invoke(payload)
        assert stack.pg is not None and stack.pg.kill_connections("iamdb_app") >= 1
        thawed = env.invoke(payload)
        assert env.xray is not None
        documents = env.xray.wait_for(
            lambda docs: sum(d.get("name") == "iamdb connect" for d in subsegments(docs)) >= 2
        )
    assert cold.ok and warm.ok and thawed.ok, log.getvalue()[-3000:]
    lines = json_lines(log.getvalue())

    # Logs: iamdb's own lines come out as Powertools JSON with the invocation's context.
    login = next(line for line in lines if "logged in to" in str(line.get("message")))
    assert login["name"] == "iamdb" and login["level"] == "INFO"
    assert login["service"] == "iamdb-pg-example"
    assert login["function_request_id"] == cold.request_id and login["cold_start"] is True

    # Metrics: one iamdb record per invocation that logged in, none for the warm one.
    records = emf_records(lines, "IamDbExample")
    assert len(records) == 2, records
    first, again = records
    assert (first["engine"], first["instance"]) == ("pg", "default")
    assert value(first, "ConnectionsOpened") == 1 and value(first, "TokensSigned") == 1
    assert value(first, "ThrottleWaitMs") >= 0
    assert metric_names(again) >= {"Reconnects", "ConnectionsOpened"}
    assert "TokensSigned" not in again  # the token was still fresh: reused
    hits = [line for line in lines if "Hits" in line]
    assert len(hits) == 3 and all("engine" not in line for line in hits)  # apart from iamdb's

    # Traces: each login is a subsegment of the handler's, in its invocation's trace.
    connects = [d for d in subsegments(documents) if d.get("name") == "iamdb connect"]
    assert len(connects) == 2
    for subsegment in connects:
        assert subsegment["annotations"] == {"engine": "pg", "instance": "default"}
        assert "fault" not in subsegment and "error" not in subsegment
    handlers = {d["id"]: d for d in subsegments(documents) if d.get("name") == "## handler"}
    for subsegment in connects:
        parent = handlers[subsegment["parent_id"]]
        assert parent["trace_id"] == subsegment["trace_id"]
    # The fleet limiter's ticket (its DynamoDB call, made without botocore) sits inside the
    # first login; the reconnect reused the token the server had accepted: no ticket.
    connect_ids = {c["id"] for c in connects}
    tickets = [d for d in subsegments(documents) if d.get("name") == "iamdb fleet ticket"]
    assert len(tickets) == 1 and tickets[0]["parent_id"] in connect_ids
    assert tickets[0]["annotations"] == {"engine": "pg", "instance": "default"}
    assert not [d for d in subsegments(documents) if d.get("name") == "dynamodb"]


# -- powertools_app.py against devstack --------------------------------------------------------


@pytest.fixture
def xray() -> Iterator[XRayDaemon]:
    daemon = XRayDaemon()
    try:
        yield daemon
    finally:
        daemon.close()


def run_app(
    env: dict[str, str], *engines: str, xray: XRayDaemon | None = None, script: Path = APP
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """Run the app once per engine: (JSON lines, RESULT objects, whole output)."""
    child = {
        **os.environ,
        **env,
        "POWERTOOLS_SERVICE_NAME": "powertools-app",
        "IAMDB_METRICS_NAMESPACE": NAMESPACE,
        "PYTHONPATH": os.pathsep.join([str(REPO / "layer"), str(REPO)]),
    }
    if xray is not None:  # what Lambda sets for a function with Tracing: Active
        child.update(
            LAMBDA_TASK_ROOT=str(script.parent),
            AWS_XRAY_DAEMON_ADDRESS=xray.address,
            AWS_XRAY_CONTEXT_MISSING="LOG_ERROR",
            _X_AMZN_TRACE_ID="Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        )
    done = subprocess.run(
        [sys.executable, str(script), *engines],
        env=child,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    results = [
        json.loads(line[7:]) for line in done.stdout.splitlines() if line.startswith("RESULT ")
    ]
    return json_lines(output), results, output


def test_mongo_credentials_and_login_are_measured_and_traced(
    stack_env: dict[str, str], xray: XRayDaemon
) -> None:
    lines, results, _ = run_app(stack_env, "mongo", "mongo", xray=xray)
    assert [r["error"] for r in results] == [None, None]
    (record,) = emf_records(lines, NAMESPACE)  # the warm call counted nothing
    assert (record["engine"], record["instance"]) == ("mongo", "default")
    assert value(record, "CredentialRefreshes") == 1 and value(record, "ConnectionsOpened") == 1
    documents = xray.wait_for(
        lambda docs: (
            {"iamdb credentials", "iamdb connect"} <= {d.get("name") for d in subsegments(docs)}
        )
    )
    names = [d.get("name") for d in subsegments(documents)]
    assert names.count("iamdb credentials") == 1 and names.count("iamdb connect") == 1
    creds = next(d for d in subsegments(documents) if d.get("name") == "iamdb credentials")
    assert creds["annotations"] == {"engine": "mongo", "instance": "default"}


def test_valkey_logins_are_logged_measured_and_traced(
    stack_env: dict[str, str], xray: XRayDaemon
) -> None:
    """get_valkey() as the other getters: its login a Powertools log line, one EMF record for
    the cold call (none for the warm one), an X-Ray subsegment; no token in any of them."""
    lines, results, output = run_app(stack_env, "valkey", "valkey", xray=xray)
    assert [r["error"] for r in results] == [None, None]
    login = next(line for line in lines if "logged in to" in str(line.get("message")))
    assert login["name"] == "iamdb" and login["service"] == "powertools-app"
    (record,) = emf_records(lines, NAMESPACE)  # the warm call counted nothing
    assert (record["engine"], record["instance"]) == ("valkey", "default")
    assert value(record, "TokensSigned") == 1 and value(record, "ConnectionsOpened") == 1
    documents = xray.wait_for(
        lambda docs: any(d.get("name") == "iamdb connect" for d in subsegments(docs))
    )
    (connect,) = [d for d in subsegments(documents) if d.get("name") == "iamdb connect"]
    assert connect["annotations"] == {"engine": "valkey", "instance": "default"}
    assert "fault" not in connect and "error" not in connect
    assert "X-Amz-Signature" not in output and "X-Amz-Signature" not in json.dumps(documents)
    for secret in (stack_env["AWS_SECRET_ACCESS_KEY"], stack_env["AWS_SESSION_TOKEN"]):
        assert secret not in json.dumps(documents) and secret not in output


def test_refused_logins_count_failures_and_retries(
    stack_env: dict[str, str], xray: XRayDaemon
) -> None:
    env = {**stack_env, "IAMDB_PG_USER": "nobody_here", "IAMDB_AUTH_RETRIES": "1"}
    lines, results, output = run_app(env, "pg", xray=xray)
    assert results[0]["error"] == "AuthError"
    (record,) = emf_records(lines, NAMESPACE)
    assert value(record, "AuthFailures") == 2 and value(record, "AuthRetries") == 1
    assert "ConnectionsOpened" not in record
    assert len(record["ThrottleWaitMs"]) == 2  # one permit per attempt, each its own point
    documents = xray.wait_for(
        lambda docs: any(d.get("name") == "iamdb connect" for d in subsegments(docs))
    )
    (connect,) = [d for d in subsegments(documents) if d.get("name") == "iamdb connect"]
    (exception,) = connect["cause"]["exceptions"]
    assert connect.get("fault") or connect.get("error")
    assert exception["type"] == "AuthError" and "nobody_here" in exception["message"]
    for secret in (stack_env["AWS_SECRET_ACCESS_KEY"], stack_env["AWS_SESSION_TOKEN"]):
        assert secret not in json.dumps(documents) and secret not in output


def test_fleet_limiter_failing_open_is_counted(stack_env: dict[str, str]) -> None:
    env = {**stack_env, "IAMDB_THROTTLE_TABLE": "no-such-table"}
    lines, results, _ = run_app(env, "pg")
    assert results[0]["error"] is None
    (record,) = emf_records(lines, NAMESPACE)
    assert value(record, "LimiterFailOpen") == 1 and value(record, "ConnectionsOpened") == 1


def test_without_powertools_nothing_is_imported_and_a_namespace_warns_once(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    script = tmp_path / "plain.py"
    script.write_text(
        "import logging, sys\n"
        "logging.basicConfig()\n"
        "sys.modules['aws_lambda_powertools'] = None  # as if not installed\n"
        "import iamdb\n"
        "for _ in range(2):\n"
        "    iamdb.get_pg().execute('SELECT 1')\n"
        "    iamdb.reset()\n"
        "print('RESULT {\"error\": null}')\n"
    )
    _, results, output = run_app(stack_env, script=script)
    assert results == [{"error": None}]
    assert output.count("aws_lambda_powertools is not installed") == 2  # once per reset
    assert "_aws" not in output


def test_iamdb_imports_no_powertools_the_app_does_not_use(stack_env: dict[str, str]) -> None:
    code = (
        "import sys, iamdb\n"
        "iamdb.get_pg().execute('SELECT 1')\n"
        "print('RESULT', __import__('json').dumps(sorted(m for m in sys.modules "
        "if m.startswith(('aws_lambda_powertools', 'aws_xray_sdk')))))\n"
    )
    env = {k: v for k, v in {**os.environ, **stack_env}.items() if "METRICS_NAMESPACE" not in k}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "layer"), str(REPO)])
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "RESULT []"
