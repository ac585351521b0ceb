"""TokenCache with a fake clock: reuse, refresh age, credential changes, threads, reprs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl

import pytest

from iamdb._aws.chain import CredentialResolver
from iamdb._aws.credentials import Credentials
from iamdb._aws.signer import generate_db_auth_token
from iamdb._aws.tokens import Token, TokenCache
from iamdb._core.runtime import Runtime
from iamdb._sql.tokens import Target
from iamdb.errors import ConfigError
from tests.fakes import FakeClock, RecordingProbe

HOST = "mydb.c9akciq32.us-east-1.rds.amazonaws.com"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
ENDPOINT = Target(HOST, 5432, "app", "us-east-1")


@pytest.fixture
def env() -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRET}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_790_000_000.0)


class CountedCache(TokenCache):
    """The cache as a Login uses it: every signature counted (``TokensSigned``) on a probe."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.probe = RecordingProbe()

    def get(
        self,
        endpoint: Target,
        *,
        deadline: float | None = None,
        on_sign: Callable[[], None] | None = None,
    ) -> Token:
        return super().get(endpoint, deadline=deadline, on_sign=self._signed)

    def _signed(self) -> None:
        self.probe.count("TokensSigned")


@pytest.fixture
def cache(env: dict[str, str], clock: FakeClock) -> CountedCache:
    return CountedCache(resolver=CredentialResolver(Runtime(environ=env)), clock=clock)


def _param(token: Token, name: str) -> str:
    return dict(parse_qsl(token.value.split("?", 1)[1]))[name]


def test_reuses_a_fresh_token(cache: CountedCache, clock: FakeClock) -> None:
    first = cache.get(ENDPOINT)
    clock.now += 100
    assert cache.get(ENDPOINT) is first
    assert cache.probe["TokensSigned"] == 1


def test_signs_at_the_cache_clock(
    cache: CountedCache, clock: FakeClock, env: dict[str, str]
) -> None:
    token = cache.get(ENDPOINT)
    instant = datetime.fromtimestamp(clock.now, timezone.utc)
    assert token.signed_at == clock.now and token.access_key == "AKIDEXAMPLE"
    assert _param(token, "X-Amz-Date") == instant.strftime("%Y%m%dT%H%M%SZ")
    creds = Credentials(env["AWS_ACCESS_KEY_ID"], SECRET)
    assert token.value == generate_db_auth_token(*ENDPOINT[:4], credentials=creds, now=instant)


def test_resigns_at_and_after_the_refresh_age(cache: CountedCache, clock: FakeClock) -> None:
    first = cache.get(ENDPOINT)
    clock.now = first.signed_at + 839.999
    assert cache.get(ENDPOINT) is first
    clock.now = first.signed_at + 840
    second = cache.get(ENDPOINT)
    assert second is not first and second.signed_at == clock.now
    assert second.value != first.value
    clock.now = second.signed_at + 5000
    assert cache.get(ENDPOINT).signed_at == clock.now
    assert cache.probe["TokensSigned"] == 3


def test_custom_refresh_age(env: dict[str, str], clock: FakeClock) -> None:
    cache = TokenCache(
        resolver=CredentialResolver(Runtime(environ=env)), clock=clock, refresh_seconds=60
    )
    first = cache.get(ENDPOINT)
    clock.now += 59
    assert cache.get(ENDPOINT) is first
    clock.now += 1
    assert cache.get(ENDPOINT) is not first


def test_clock_going_backwards_resigns(cache: CountedCache, clock: FakeClock) -> None:
    first = cache.get(ENDPOINT)
    clock.now -= 1
    assert cache.get(ENDPOINT) is not first


@pytest.mark.parametrize(
    "change",
    [
        {"AWS_ACCESS_KEY_ID": "AKIDROTATED"},
        {"AWS_SECRET_ACCESS_KEY": SECRET + "2"},
        {"AWS_SESSION_TOKEN": "new-session-token"},
    ],
    ids=["new-key", "same-key-new-secret", "same-key-new-token"],
)
def test_resigns_at_once_when_credentials_change(
    cache: CountedCache, env: dict[str, str], change: dict[str, str]
) -> None:
    first = cache.get(ENDPOINT)
    old = dict(env)
    env.update(change)
    second = cache.get(ENDPOINT)
    assert second.value != first.value and cache.probe["TokensSigned"] == 2
    assert second.access_key == env["AWS_ACCESS_KEY_ID"]
    # Entries of the old credentials were dropped: going back signs once more.
    env.clear()
    env.update(old)
    assert cache.get(ENDPOINT).value == first.value  # same clock, same credentials
    assert cache.probe["TokensSigned"] == 3


