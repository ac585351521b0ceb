"""The fleet-wide IAM login limiter against devstack's DynamoDB (moto, signatures checked).

The limiter signs its ``UpdateItem`` calls with the function's credentials, whose IAM
policy allows ``dynamodb:UpdateItem`` on the throttle table only. The tests read the
table through moto's in-process state (the function itself may not read it).
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import iamdb
from devstack.aws import ACCOUNT, REGION, THROTTLE_TABLE
from devstack.procs import free_port
from devstack.stack import Stack
from iamdb.credentials import CredentialResolver
from iamdb.fleet import TTL_SECONDS, FleetLimiter
from iamdb.limiter import paced_rate
from tests.fakes import FakeTime

pytestmark = pytest.mark.integration


def table_items(prefix: str) -> dict[str, dict[str, Any]]:
    """The throttle table's items whose key starts with ``prefix``: pk -> attributes."""
    from moto.dynamodb.models import dynamodb_backends

    table = dynamodb_backends[ACCOUNT][REGION].get_table(THROTTLE_TABLE)
    found = {}
    for item in table.all_items():
        attrs = item.to_json()["Attributes"]
        if attrs["pk"]["S"].startswith(prefix):
            found[attrs["pk"]["S"]] = attrs
    return found


@pytest.fixture
def endpoint() -> str:
    """A fresh endpoint name, so tests never share windows."""
    return f"fleet-{uuid.uuid4().hex[:12]}.c0devstack00.us-east-1.rds.amazonaws.com:5432"


def limiter(stack: Stack, **kw: Any) -> FleetLimiter:
    env = {**stack.env, **kw.pop("env", {})}
    return FleetLimiter(THROTTLE_TABLE, environ=env, resolver=CredentialResolver(env), **kw)


def test_slots_start_at_the_first_unstarted_one_and_fill_the_window(
    stack: Stack, endpoint: str
) -> None:
    window = math.floor(time.time()) + 100  # a window of our own, in the future
    t = FakeTime(window + 0.35, frozen=True)
    fleet = limiter(stack, clock=t.clock, sleep=t.sleep, uniform=lambda low, high: 0.0)
    # rate 10 -> 9 slots per second, 1/9 s apart; slots 0-3 began before 0.35 s.
    got = [fleet.acquire(endpoint, 10) for _ in range(6)]
    assert got == pytest.approx([window + i / 9 for i in (4, 5, 6, 7, 8)] + [window + 1], abs=1e-6)
    assert fleet.full_windows == 1
    items = table_items(endpoint)
    assert items[f"{endpoint}#{window}"]["count"] == {"N": "9"}
    assert items[f"{endpoint}#{window + 1}"]["count"] == {"N": "1"}
    # Waited for each slot; the full window's caller first paused until just before the next.
    waits = [s - t.now for s in got]
    assert t.sleeps == pytest.approx([*waits[:5], window + 1 - t.now, waits[5]], abs=1e-6)


def test_a_quiet_window_moves_its_count_forward_instead_of_bursting(
    stack: Stack, endpoint: str
) -> None:
    window = math.floor(time.time()) + 200
    t = FakeTime(window + 0.05, frozen=True)
    fleet = limiter(stack, clock=t.clock, sleep=t.sleep)
    assert fleet.acquire(endpoint, 10) == pytest.approx(window + 1 / 9, abs=1e-6)
    t.now = window + 0.6  # slots 2-5 went unused; the next login takes slot 6, not 2
    assert fleet.acquire(endpoint, 10) == pytest.approx(window + 6 / 9, abs=1e-6)
    assert fleet.acquire(endpoint, 10) == pytest.approx(window + 7 / 9, abs=1e-6)
    assert table_items(endpoint)[f"{endpoint}#{window}"]["count"] == {"N": "8"}


