"""Share RDS's IAM login budget across a whole fleet of Lambda environments, via DynamoDB.

A deploy or a traffic spike starts hundreds of environments at once; each limits only
itself, so together they exceed the instance's limit. With ``IAMDB_THROTTLE_TABLE`` set,
every new IAM login first reserves a *slot* in a DynamoDB item per (endpoint, one-second
window): the window has ``floor(0.9 x IAMDB_CONNECT_RATE)`` slots spaced evenly across
the second, and the login waits (``sleep``) until its slot begins. So logins reach the
server evenly spaced, never more than the rate in any second, fixed or rolling.

One conditional ``UpdateItem`` reserves a slot, returning the new count (no scans, no
read-before-write)::

    SET #count = if_not_exists(#count, :first) + :one, expires_at = :ttl
    IF attribute_not_exists(#count) OR (#count >= :first AND #count < :slots)

``:first`` is the first slot of the window that has not begun yet, so an item created
late in its second never hands out slots in the past (a burst). When the count lags behind
``:first`` (the window was quiet) a second conditional update moves it forward. A full
window means waiting for the next one: its callers try again at random instants in the
last 50-300 ms before it begins (jitter), so the fleet does not stampede at the boundary,
and their slots are already reserved when it starts. Slots are reserved ahead by the last
call's latency, and a slot whose answer arrives more than :data:`LATE` after it began is
given up for a later one (a late login would crowd its successors). Items expire through
TTL on ``expires_at``.

DynamoDB unreachable, throttled, denied or missing: the limiter fails open to the
per-process limiter (which the caller has already passed), logs one warning per process,
counts it in :attr:`FleetLimiter.fail_opens`, and leaves DynamoDB alone for
``cooldown_seconds``. The boto3 client is created lazily, once per process, with short
timeouts and no botocore retries, so a login never hangs on the limiter.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from iamdb import redact
from iamdb.credentials import CredentialResolver, default_resolver
from iamdb.errors import ThrottleError
from iamdb.limiter import paced_rate
from iamdb.log import WarnOnce, logger

TTL_SECONDS = 300
"""How long after its window an item lives (DynamoDB deletes it through TTL)."""

LEAD = (0.05, 0.3)
"""A full window's callers try the next one this many seconds (random) before it begins."""

LATE = 0.05
"""A slot whose answer comes back more than this many seconds after it began is given up:
logins may land up to ~0.1 s off their slots before a rolling second exceeds the limit."""

MAX_LEAD = 0.5
"""Reserve at most this far ahead to absorb DynamoDB's latency."""

_NAMES = {"#c": "count", "#x": "expires_at"}
_clients: dict[tuple[str, str | None, str, str], Any] = {}
_clients_lock = threading.Lock()