def test_one_token_per_endpoint_user_region(cache: CountedCache) -> None:
    variants = [
        ENDPOINT,
        ("other.c9akciq32.us-east-1.rds.amazonaws.com", 5432, "app", "us-east-1"),
        (HOST, 5433, "app", "us-east-1"),
        (HOST, 5432, "reporting", "us-east-1"),
        (HOST, 5432, "app", "us-west-2"),
    ]
    tokens = [cache.get(Target(*v)) for v in variants]
    assert len({t.value for t in tokens}) == len(variants)
    assert [cache.get(Target(*v)) for v in variants] == tokens
    assert cache.probe["TokensSigned"] == len(variants)


def test_tokens_of_one_key_are_never_served_for_another(
    cache: CountedCache, env: dict[str, str]
) -> None:
    first = cache.get(ENDPOINT)
    env["AWS_ACCESS_KEY_ID"] = "AKIDOTHER"
    other = cache.get(ENDPOINT)
    assert other.access_key == "AKIDOTHER"
    assert _param(other, "X-Amz-Credential").startswith("AKIDOTHER/")
    assert _param(first, "X-Amz-Credential").startswith("AKIDEXAMPLE/")


def test_invalidate_forgets_one_endpoint(cache: CountedCache) -> None:
    other = Target(HOST, 5432, "reporting", "us-east-1")
    first, kept = cache.get(ENDPOINT), cache.get(other)
    cache.invalidate(ENDPOINT)
    assert cache.get(ENDPOINT) is not first
    assert cache.get(other) is kept
    assert cache.probe["TokensSigned"] == 3
    cache.invalidate(Target("unknown.host", 1, "x", "us-east-1"))  # no error


def test_clear_forgets_everything(cache: CountedCache) -> None:
    first = cache.get(ENDPOINT)
    cache.clear()
    assert cache.get(ENDPOINT) is not first
    assert cache.probe["TokensSigned"] == 2


def test_concurrent_gets_sign_once(cache: CountedCache) -> None:
    threads, calls = 16, 50
    barrier = threading.Barrier(threads)
    results: list[Token] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        got = [cache.get(ENDPOINT) for _ in range(calls)]
        with lock:
            results.extend(got)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=30)
    assert len(results) == threads * calls
    assert cache.probe["TokensSigned"] == 1
    assert len({id(t) for t in results}) == 1


def test_repr_hides_the_token(cache: CountedCache) -> None:
    token = cache.get(ENDPOINT)
    signature = _param(token, "X-Amz-Signature")
    for text in (repr(token), str(token), repr([token]), repr(cache)):
        assert token.value not in text and signature not in text and SECRET not in text
    assert "AKIDEXAMPLE" in repr(token)


def test_token_age() -> None:
    assert Token("v", 100.0, "AKID").age(160.5) == 60.5


@pytest.mark.parametrize("refresh", [0, -1, 900.5, 1e9, float("nan")])
def test_refresh_seconds_must_be_within_the_lifetime(refresh: float) -> None:
    with pytest.raises(ConfigError) as info:
        TokenCache(resolver=CredentialResolver(Runtime(environ={})), refresh_seconds=refresh)
    assert info.value.variable == "IAMDB_TOKEN_REFRESH_SECONDS"


def test_refresh_seconds_may_equal_the_lifetime(env: dict[str, str], clock: FakeClock) -> None:
    cache = TokenCache(
        resolver=CredentialResolver(Runtime(environ=env)), clock=clock, refresh_seconds=900
    )
    first = cache.get(ENDPOINT)
    clock.now += 899.999  # used until the very end of its 900 s
    assert cache.get(ENDPOINT) is first
    clock.now += 0.001
    assert cache.get(ENDPOINT) is not first
