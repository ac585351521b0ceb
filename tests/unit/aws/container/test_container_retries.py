"""The container fetch rides out a hiccup, ends by the caller's deadline, never hands out
expired credentials, and never waits on another thread past the deadline.

A hiccup is a 5xx, 429 or 408, a timeout, a refused, closed or reset connection, or an answer
cut short: tried again (3 attempts, iamdb's decorrelated jitter from the runtime's random
source). Anything else (a refusal of the token, a 404, unusable credentials) fails at once.
Time is a fake clock where the logic decides the bound, the real one only where a real wait is
the point (a silent or dribbling endpoint), with generous bounds.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import pytest

from iamdb._aws import container as _container
from iamdb._aws.container import ContainerCredentials
from iamdb._core.runtime import Runtime
from iamdb.errors import CredentialsError, IamDbError
from tests.container_endpoint import (
    CLOSE,
    KEY,
    RESET,
    SECRETS,
    SILENT,
    Dribble,
    Scripted,
    Step,
    Ticking,
    environment,
    iso,
    ok,
    serve,
)
from tests.fakes import START, FakeTime
from tests.localserver import LocalServer, response

LATER = START + 3600
GOOD = ok(LATER)


@pytest.fixture(autouse=True)
def short_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each attempt bounded by 0.3 s instead of 2 s: a timeout costs the tests little."""
    monkeypatch.setattr(_container, "FETCH_SECONDS", 0.3)


def _source(server: LocalServer, t: FakeTime, random: float = 0.5) -> ContainerCredentials:
    env = environment(server)
    return ContainerCredentials(
        Runtime(environ=env, clock=t.clock, sleep=t.sleep, random=lambda: random)
    )


def _get(steps: list[Step], t: FakeTime, deadline: float | None = None) -> tuple[Any, Scripted]:
    """(credentials or the error, the script) of one get() against ``steps``."""
    server, script = serve(steps)
    with server:
        try:
            return _source(server, t).get(deadline), script
        except IamDbError as exc:
            return exc, script


HICCUPS = {
    "500": response(500, b'{"message": "internal"}'),
    "502": response(502),
    "503": response(503, b"<html>unavailable</html>"),
    "504": response(504),
    "429": response(429, b'{"message": "slow down"}'),
    "408": response(408),
    "closed": CLOSE,
    "reset": RESET,
    "cut-short": GOOD[:-20],
    "timeout": SILENT,
    "200-not-json": response(200, b"<html>proxy</html>"),
}


@pytest.mark.parametrize("hiccup", list(HICCUPS))
def test_a_hiccup_then_credentials(hiccup: str) -> None:
    t = Ticking()
    creds, script = _get([HICCUPS[hiccup], GOOD], t)
    assert not isinstance(creds, Exception), creds
    assert creds.access_key == KEY
    assert script.requests == 2 and len(t.sleeps) == 1


@pytest.mark.parametrize("hiccup", list(HICCUPS))
def test_three_hiccups_are_a_credentials_error_saying_so(hiccup: str) -> None:
    t = Ticking()
    error, script = _get([HICCUPS[hiccup]] * 3 + [GOOD], t, deadline=t.now + 30)
    assert isinstance(error, CredentialsError), error
    assert script.requests == 3
    assert "(3 attempts over " in str(error) and "a later call tries again" in str(error)