class FleetLimiter:
    """Fleet-wide pacing of new IAM logins through one DynamoDB table."""

    def __init__(
        self,
        table: str,
        *,
        environ: Mapping[str, str] | None = None,
        resolver: CredentialResolver | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        uniform: Callable[[float, float], float] = random.uniform,
        warn_once: WarnOnce | None = None,
        client: Any = None,
        cooldown_seconds: float = 30.0,
    ) -> None:
        self.table = table
        self._environ = environ
        self._resolver = resolver or default_resolver
        self._clock = clock  # epoch seconds: windows are shared by every machine
        self._sleep = sleep
        self._uniform = uniform
        self._warn_once = warn_once or WarnOnce()
        self._client = client
        self._cooldown = cooldown_seconds
        self._skip_until = 0.0
        self.fail_opens = 0
        """How many logins went ahead on the per-process limiter alone (metric)."""
        self.full_windows = 0
        """How many reservations found their window full and moved on (metric)."""
        self.late_slots = 0
        """How many slots were given up because DynamoDB answered too late (metric)."""
        self._latency = 0.0  # duration of the last UpdateItem: slots are reserved that far ahead

    def acquire(self, endpoint: str, rate: float, deadline: float = math.inf) -> float | None:
        """Reserve a slot for one login to ``endpoint`` and sleep until it begins.

        Returns the slot's instant (epoch seconds), or None when the limiter failed open.
        Raises ThrottleError when no slot begins before ``deadline``.
        """
        now = self._clock()
        if now < self._skip_until:
            self.fail_opens += 1
            return None
        slots = max(1, math.floor(paced_rate(rate)))
        spacing = 1.0 / slots
        window = math.floor(now)
        while True:
            # The first slot that will not have begun when DynamoDB's answer is back.
            first = max(0, math.ceil(round((now + self._latency - window) / spacing, 9)))
            if first >= slots:
                window, first = window + 1 + (first - slots) // slots, 0
                continue
            if window + first * spacing > deadline:
                raise _too_late(endpoint, rate, window + first * spacing - now)
            sent = self._clock()
            try:
                slot = self._reserve(endpoint, window, first, slots)
            except Exception as exc:
                self._fail_open(exc, now)
                return None
            now = self._clock()
            self._latency = min(max(0.0, now - sent), MAX_LEAD)
            if slot is not None:
                at = window + slot * spacing
                if now <= at + LATE:
                    return self._wait_for(endpoint, rate, at, deadline)
                # Logging in this late would crowd the next slots' logins: take a later slot.
                self.late_slots += 1
                window = max(window, math.floor(now))
                continue
            self.full_windows += 1
            window += 1
            self._pause_before(window, spacing, deadline)
            now = self._clock()

    def _pause_before(self, window: int, spacing: float, deadline: float) -> None:
        """Wait until a random instant shortly before ``window`` begins (the fleet's
        retries spread over :data:`LEAD` seconds instead of arriving together); when it
        has begun or is further ahead, pause for up to one slot."""
        now = self._clock()
        target = window - self._uniform(*LEAD)
        pause = target - now if now < target else self._uniform(0.0, spacing)
        pause = min(pause, deadline - now)
        if pause > 0:
            self._sleep(pause)

    def prepare(self) -> None:
        """Create the DynamoDB client now (it is otherwise created on the first login)."""
        self._dynamodb()

    def _wait_for(self, endpoint: str, rate: float, at: float, deadline: float) -> float:
        if at > deadline:  # another caller took the earlier slots meanwhile
            raise _too_late(endpoint, rate, at - self._clock())
        wait = at - self._clock()
        if wait > 0:
            self._sleep(wait)
        return at

    def _reserve(self, endpoint: str, window: int, first: int, slots: int) -> int | None:
        """The slot index taken in ``window``, or None when the window is full."""
        client = self._dynamodb()
        key = {"pk": {"S": f"{endpoint}#{window}"}}
        expires = {"N": str(window + TTL_SECONDS)}
        try:
            out = client.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression="SET #c = if_not_exists(#c, :first) + :one, #x = :exp",
                ConditionExpression="attribute_not_exists(#c) OR (#c >= :first AND #c < :slots)",
                ExpressionAttributeNames=_NAMES,
                ExpressionAttributeValues={
                    ":first": {"N": str(first)},
                    ":one": {"N": "1"},
                    ":slots": {"N": str(slots)},
                    ":exp": expires,
                },
                ReturnValues="UPDATED_NEW",
            )
            return int(out["Attributes"]["count"]["N"]) - 1
        except Exception as exc:
            if not _condition_failed(exc):
                raise
        if first == 0:
            return None
        try:  # the count may lag behind the slots already past: move it forward
            client.update_item(
                TableName=self.table,
                Key=key,
                UpdateExpression="SET #c = :next, #x = :exp",
                ConditionExpression="#c < :first",
                ExpressionAttributeNames=_NAMES,
                ExpressionAttributeValues={
                    ":first": {"N": str(first)},
                    ":next": {"N": str(first + 1)},
                    ":exp": expires,
                },
            )
            return first
        except Exception as exc:
            if not _condition_failed(exc):
                raise
        return None

    def _fail_open(self, exc: Exception, now: float) -> None:
        self.fail_opens += 1
        self._skip_until = now + self._cooldown
        reason = _error_code(exc) or type(exc).__name__
        self._warn_once(
            f"fleet:{self.table}",
            "iamdb: the fleet limiter's DynamoDB table %s is not usable (%s): new IAM logins "
            "are paced by this process alone for now (IAM policy needs dynamodb:UpdateItem on "
            "the table; AWS_ENDPOINT_URL_DYNAMODB, AWS_REGION)",
            self.table,
            reason,
        )
        logger.debug("fleet limiter failed open (%s); retrying DynamoDB later", reason)

    def _dynamodb(self) -> Any:
        if self._client is None:
            self._client = shared_client(self._environ, self._resolver)
        return self._client


def shared_client(environ: Mapping[str, str] | None, resolver: CredentialResolver) -> Any:
    """The process's DynamoDB client for this region, endpoint and credentials.

    Created once (importing boto3 costs a few hundred ms), with 1 s connect and read
    timeouts and a single attempt: a slow or absent DynamoDB must not delay a login.
    ``AWS_ENDPOINT_URL_DYNAMODB`` (e.g. a local DynamoDB) is honoured.
    """
    import os

    env = os.environ if environ is None else environ
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ""
    endpoint_url = env.get("AWS_ENDPOINT_URL_DYNAMODB") or None
    creds = resolver.resolve()
    key = (region, endpoint_url, creds.access_key, creds.fingerprint())
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            import boto3
            from botocore.config import Config

            session = boto3.session.Session(
                aws_access_key_id=creds.access_key,
                aws_secret_access_key=creds.secret_key,
                aws_session_token=creds.token,
                region_name=region or None,
            )
            client = session.client(
                "dynamodb",
                endpoint_url=endpoint_url,
                config=Config(
                    connect_timeout=1,
                    read_timeout=1,
                    retries={"total_max_attempts": 1, "mode": "standard"},
                ),
            )
            redact.install()  # botocore's DEBUG logs would show the session token
            _clients[key] = client
        return client


def _too_late(endpoint: str, rate: float, wait: float) -> ThrottleError:
    return ThrottleError(
        f"no fleet-wide permit for a new IAM login to {endpoint} before the deadline: the next "
        f"free slot is {wait:.2f} s away at {rate:g} logins/s for the whole fleet"
    )


def _error_code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def _condition_failed(exc: Exception) -> bool:
    return _error_code(exc) == "ConditionalCheckFailedException"
