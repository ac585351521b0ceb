"""AssumeRole for iamdb: one STS client per process, clear errors, bounded jittered retries.

``get_mongo()`` logs in to MongoDB with the credentials of a dedicated role that the
function's execution role assumes. This module does that one call well:

- one boto3 STS client per process, created on first use (boto3 costs ~0.5 s of import,
  so never at ``import iamdb``), for the regional endpoint of ``AWS_REGION``; boto3 itself
  honours ``AWS_ENDPOINT_URL_STS`` (devstack, VPC endpoints);
- a ``RoleSessionName`` built from ``AWS_LAMBDA_FUNCTION_NAME`` and a short random suffix,
  so CloudTrail shows which function connected;
- ``AccessDenied`` becomes :class:`~iamdb.errors.AuthError` naming the role and pointing at
  its trust policy; throttling and 5xx answers are retried a few times with jittered
  backoff (botocore's own retries are off, so the total is bounded and known).

Secrets never leave this module in a message: errors name the role, the error code and the
request id only.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from iamdb import redact
from iamdb.credentials import Credentials
from iamdb.errors import AuthError, ConfigError, ConnectError, CredentialsError
from iamdb.log import logger

_SESSION_CHARS = re.compile(r"[^A-Za-z0-9_+=,.@-]")
MAX_SESSION_NAME = 64
# Error codes STS answers with when it is overloaded or throttling us: worth retrying.
_THROTTLING = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "PriorRequestNotComplete",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalError",
        "IDPCommunicationError",
    }
)
_DENIED = frozenset({"AccessDenied", "AccessDeniedException"})
_BAD_CREDENTIALS = frozenset(
    {"InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "UnrecognizedClientException"}
)


@dataclass(frozen=True)
class AssumedRole:
    """Credentials STS issued for a role session, and when they expire (epoch seconds)."""

    credentials: Credentials = field(repr=False)
    expires_at: float
    arn: str  # arn:aws:sts::A:assumed-role/R/S
    session_name: str

    def __repr__(self) -> str:
        return (
            f"AssumedRole(arn={self.arn!r}, access_key={self.credentials.access_key!r}, "
            f"expires_at={self.expires_at:.0f})"
        )


def session_name(function_name: str | None, suffix: str | None = None) -> str:
    """``<function>-<suffix>``: at most 64 characters of ``[A-Za-z0-9_+=,.@-]``.

    Characters STS refuses become ``-``; the function name is shortened so the suffix (8
    random hex digits unless given) always fits. Without a function name: ``iamdb-<suffix>``.
    """
    suffix = secrets.token_hex(4) if suffix is None else _SESSION_CHARS.sub("-", suffix)
    base = _SESSION_CHARS.sub("-", (function_name or "").strip()) or "iamdb"
    room = MAX_SESSION_NAME - len(suffix) - 1
    return f"{base[:room]}-{suffix}"[:MAX_SESSION_NAME]


def classify(code: str, status: int | None) -> str:
    """``"retry"`` (throttling, 5xx), ``"denied"``, ``"credentials"`` or ``"fatal"``."""
    if code in _THROTTLING or (status is not None and status >= 500):
        return "retry"
    if code in _DENIED:
        return "denied"
    if code in _BAD_CREDENTIALS:
        return "credentials"
    return "fatal"


def backoff(attempt: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): full jitter over 0.1 s * 2^attempt."""
    return rand() * min(2.0, 0.1 * (1 << attempt))