def test_items_carry_a_ttl_a_few_minutes_ahead(stack: Stack, endpoint: str) -> None:
    from moto.dynamodb.models import dynamodb_backends

    ttl = dynamodb_backends[ACCOUNT][REGION].describe_time_to_live(THROTTLE_TABLE)
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}
    fleet = limiter(stack)
    at = fleet.acquire(endpoint, 50)
    assert at is not None
    [item] = table_items(endpoint).values()
    assert int(item["expires_at"]["N"]) == math.floor(at) + TTL_SECONDS
    assert 120 <= TTL_SECONDS <= 900


def test_many_threads_never_exceed_the_rate_in_any_window(stack: Stack, endpoint: str) -> None:
    rate, threads, each = 30, 8, 6
    fleet = limiter(stack)  # one limiter, real clock and sleep: the threads contend for real
    instants: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            other = limiter(stack)  # separate limiters too, as separate environments would be
            for i in range(each):
                at = (fleet if i % 2 else other).acquire(endpoint, rate, time.time() + 30)
                assert at is not None
                with lock:
                    instants.append(at)
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(timeout=60)
    assert not errors and len(instants) == threads * each
    slots = math.floor(paced_rate(rate))
    counts = [int(item["count"]["N"]) for item in table_items(endpoint).values()]
    assert sum(counts) >= threads * each and max(counts) <= slots <= rate
    instants.sort()
    assert all(b - a >= 1 / slots - 1e-6 for a, b in itertools.pairwise(instants))
    for i, start in enumerate(instants):  # rolling one-second windows too
        assert sum(1 for x in instants[i:] if x < start + 1.0) <= rate


def test_unreachable_dynamodb_fails_open_warns_once_and_counts(
    stack: Stack, endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    fleet = limiter(stack, env={"AWS_ENDPOINT_URL_DYNAMODB": closed})
    with caplog.at_level(logging.WARNING, logger="iamdb"):
        assert fleet.acquire(endpoint, 10) is None
        assert fleet.acquire(endpoint, 10) is None  # within the cool-down: DynamoDB left alone
    assert fleet.fail_opens == 2
    warnings = [r for r in caplog.records if "fleet limiter" in r.getMessage()]
    assert len(warnings) == 1 and THROTTLE_TABLE in warnings[0].getMessage()
    # A connect never hangs on the limiter: one attempt, short timeouts.
    config = fleet._dynamodb().meta.config
    assert config.retries["total_max_attempts"] == 1
    assert config.connect_timeout <= 1 and config.read_timeout <= 1


def test_a_missing_table_fails_open(stack: Stack, endpoint: str) -> None:
    other = FleetLimiter(
        "not-the-throttle-table", environ=stack.env, resolver=CredentialResolver(stack.env)
    )
    assert other.acquire(endpoint, 10) is None
    assert other.fail_opens == 1


def test_refused_credentials_fail_open(stack: Stack, endpoint: str) -> None:
    fleet = limiter(stack, env={"AWS_SECRET_ACCESS_KEY": "not-the-secret"})  # 403 from DynamoDB
    assert fleet.acquire(endpoint, 10) is None
    assert fleet.fail_opens == 1


@pytest.fixture
def no_dynamodb(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", f"http://127.0.0.1:{free_port()}")
    yield


def test_get_pg_uses_the_fleet_limiter(stack: Stack, stack_env: dict[str, str]) -> None:
    from devstack.stack import PG_ENDPOINT

    assert stack_env["IAMDB_THROTTLE_TABLE"] == THROTTLE_TABLE
    iamdb.get_pg().execute("SELECT 1")
    from iamdb.registry import default

    fleet = default.admission.fleet
    assert fleet is not None and fleet.fail_opens == 0
    assert table_items(f"{PG_ENDPOINT.lower()}:{stack.pg.port if stack.pg else 0}#")


def test_get_pg_still_logs_in_when_dynamodb_is_down(stack: Stack, no_dynamodb: None) -> None:
    from iamdb.registry import default

    assert iamdb.get_pg().execute("SELECT 1").fetchone() == (1,)
    fleet = default.admission.fleet
    assert fleet is not None and fleet.fail_opens == 1
