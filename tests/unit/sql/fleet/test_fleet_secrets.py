"""No secret reachable from what the fleet limiter raises or logs, on every failure path.

The real AwsClient signs each UpdateItem with the credentials below (the session token travels
in a header, so the frames of the client's calls hold it) and sends it to a local server of our
own that answers as DynamoDB does when it pushes back, fails, refuses the table, answers
nonsense, or says the queue is too long. Every exception the limiter raises is walked as a
crash reporter would (tests/integration/kept_alive.py: its chain, attributes and frames), and
every log line is read: neither the secret key nor the session token may appear.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import pytest

from iamdb._aws.chain import CredentialResolver
from iamdb._aws.client import AwsClient
from iamdb._core.log import WarnOnce
from iamdb._core.runtime import Runtime
from iamdb._sql.fleet import FleetLimiter, Ticket
from iamdb._sql.limits import Limits
from iamdb._sql.pace import Waits
from iamdb.errors import ThrottleError
from tests.fakes import FakeTime, RecordingProbe
from tests.integration.kept_alive import kept_alive
from tests.localserver import Captured, LocalServer, answering, response

SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYFLEETSECRETKEY"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjE//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+FLEETSESSIONTOKEN"
SECRETS = (SECRET_KEY, SESSION_TOKEN)
EP = "db.c9akciq32.us-east-1.rds.amazonaws.com:5432"


def answer(status: int, code: str = "", **body: object) -> bytes:
    if code:
        body["__type"] = f"com.amazonaws.dynamodb.v20120810#{code}"
    return response(status, json.dumps(body).encode(), [("x-amzn-RequestId", "RID")])


ANSWERS = {
    "throttled": answer(400, "ThrottlingException", message="slow down"),
    "5xx": answer(500, "InternalServerError", message="oops"),
    "too long": answer(
        400,
        "ConditionalCheckFailedException",
        message="The conditional request failed",
        Item={"pk": {"S": f"q#{EP}"}, "n": {"N": str(int((time.time() + 600) * 1e6))}},
    ),
}
FAIL_OPEN = {
    "no table": answer(400, "ResourceNotFoundException", message="Requested resource not found"),
    "denied": answer(400, "AccessDeniedException", message=f"not allowed {SESSION_TOKEN[:8]}"),
    "not JSON": response(200, b"<html>proxy</html>"),
    "no slot": answer(200, Attributes={}),
}


class Fixture:
    """A FleetLimiter on the real AwsClient, signing with the secrets above, on a fake clock
    whose every sleep is followed by ``frozen`` seconds of the process being suspended."""

    def __init__(self, url: str, frozen: float = 0.0) -> None:
        env = {
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_DYNAMODB": url,
            "AWS_ACCESS_KEY_ID": "ASIAFLEETTESTKEY0000",
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_SESSION_TOKEN": SESSION_TOKEN,
        }
        self.t = FakeTime(time.time())
        self.frozen = frozen
        self.rt = Runtime(environ=env, clock=self.t.clock, sleep=self.sleep, random=lambda: 0.5)
        aws = AwsClient(self.rt, CredentialResolver(self.rt))
        self.fleet = FleetLimiter("iamdb-throttle", aws, self.rt, WarnOnce())

    def sleep(self, seconds: float) -> None:
        self.t.sleep(seconds)
        self.t.now += self.frozen

    def acquire(self, seconds: float) -> Ticket | None:
        return self.fleet.acquire(EP, 10, Waits(self.rt, EP, self.t.now + seconds))


@pytest.fixture
def local() -> Iterator[tuple[LocalServer, list[bytes]]]:
    answers: list[bytes] = []

    def next_answer(_request: Captured) -> bytes:
        return answers[0]

    with LocalServer(answering(next_answer)) as server:
        yield server, answers


def assert_clean(texts: list[tuple[str, str]]) -> None:
    leaks = [where for where, text in texts for secret in SECRETS if secret in text]
    assert not leaks, leaks


@pytest.mark.parametrize("case", sorted(ANSWERS))
def test_throttle_errors_keep_no_secret_alive(
    case: str, local: tuple[LocalServer, list[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    server, answers = local
    answers.append(ANSWERS[case])
    f = Fixture(server.url)
    with caplog.at_level(logging.DEBUG, logger="iamdb"), pytest.raises(ThrottleError) as caught:
        f.acquire(3)
    assert server.captured, "the limiter never asked"
    assert SESSION_TOKEN in str(server.captured[0].headers)  # the request did carry it
    assert_clean(list(kept_alive(caught.value)))
    assert_clean([("log", r.getMessage()) for r in caplog.records])


def test_a_login_frozen_past_its_deadline_keeps_no_secret_alive(
    local: tuple[LocalServer, list[bytes]],
) -> None:
    server, answers = local
    answers.append(answer(200, Attributes={"n": {"N": str(int((time.time() + 0.5) * 1e6))}}))
    f = Fixture(server.url, frozen=20.0)
    with pytest.raises(ThrottleError, match="suspended") as caught:
        Limits(10, f.fleet, f.rt).permit(EP, f.t.now + 5, RecordingProbe())
    assert_clean(list(kept_alive(caught.value)))


@pytest.mark.parametrize("case", sorted(FAIL_OPEN))
def test_failing_open_logs_and_keeps_no_secret(
    case: str, local: tuple[LocalServer, list[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    server, answers = local
    answers.append(FAIL_OPEN[case])
    f = Fixture(server.url)
    with caplog.at_level(logging.DEBUG, logger="iamdb"):
        assert f.acquire(3) is None
    records = [r for r in caplog.records if r.name == "iamdb"]
    assert records and all(r.exc_info is None for r in records)
    assert_clean([("log", r.getMessage()) for r in records])
    assert_clean([(k, repr(v)) for k, v in vars(f.fleet).items()])  # nothing kept