class StsClient:
    """The process's STS client (created lazily) and the AssumeRole call with retries."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        attempts: int = 4,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        client: Any = None,
    ) -> None:
        """``client``: a ready STS client (tests); by default boto3's, made on first use."""
        self._environ = environ
        self._attempts = attempts
        self._sleep = sleep
        self._rand = rand
        self._lock = threading.Lock()
        self._client: Any = client

    def assume_role(
        self,
        role_arn: str,
        *,
        duration_seconds: int,
        external_id: str | None = None,
        session_name_: str | None = None,
    ) -> AssumedRole:
        """AssumeRole with retries; raises AuthError, CredentialsError or ConnectError."""
        env = os.environ if self._environ is None else self._environ
        name = session_name_ or session_name(env.get("AWS_LAMBDA_FUNCTION_NAME"))
        kwargs: dict[str, Any] = {
            "RoleArn": role_arn,
            "RoleSessionName": name,
            "DurationSeconds": duration_seconds,
        }
        if external_id:
            kwargs["ExternalId"] = external_id
        client = self.client()
        for attempt in range(1, self._attempts + 1):
            try:
                got = client.assume_role(**kwargs)
            except Exception as exc:
                error = _describe(exc)
                if error.kind == "retry" and attempt < self._attempts:
                    wait = backoff(attempt, self._rand)
                    logger.info(
                        "sts: AssumeRole %s: %s, retry %d in %.2f s",
                        role_arn,
                        error.code,
                        attempt,
                        wait,
                    )
                    self._sleep(wait)
                    continue
                raise _as_error(role_arn, error, attempt) from None
            return _assumed(got, name)
        raise AssertionError("unreachable")  # pragma: no cover

    def client(self) -> Any:
        """The boto3 STS client, created on first use (regional endpoint of AWS_REGION)."""
        found = self._client
        if found is not None:
            return found
        with self._lock:
            if self._client is None:
                self._client = self._create()
            return self._client

    def reset(self) -> None:
        """Forget the client (the next call creates a new one)."""
        with self._lock:
            self._client = None

    def _create(self) -> Any:
        env = os.environ if self._environ is None else self._environ
        region = (env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "").strip()
        if not region:
            raise ConfigError("AWS_REGION", "not set: STS needs a region for its regional endpoint")
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise CredentialsError(
                "boto3 is needed to assume a role (the Lambda runtime has it; elsewhere "
                "install iamdb[mongo])"
            ) from None
        config = Config(
            connect_timeout=5,
            read_timeout=10,
            retries={"total_max_attempts": 1},  # iamdb retries itself, bounded and logged
            user_agent_extra="iamdb",
        )
        session = boto3.session.Session()
        # A regional endpoint: lower latency, and it keeps working when us-east-1 does not.
        # boto3 reads AWS_ENDPOINT_URL_STS by itself and prefers it when set.
        endpoint = env.get("AWS_ENDPOINT_URL_STS") or None
        client = session.client("sts", region_name=region, endpoint_url=endpoint, config=config)
        redact.install()  # botocore's DEBUG logs would show the role's secret key
        return client


@dataclass(frozen=True)
class _Failure:
    kind: str
    code: str
    status: int | None
    request_id: str


def _describe(exc: Exception) -> _Failure:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        code = str(response.get("Error", {}).get("Code", "Unknown"))
        meta = response.get("ResponseMetadata", {})
        status = meta.get("HTTPStatusCode")
        request_id = str(meta.get("RequestId", ""))
        return _Failure(classify(code, status), code, status, request_id)
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError", "NoAuthTokenError"):
        return _Failure("nocredentials", name, None, "")
    # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError...: network trouble.
    return _Failure("retry", name, None, "")


def _as_error(role_arn: str, error: _Failure, attempts: int) -> Exception:
    rid = f", request id {error.request_id}" if error.request_id else ""
    if error.kind == "denied":
        return AuthError(
            f"STS refused AssumeRole on {role_arn} ({error.code}{rid}): the role's trust "
            "policy must admit this function's execution role as principal (and match "
            "IAMDB_MONGO_EXTERNAL_ID if the policy has an sts:ExternalId condition), and "
            "the execution role's policy must allow sts:AssumeRole on that role"
        )
    if error.kind == "credentials":
        return CredentialsError(
            f"STS refused the function's own credentials while assuming {role_arn} "
            f"({error.code}{rid})"
        )
    if error.kind == "nocredentials":
        return CredentialsError(f"no AWS credentials to call STS AssumeRole on {role_arn}")
    if error.kind == "retry":
        return ConnectError(
            f"STS AssumeRole on {role_arn} failed {attempts} time(s), last with "
            f"{error.code}{rid}: STS is throttling, unavailable or unreachable"
        )
    return AuthError(f"STS AssumeRole on {role_arn} failed: {error.code}{rid}")


def _assumed(response: Mapping[str, Any], name: str) -> AssumedRole:
    creds = response["Credentials"]
    expiration = creds["Expiration"]
    if isinstance(expiration, dt.datetime):
        if expiration.tzinfo is None:
            expiration = expiration.replace(tzinfo=dt.timezone.utc)
        expires_at = expiration.timestamp()
    else:
        expires_at = float(expiration)
    return AssumedRole(
        Credentials(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]),
        expires_at,
        str(response.get("AssumedRoleUser", {}).get("Arn", "")),
        name,
    )


_default: StsClient | None = None
_default_lock = threading.Lock()


def default_sts() -> StsClient:
    """The process's :class:`StsClient` (reads ``os.environ``)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = StsClient()
    return _default