FAILURES = {
    "400": response(400),
    "401": response(401, b'{"message": "bad token"}'),
    "403": response(403),
    "404": response(404),
    "302": response(302, b"", [("Location", "/elsewhere")]),
    "no-secret": ok(LATER, SecretAccessKey=None),
    "number-key": ok(LATER, AccessKeyId=7),
    "no-expiration": ok(LATER, Expiration=None),
    "bad-expiration": ok(LATER, Expiration="soon"),
    "expired": ok(START - 1),
    "control-character": ok(LATER, Token="a\nb"),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_other_failures_are_not_tried_again(failure: str) -> None:
    t = FakeTime()
    error, script = _get([FAILURES[failure], GOOD], t)
    assert isinstance(error, CredentialsError), error
    assert script.requests == 1 and t.sleeps == []
    assert "(1 attempt over 0.0 s)" in str(error)


def test_a_refused_token_says_what_to_check() -> None:
    error, _ = _get([FAILURES["401"]], FakeTime())
    assert str(error).startswith("container credentials: 127.0.0.1:")
    assert "HTTP 401: bad token" in str(error)
    assert "check AWS_CONTAINER_AUTHORIZATION_TOKEN (or _TOKEN_FILE)" in str(error)


@pytest.mark.parametrize(
    ("expires_in", "handed_out"),
    [(-3600, False), (-1, False), (0, False), (30, False), (60, False), (61, True), (3600, True)],
)
def test_credentials_with_a_minute_or_less_left_are_never_handed_out(
    expires_in: float, handed_out: bool
) -> None:
    t = FakeTime()
    server, script = serve([ok(START + expires_in)])
    with server:
        source = _source(server, t)
        for _ in range(2):
            try:
                found: object = source.get()
            except CredentialsError as exc:
                found = exc
            assert handed_out != isinstance(found, CredentialsError), found
    assert script.requests == (1 if handed_out else 2)  # a refused answer is not cached
    if not handed_out:
        assert "is this host's clock right?" in str(found)


@pytest.mark.parametrize(
    "expiration",
    [iso(LATER), iso(LATER, ""), iso(LATER, "+00:00"), iso(LATER + 7200, "+02:00")],
    ids=["Z", "no-zone-is-UTC", "+00:00", "+02:00"],
)
def test_expiration_forms(expiration: str) -> None:
    t = FakeTime()
    server, script = serve([ok(LATER, Expiration=expiration)])
    with server:
        source = _source(server, t)
        source.get()
        t.now = LATER - _container.REFRESH_SECONDS - 0.001
        source.get()
        assert script.requests == 1
        t.now += 0.001
        source.get()
        assert script.requests == 2


def test_backoff_is_the_runtimes_decorrelated_jitter() -> None:
    """Delays from the runtime's random source: base 0.1 s, each up to 3x the last, cap 1 s."""
    delays = {}
    for random in (0.0, 0.999):
        t = FakeTime()
        server, _ = serve([response(503)] * 3 + [GOOD])
        with server, pytest.raises(CredentialsError):
            _source(server, t, random).get(t.now + 30)
        delays[random] = t.sleeps
    assert delays[0.0] == [0.1, 0.1]
    assert delays[0.999] == pytest.approx([0.3, 0.9], abs=0.01)


@pytest.mark.parametrize("budget", [0.05, 0.1, 0.25, 0.5, 1.0, 1.5])
@pytest.mark.parametrize("random", [0.0, 0.5, 0.999])
def test_retries_and_backoff_end_by_the_deadline(budget: float, random: float) -> None:
    """Fake time that only the backoff moves: no sleep may carry the clock past the deadline."""
    t = FakeTime()
    deadline = t.now + budget
    server, script = serve([response(500)])
    with server, pytest.raises(CredentialsError) as info:
        _source(server, t, random).get(deadline)
    assert t.now < deadline
    assert script.requests == len(t.sleeps) + 1 <= 3
    if script.requests < 3:
        assert "the deadline left no time for another attempt" in str(info.value)


def test_no_time_left_asks_nothing() -> None:
    t = FakeTime()
    error, script = _get([GOOD], t, deadline=t.now)
    assert isinstance(error, CredentialsError) and script.requests == 0


@pytest.mark.parametrize("endpoint", ["silent", "dribbling"])
def test_a_silent_or_dribbling_endpoint_ends_by_the_deadline(endpoint: str) -> None:
    """Real time: the whole fetch, retries included, by the deadline (not 3 x the attempt
    bound, nor the minute a byte every 0.1 s takes)."""
    step: Step = SILENT if endpoint == "silent" else Dribble(GOOD, 0.1)
    server, _ = serve([step])
    with server:
        source = ContainerCredentials(Runtime(environ=environment(server)))
        started = time.time()
        with pytest.raises(CredentialsError) as info:
            source.get(started + 0.5)
        spent = time.time() - started
    assert spent < 0.5 + 2.0  # generous: the bound is 0.5 s; unbounded it would be > 3 s
    assert "over 0." in str(info.value)


def test_waiting_for_another_threads_fetch_ends_by_the_deadline() -> None:
    server, script = serve([SILENT])
    with server:
        source = ContainerCredentials(Runtime(environ=environment(server)))
        first = threading.Thread(target=_swallow, args=(source, time.time() + 3.0))
        first.start()
        while script.requests == 0:
            time.sleep(0.01)
        started = time.time()
        with pytest.raises(CredentialsError) as info:
            source.get(started + 0.2)
        spent = time.time() - started
        first.join()
    assert spent < 0.2 + 1.0  # generous: the other thread holds the lock for ~0.9 s
    assert "another thread's fetch was still running" in str(info.value)


def _swallow(source: ContainerCredentials, deadline: float) -> None:
    with contextlib.suppress(CredentialsError):
        source.get(deadline)


def test_a_due_refresh_with_good_credentials_is_one_attempt_and_keeps_them(caplog: Any) -> None:
    t = FakeTime()
    server, script = serve([GOOD, response(503, b'{"message": "agent restarting"}')])
    with server:
        source = _source(server, t)
        first = source.get()
        t.now = LATER - _container.REFRESH_SECONDS
        with caplog.at_level(logging.INFO, logger="iamdb"):
            assert source.get() is first
    assert script.requests == 2 and t.sleeps == []
    assert "agent restarting" in caplog.text and "are kept" in caplog.text
    assert not any(secret in caplog.text for secret in SECRETS)


def test_a_due_refresh_does_not_wait_for_another_thread() -> None:
    """While the cached credentials are good, a thread that finds another refreshing them
    takes them instead of waiting."""
    clock = Ticking()
    server, script = serve([GOOD, SILENT])
    with server:
        source = _source(server, clock)
        first = source.get()
        clock.now = LATER - _container.REFRESH_SECONDS
        refresher = threading.Thread(target=source.get, args=(clock.clock() + 3.0,))
        refresher.start()
        while script.requests < 2:
            time.sleep(0.01)
        started = time.time()
        assert source.get() is first
        assert time.time() - started < 0.2  # it returned at once; the refresher waits 0.3 s
        refresher.join()


def test_retries_are_logged_without_secrets(caplog: Any) -> None:
    with caplog.at_level(logging.INFO, logger="iamdb"):
        creds, _ = _get([response(500, b'{"message": "hiccup"}'), GOOD], FakeTime())
    assert creds.access_key == KEY
    assert "HTTP 500: hiccup; attempt 2 in 0." in caplog.text
    assert not any(secret in caplog.text for secret in SECRETS)
