"""The fleet-wide ticket queue against devstack's DynamoDB (moto, signatures checked).

The limiter signs its ``UpdateItem`` calls with the function's credentials, whose IAM
policy allows ``dynamodb:UpdateItem`` only. The tests read the table through moto's
in-process state (the function itself may not read it). Most tests run on a frozen fake
clock, so the slots are exact; the concurrency tests use real time and real processes.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.aws import ACCOUNT, REGION, THROTTLE_TABLE
from devstack.procs import free_port
from devstack.stack import PG_ENDPOINT, Stack
from iamdb._aws.chain import CredentialResolver
from iamdb._aws.client import AwsClient
from iamdb._core.log import WarnOnce
from iamdb._core.runtime import Runtime
from iamdb._registry import Registry
from iamdb._sql.fleet import COOLDOWN_SECONDS, FleetLimiter, Ticket
from iamdb._sql.pace import Waits, paced_rate
from iamdb._sql.queue import TOLERANCE_US, TTL_SECONDS
from iamdb.errors import ThrottleError
from tests.fakes import FakeTime, RecordingTelemetry, runtime

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def table_item(endpoint: str) -> dict[str, Any] | None:
    """The queue item of ``endpoint`` (attributes as DynamoDB JSON), or None."""
    from moto.dynamodb.models import dynamodb_backends

    table = dynamodb_backends[ACCOUNT][REGION].get_table(THROTTLE_TABLE)
    for item in table.all_items():
        attrs = item.to_json()["Attributes"]
        if attrs["pk"]["S"] == f"q#{endpoint}":
            return dict(attrs)
    return None


def put_item(endpoint: str, **numbers: int) -> None:
    """Set the queue item of ``endpoint`` to ``numbers`` (test setup, as moto's backend)."""
    from moto.dynamodb.models import dynamodb_backends

    item = {"pk": {"S": f"q#{endpoint}"}, **{k: {"N": str(v)} for k, v in numbers.items()}}
    dynamodb_backends[ACCOUNT][REGION].put_item(THROTTLE_TABLE, item)


@pytest.fixture
def endpoint() -> str:
    """A fresh endpoint name, so tests never share a queue."""
    return f"fleet-{uuid.uuid4().hex[:12]}.c0devstack00.us-east-1.rds.amazonaws.com:5432"


class Counting(AwsClient):
    """The real AWS client, counting its DynamoDB calls."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.calls = 0
        self.sent = 0

    def dynamodb(self, operation: str, payload: Any, deadline: float) -> Any:
        self.calls += 1
        return super().dynamodb(operation, payload, deadline)

    def dynamodb_send(self, operation: str, payload: Any, deadline: float) -> None:
        self.sent += 1
        super().dynamodb_send(operation, payload, deadline)


class Fleet:
    """A FleetLimiter and the runtime its logins' waits go through."""

    def __init__(self, limiter: FleetLimiter, rt: Runtime) -> None:
        self.limiter, self.rt = limiter, rt

    def acquire(self, endpoint: str, rate: float, deadline: float) -> Ticket | None:
        return self.limiter.acquire(endpoint, rate, Waits(self.rt, endpoint, deadline))

    def release(self, ticket: Ticket) -> None:
        self.limiter.release(ticket)


def limiter(
    stack: Stack, t: FakeTime | None = None, table: str = THROTTLE_TABLE, **env: str
) -> tuple[Fleet, Counting]:
    rt = runtime({**stack.env, **env}, t, random=0.5)
    aws = Counting(rt, CredentialResolver(Runtime(environ=rt.environ)))
    return Fleet(FleetLimiter(table, aws, rt, WarnOnce()), rt), aws


def us(seconds: float) -> int:
    return int(seconds * 1_000_000)


def frozen_now() -> FakeTime:
    """A clock frozen at the present: moto's answers carry today's ``Date``, and the limiter's
    clock check would rightly find a clock stuck elsewhere off by that much."""
    return FakeTime(time.time(), frozen=True)


def test_the_first_ticket_of_an_idle_queue_is_now_and_costs_one_write(
    stack: Stack, endpoint: str
) -> None:
    t = frozen_now()
    fleet, aws = limiter(stack, t)
    ticket = fleet.acquire(endpoint, 10, t.now + 5)
    assert ticket is not None and ticket.slot == us(t.now) and ticket.started
    assert aws.calls == 1 and t.sleeps == []
    spacing = round(1e6 / paced_rate(10))
    item = table_item(endpoint)
    assert item is not None and item["n"] == {"N": str(us(t.now) + spacing)}
    assert int(item["expires_at"]["N"]) >= int(t.now) + TTL_SECONDS


def test_a_backlog_gets_evenly_spaced_slots_one_write_each(stack: Stack, endpoint: str) -> None:
    t = frozen_now()
    fleet, aws = limiter(stack, t)
    tickets = [fleet.acquire(endpoint, 10, t.now + 5) for _ in range(5)]
    spacing = round(1e6 / paced_rate(10))
    assert [x.slot for x in tickets if x] == [us(t.now) + i * spacing for i in range(5)]
    assert aws.calls == 5
    assert t.sleeps == pytest.approx([i * spacing / 1e6 for i in range(1, 5)], abs=1e-6)


def test_the_deadline_is_in_the_condition_and_the_refusal_is_immediate(
    stack: Stack, endpoint: str
) -> None:
    t = frozen_now()
    put_item(endpoint, n=us(t.now + 30))  # the queue reaches 30 s ahead
    fleet, aws = limiter(stack, t)
    with pytest.raises(ThrottleError, match=r"reaches 30\.00 s ahead"):
        fleet.acquire(endpoint, 10, t.now + 8)
    assert aws.calls == 1 and t.sleeps == []  # one failed write, no waiting
    item = table_item(endpoint)
    assert item is not None and item["n"] == {"N": str(us(t.now + 30))}  # nothing taken


def test_a_stale_queue_restarts_at_the_callers_instant(stack: Stack, endpoint: str) -> None:
    t = frozen_now()
    put_item(endpoint, n=us(t.now - 60))  # the last run ended a minute ago
    fleet, aws = limiter(stack, t)
    ticket = fleet.acquire(endpoint, 10, t.now + 5)
    assert ticket is not None and ticket.slot == us(t.now) and ticket.started
    assert aws.calls == 2 and t.sleeps == []  # the failed take, then the restart


def test_a_slot_just_past_is_still_taken_by_a_trickle(stack: Stack, endpoint: str) -> None:
    t = frozen_now()
    put_item(endpoint, n=us(t.now) - TOLERANCE_US // 2)
    fleet, aws = limiter(stack, t)
    ticket = fleet.acquire(endpoint, 10, t.now + 5)
    assert ticket is not None and ticket.slot == us(t.now) - TOLERANCE_US // 2
    assert not ticket.started and aws.calls == 1 and t.sleeps == []


def test_release_marks_an_idle_queue_so_the_next_login_pays_one_write(
    stack: Stack, endpoint: str
) -> None:
    t = frozen_now()
    fleet, aws = limiter(stack, t)
    first = fleet.acquire(endpoint, 10, t.now + 5)
    assert first is not None and first.started
    fleet.release(first)
    assert aws.sent == 1
    deadline = time.time() + 10
    while (item := table_item(endpoint)) is not None and "n" in item and time.time() < deadline:
        time.sleep(0.01)  # the idle mark is sent without waiting for its answer
    assert item is not None and "n" not in item and item["f"] == {"N": str(first.next)}
    # Within the fence: the next caller is told where the queue stands and waits for it.
    second = fleet.acquire(endpoint, 10, t.now + 5)
    assert second is not None and second.slot == first.next and aws.calls == 3
    fleet.release(second)  # started a run after the fence: marks the queue idle again
    # Past the fence: one write, slot at once.
    t.now += 0.5
    third = fleet.acquire(endpoint, 10, t.now + 5)
    assert third is not None and third.slot == us(t.now) and aws.calls == 4


def test_release_leaves_a_queue_others_joined(stack: Stack, endpoint: str) -> None:
    t = frozen_now()
    fleet, aws = limiter(stack, t)
    first = fleet.acquire(endpoint, 10, t.now + 5)
    second = fleet.acquire(endpoint, 10, t.now + 5)
    assert first is not None and second is not None and not second.started
    fleet.release(second)  # not the one that started the run: nothing sent
    assert aws.sent == 0
    fleet.release(first)  # the condition fails: someone took a ticket after it
    fleet.acquire(endpoint, 10, t.now + 5)  # drains the answer of the idle mark
    item = table_item(endpoint)
    assert item is not None and "n" in item and "f" not in item


def test_many_threads_and_processes_never_share_a_slot_or_exceed_the_rate(
    stack: Stack, endpoint: str
) -> None:
    rate, threads, each, procs = 40, 4, 5, 3
    slots: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            fleet, _ = limiter(stack)  # real clock and sleep: the threads contend for real
            for _ in range(each):
                ticket = fleet.acquire(endpoint, rate, time.time() + 60)
                assert ticket is not None
                with lock:
                    slots.append(ticket.slot)
        except BaseException as exc:
            errors.append(exc)

    child = (
        "import json, sys, time\n"
        "from iamdb._aws.client import AwsClient\n"
        "from iamdb._core.runtime import PROCESS\n"
        "from iamdb._aws.chain import CredentialResolver\n"
        "from iamdb._sql.fleet import FleetLimiter\n"
        "from iamdb._sql.pace import Waits\n"
        "from iamdb._core.log import WarnOnce\n"
        "fleet = FleetLimiter(sys.argv[1], AwsClient(PROCESS, CredentialResolver()), PROCESS,"
        " WarnOnce())\n"
        "ep = sys.argv[2]\n"
        f"print(json.dumps([fleet.acquire(ep, {rate}, Waits(PROCESS, ep, time.time() + 60)).slot"
        f" for _ in range({each})]))\n"
    )
    env = {**os.environ, **stack.env, "PYTHONPATH": str(ROOT / "layer")}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", child, THROTTLE_TABLE, endpoint],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(procs)
    ]
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(timeout=60)
    for proc in children:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        slots.extend(json.loads(out))
    assert not errors and len(slots) == (threads + procs) * each
    spacing = round(1e6 / paced_rate(rate))
    slots.sort()
    assert all(b - a >= spacing for a, b in itertools.pairwise(slots))
    for i, start in enumerate(slots):  # no rolling second holds more than the rate
        assert sum(1 for x in slots[i:] if x < start + 1_000_000) <= rate


def test_unreachable_dynamodb_fails_open_warns_once_and_cools_down(
    stack: Stack, endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    t = frozen_now()
    closed = f"http://127.0.0.1:{free_port()}"
    fleet, aws = limiter(stack, t, AWS_ENDPOINT_URL_DYNAMODB=closed)
    with caplog.at_level(logging.WARNING, logger="iamdb"):
        assert fleet.acquire(endpoint, 10, t.now + 5) is None
        assert fleet.acquire(endpoint, 10, t.now + 5) is None  # cool-down: DynamoDB left alone
    assert aws.calls == 0  # the connection itself failed (TCP refused)
    warnings = [r for r in caplog.records if "fleet limiter" in r.getMessage()]
    assert len(warnings) == 1 and THROTTLE_TABLE in warnings[0].getMessage()
    t.now += COOLDOWN_SECONDS + 1
    assert fleet.acquire(endpoint, 10, t.now + 5) is None


@pytest.mark.parametrize(
    ("table", "env"),
    [
        ("not-the-throttle-table", {}),  # ResourceNotFoundException
        (THROTTLE_TABLE, {"AWS_SECRET_ACCESS_KEY": "not-the-secret"}),  # signature refused
    ],
)
def test_a_table_that_cannot_be_used_fails_open(
    stack: Stack, endpoint: str, table: str, env: dict[str, str]
) -> None:
    t = frozen_now()
    fleet, aws = limiter(stack, t, table, **env)
    assert fleet.acquire(endpoint, 10, t.now + 5) is None and aws.calls == 1


# -- through get_pg() -----------------------------------------------------------------------


@pytest.fixture
def registry(stack_env: dict[str, str]) -> Iterator[tuple[Registry, RecordingTelemetry]]:
    telemetry = RecordingTelemetry()
    reg = Registry(runtime=runtime(os.environ), telemetry=telemetry)  # type: ignore[arg-type]
    try:
        yield reg, telemetry
    finally:
        reg.reset()


def test_get_pg_uses_the_fleet_limiter(
    stack: Stack, registry: tuple[Registry, RecordingTelemetry]
) -> None:
    reg, telemetry = registry
    assert stack.env["IAMDB_THROTTLE_TABLE"] == THROTTLE_TABLE
    assert reg.get_pg().execute("SELECT 1").fetchone() == (1,)
    totals = telemetry.totals("pg")
    assert totals.get("LimiterFailOpen", 0) == 0 and totals["ConnectionsOpened"] == 1
    assert table_item(f"{PG_ENDPOINT.lower()}:{stack.pg.port if stack.pg else 0}") is not None


def test_get_pg_still_logs_in_when_dynamodb_is_down(
    stack: Stack,
    registry: tuple[Registry, RecordingTelemetry],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", f"http://127.0.0.1:{free_port()}")
    reg, telemetry = registry
    assert reg.get_pg().execute("SELECT 1").fetchone() == (1,)
    assert telemetry.totals("pg")["LimiterFailOpen"] == 1


def test_fleet_limited_get_pg_loads_no_boto3(stack: Stack) -> None:
    code = (
        "import json, sys, iamdb\n"
        "iamdb.get_pg().execute('SELECT 1')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('boto3', 'botocore'))))\n"
    )
    env = {**os.environ, **stack.env, "PYTHONPATH": str(ROOT / "layer")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []
