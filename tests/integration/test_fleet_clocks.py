"""Clocks that are off and processes that are frozen, with real processes against devstack.

Each child is a Python process of its own logging in with ``iamdb.get_pg()`` through the fleet
limiter, on devstack's DynamoDB (moto, signatures checked, a ``Date`` on every answer) and
PostgreSQL. A child's clock is skewed as iamdb sees it: the process registry is built on a
``Runtime`` whose clock is ``time.time() + offset`` (SigV4 and the server keep the real time,
as a Lambda host's broken clock would not, but the queue only ever sees iamdb's clock). A
frozen child is SIGSTOPped while it sleeps until its slot and SIGCONTed later, as Lambda
freezes an environment between invocations.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from devstack.aws import ACCOUNT, REGION, THROTTLE_TABLE
from devstack.stack import PG_ENDPOINT, Stack
from iamdb._aws.chain import CredentialResolver
from iamdb._aws.client import AwsClient
from iamdb._core.runtime import Runtime
from tests.integration.test_fleet_limiter import put_item, table_item

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHILD = """
import json, logging, sys, time
offset = float(sys.argv[1])
from iamdb import _registry
from iamdb._registry import Registry
from iamdb._core.runtime import Runtime
_registry.default = Registry(runtime=Runtime(clock=lambda: time.time() + offset))
warnings = []
class Keep(logging.Handler):
    def emit(self, record):
        warnings.append(record.getMessage())
logging.getLogger("iamdb").addHandler(Keep(logging.WARNING))
import iamdb
print("ready", flush=True)
try:
    iamdb.get_pg().execute("SELECT 1")
    error = None
except Exception as exc:
    error = f"{type(exc).__name__}: {exc}"
print(json.dumps({"error": error, "warnings": warnings}), flush=True)
"""


def endpoint(stack: Stack) -> str:
    assert stack.pg is not None
    return f"{PG_ENDPOINT.lower()}:{stack.pg.port}"


def forget_queue(stack: Stack) -> None:
    from moto.dynamodb.models import dynamodb_backends

    backend = dynamodb_backends[ACCOUNT][REGION]
    backend.delete_item(THROTTLE_TABLE, {"pk": {"S": f"q#{endpoint(stack)}"}})


def start(stack: Stack, offset: float = 0.0, connect_timeout: int = 2) -> subprocess.Popen[str]:
    """A child logging in once, its clock ``offset`` s off; its deadline is twice the connect
    timeout (no Lambda context). It says ``ready`` before it logs in."""
    env = {**os.environ, **stack.env, "PYTHONPATH": str(ROOT / "layer")}
    env["IAMDB_PG_CONNECT_TIMEOUT"] = str(connect_timeout)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(offset)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def outcome(child: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0, out
    found: dict[str, Any] = json.loads(out.splitlines()[-1])
    return found


def queue_end(stack: Stack) -> int:
    """Where the queue ends: ``n``, or the fence ``f`` of a queue marked idle."""
    item = table_item(endpoint(stack))
    assert item is not None
    return int((item.get("n") or item["f"])["N"])


def clock_warnings(result: dict[str, Any]) -> list[str]:
    return [w for w in result["warnings"] if "clock is" in w]


def test_moto_answers_carry_a_date(stack: Stack) -> None:
    rt = Runtime(environ=stack.env)
    aws = AwsClient(rt, CredentialResolver(rt))
    try:
        answer = aws.dynamodb(
            "UpdateItem",
            {
                "TableName": THROTTLE_TABLE,
                "Key": {"pk": {"S": "date-check"}},
                "UpdateExpression": "SET expires_at = :x",
                "ExpressionAttributeValues": {":x": {"N": "0"}},
            },
            time.time() + 5,
        )
    finally:
        aws.close()
    assert answer.server_time is not None and abs(answer.server_time - time.time()) < 5


def test_a_skewed_child_harms_at_most_itself(stack: Stack) -> None:
    forget_queue(stack)  # the fast child finds the queue absent: it starts it (worst case)
    fast = outcome(start(stack, offset=10.0))
    assert fast["error"] is None  # its own login goes ahead
    (warning,) = clock_warnings(fast)  # one warning per process
    assert "ahead of DynamoDB's" in warning
    item = table_item(endpoint(stack))
    assert item is not None and int(item["w"]["N"]) <= (time.time() + 1) * 1e6  # repaired
    assert queue_end(stack) <= (time.time() + 2) * 1e6
    # Correct clocks right after, with 4 s deadlines: the queue it started is not 10 s ahead.
    correct = [outcome(child) for child in [start(stack) for _ in range(3)]]
    assert [r["error"] for r in correct] == [None, None, None]
    assert not any(r["warnings"] for r in correct)
    slow = outcome(start(stack, offset=-10.0))  # sees the queue 10 s ahead: not locked out
    assert slow["error"] is None
    (warning,) = clock_warnings(slow)
    assert "behind DynamoDB's" in warning


def test_a_correct_child_restarts_a_queue_a_fast_clock_left(stack: Stack) -> None:
    now = int(time.time() * 1e6)
    put_item(endpoint(stack), n=now + 3_600_000_000, w=now + 3_600_000_000)  # an hour ahead
    result = outcome(start(stack))
    assert result["error"] is None and not result["warnings"]
    assert queue_end(stack) <= (time.time() + 2) * 1e6


@pytest.mark.parametrize("connect_timeout", [2, 10])
def test_a_child_frozen_while_waiting_for_its_slot(stack: Stack, connect_timeout: int) -> None:
    now = int(time.time() * 1e6)
    put_item(endpoint(stack), n=now + 2_000_000, w=now)  # the queue runs 2 s ahead
    child = start(stack, connect_timeout=connect_timeout)
    deadline = time.monotonic() + 30
    while (item := table_item(endpoint(stack))) and item["n"] == {"N": str(now + 2_000_000)}:
        assert time.monotonic() < deadline, "the child never took its ticket"
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGSTOP)  # asleep until its slot 2 s away (or reading the answer)
    time.sleep(6)
    os.kill(child.pid, signal.SIGCONT)
    result = outcome(child)
    if connect_timeout == 2:  # deadline 4 s: woke past it, told so, did not log in
        assert result["error"] is not None and result["error"].startswith("ThrottleError")
        assert "the process was suspended while waiting for" in result["error"]
    else:  # deadline 20 s: the slot it missed is not used, another is taken: logged in
        assert result["error"] is None
