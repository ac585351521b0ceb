"""AssumeRole for iamdb: one call done well, on iamdb's own AWS path (no boto3).

``get_mongo()`` logs in to MongoDB, and ``get_pg()``, ``get_mysql()`` and ``get_dsql()`` sign
their tokens, with the credentials of a role that the function's execution role assumes
(``<P>ROLE_ARN``: :mod:`iamdb._aws.roles`; the SQL side shares them through
:mod:`iamdb._aws.leases`):

- the call goes to the regional STS endpoint of ``AWS_REGION`` (``AWS_ENDPOINT_URL_STS``,
  FIPS, China and GovCloud as boto3 resolves them), signed with the current credentials of
  the execution role (rotated ones are picked up), through :class:`iamdb._aws.client.AwsClient`;
- a ``RoleSessionName`` built from ``AWS_LAMBDA_FUNCTION_NAME`` and a short random suffix,
  so CloudTrail shows which function connected;
- ``AccessDenied`` becomes :class:`~iamdb.errors.AuthError` naming the role and pointing at
  its trust policy; throttling, 5xx answers and network trouble are retried with jittered
  backoff, every attempt and wait inside the caller's deadline.

Secrets never leave this module in a message: errors name the role, the error code and the
request id only.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from iamdb._aws.client import AwsError, retryable, xml_text
from iamdb._aws.credentials import Credentials, expiry_seconds
from iamdb._core.backoff import DecorrelatedJitter
from iamdb._core.log import logger
from iamdb.errors import AuthError, ConnectError, CredentialsError, IamDbError, _detached

if TYPE_CHECKING:
    from iamdb._aws.client import AwsClient
    from iamdb._core.runtime import Runtime

_SESSION_CHARS = re.compile(r"[^A-Za-z0-9_+=,.@-]")
MAX_SESSION_NAME = 64
_DENIED = frozenset({"AccessDenied", "AccessDeniedException"})
_BAD_CREDENTIALS = frozenset(
    {"InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "UnrecognizedClientException"}
)


@dataclass(frozen=True)
class Lease:
    """Credentials for one login and when they stop working (epoch seconds; None: not known to
    expire): an assumed role's, or the execution role's own.

    Compared by value (:class:`~iamdb._aws.credentials.Credentials` compares key and fingerprint);
    the repr shows the access key id, never the secret or the session token.
    """

    credentials: Credentials
    expires_at: float | None
    principal: str  # who logs in: the assumed-role session ARN, or "the execution role"

    def left(self, now: float) -> float:
        """Seconds of validity left at ``now`` (infinite when not known to expire)."""
        return float("inf") if self.expires_at is None else self.expires_at - now

    def __repr__(self) -> str:
        expires = "None" if self.expires_at is None else f"{self.expires_at:.0f}"
        return (
            f"Lease(principal={self.principal!r}, "
            f"access_key={self.credentials.access_key!r}, expires_at={expires})"
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


def assume_role(
    aws: AwsClient,
    runtime: Runtime,
    role_arn: str,
    *,
    duration_seconds: int,
    external_id: str | None,
    deadline: float,
    external_id_setting: str = "<P>EXTERNAL_ID",
) -> Lease:
    """AssumeRole, retried while it may succeed and the deadline allows.

    Raises AuthError (refused), CredentialsError (the caller's own credentials refused or
    missing) or ConnectError (STS throttling, failing or unreachable until the deadline).
    ``external_id_setting`` names the variable a refusal's message points at.
    """
    name = session_name(runtime.environ.get("AWS_LAMBDA_FUNCTION_NAME"))
    params = {
        "Action": "AssumeRole",
        "RoleArn": role_arn,
        "RoleSessionName": name,
        "DurationSeconds": str(duration_seconds),
    }
    if external_id:
        params["ExternalId"] = external_id
    backoff = DecorrelatedJitter(uniform=runtime.uniform)
    attempt = 0
    while True:
        attempt += 1
        try:
            found = _assumed(aws.sts(params, deadline), role_arn)
        except (AwsError, ConnectError) as exc:
            failure: IamDbError = _detached(exc)  # its frames held the signed request
        else:
            if isinstance(found, Lease):
                return found
            failure = AwsError("sts", "MalformedResponse", found, status=200)
        if not retryable(failure):
            raise _as_error(role_arn, failure, attempt, external_id_setting)
        delay = backoff.next_delay()
        if runtime.clock() + delay >= deadline:
            raise _as_error(role_arn, failure, attempt, external_id_setting)
        logger.info(
            "sts: AssumeRole %s: %s, retry %d in %.2f s", role_arn, _code(failure), attempt, delay
        )
        runtime.sleep(delay)


def _code(exc: IamDbError) -> str:
    return exc.code if isinstance(exc, AwsError) else type(exc).__name__


def _as_error(role_arn: str, exc: IamDbError, attempts: int, external_id: str) -> IamDbError:
    code = _code(exc)
    rid = f", request id {exc.request_id}" if isinstance(exc, AwsError) and exc.request_id else ""
    if code in _DENIED:
        return AuthError(
            f"STS refused AssumeRole on {role_arn} ({code}{rid}): the role's trust "
            f"policy (in account {role_arn.split(':')[4]}) must admit this function's execution "
            f"role as principal (and match {external_id} if the policy has an sts:ExternalId "
            "condition), and the execution role's policy must allow sts:AssumeRole on that role"
        )
    if code == "MalformedResponse":
        return ConnectError(f"STS answered AssumeRole on {role_arn} with something unreadable{rid}")
    if code in _BAD_CREDENTIALS:
        return CredentialsError(
            f"STS refused the function's own credentials while assuming {role_arn} ({code}{rid})"
        )
    if retryable(exc):
        detail = f"{code} (HTTP {exc.status}){rid}" if isinstance(exc, AwsError) else str(exc)
        return ConnectError(
            f"STS AssumeRole on {role_arn} failed {attempts} time(s) before the deadline, last "
            f"with {detail}: STS is throttling, unavailable or unreachable"
        )
    return AuthError(f"STS AssumeRole on {role_arn} failed: {code}{rid}")


def _assumed(root: object, role_arn: str) -> Lease | str:
    """The Lease in an AssumeRole answer, or what is wrong with it. Returns rather than raises:
    this frame holds the secret key and session token."""
    from xml.etree.ElementTree import Element

    assert isinstance(root, Element)
    base = "AssumeRoleResult/Credentials/"
    key, secret = xml_text(root, base + "AccessKeyId"), xml_text(root, base + "SecretAccessKey")
    token, expiration = xml_text(root, base + "SessionToken"), xml_text(root, base + "Expiration")
    expires_at = expiry_seconds(expiration) if expiration else None
    if not (key and secret and token) or expires_at is None:
        return "AssumeRole answered without complete Credentials"
    if not all(part.isascii() and part.isprintable() for part in (key, secret, token)):
        return "AssumeRole answered credentials with characters AWS never uses"
    arn = xml_text(root, "AssumeRoleResult/AssumedRoleUser/Arn") or role_arn
    return Lease(Credentials(key, secret, token), expires_at, arn)
