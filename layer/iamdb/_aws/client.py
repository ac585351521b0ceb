"""The two AWS APIs iamdb calls, DynamoDB ``UpdateItem`` and STS ``AssumeRole``, without the SDK.

boto3 and botocore cost ~250 ms of cold start to import and create a client; iamdb needs two
calls. Every AWS call goes through :class:`AwsClient` and one path: resolve the endpoint as
boto3 does (:func:`resolve_endpoint`), sign with SigV4 (:func:`iamdb._aws.sigv4.sign_headers`),
send over the endpoint's one kept-alive connection (:mod:`iamdb._aws.http`, every wait bounded by
the caller's deadline), decode any answer that is not a success into :class:`AwsError`.
Retrying is the caller's decision (:func:`retryable` says what may be retried); the backoff
is :class:`iamdb._core.backoff.DecorrelatedJitter`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from iamdb._aws import sigv4 as _sigv4
from iamdb._aws.http import HttpConnection, Response, TransportError
from iamdb._aws.http_answer import http_date
from iamdb._aws.net import AwsEndpoint
from iamdb._aws.net import resolve_endpoint as resolve_endpoint  # where callers import it from
from iamdb.errors import IamDbError, _detached

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from iamdb._aws.chain import CredentialResolver
    from iamdb._core.runtime import Runtime

USER_AGENT = "iamdb/0.1"
_CODE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")
# Error codes that mean "slow down / try later": back-pressure, not a broken setup.
THROTTLING = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "TooManyRequestsException",
        "PriorRequestNotComplete",
        "LimitExceededException",
        "TransactionInProgressException",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "IDPCommunicationError",
    }
)


class AwsError(IamDbError):
    """An AWS API answered with an error (or with something that is not an answer).

    ``code`` is AWS's error code (``MalformedResponse`` when the answer could not be read),
    ``status`` the HTTP status, ``item`` the old item a failed DynamoDB condition returned
    (``ReturnValuesOnConditionCheckFailure=ALL_OLD``), ``server_time`` the answer's ``Date``
    (epoch seconds, whole; None when absent). Messages never hold secrets. What the answer
    said is kept bounded and on one line: ``code`` and ``request_id`` to at most 100 of
    ``[A-Za-z0-9._:-]``, the message to 300 printable characters.
    """

    def __init__(
        self,
        service: str,
        code: str,
        message: str,
        *,
        status: int | None = None,
        request_id: str = "",
        item: Mapping[str, Any] | None = None,
        server_time: float | None = None,
    ) -> None:
        code, request_id = _identifier(code) or f"HTTP{status}", _identifier(request_id)
        rid = f", request id {request_id}" if request_id else ""
        super().__init__(f"{service}: {code}: {_one_line(message, 300)} (HTTP {status}{rid})")
        self.service, self.code, self.status = service, code, status
        self.request_id, self.item, self.server_time = request_id, item, server_time


def _identifier(text: str) -> str:
    return "".join([c for c in text[:200] if c in _CODE_CHARS])[:100]


def _one_line(text: str, limit: int) -> str:
    """``text`` (from a remote answer) on one line of at most ``limit`` characters: control
    and other unprintable characters and runs of blanks become one space."""
    shown = "".join([c if c.isprintable() else " " for c in text[: limit * 2]])
    return " ".join(shown.split())[:limit]


class DynamoAnswer(dict[str, Any]):
    """A DynamoDB success answer (the decoded JSON) and its ``Date``: ``server_time``, epoch
    seconds (whole), None when absent. The fleet limiter compares it with its own clock."""

    server_time: float | None = None


def retryable(exc: IamDbError) -> bool:
    """Whether a failed call may succeed if tried again later (throttling, 5xx, network)."""
    if isinstance(exc, TransportError):
        return True
    if isinstance(exc, AwsError):
        return exc.code in THROTTLING or (exc.status is not None and exc.status >= 500)
    return False


class AwsClient:
    """Signed calls to DynamoDB and STS; one kept-alive connection per endpoint. Thread-safe."""

    def __init__(self, runtime: Runtime, resolver: CredentialResolver) -> None:
        self._rt = runtime
        self._resolver = resolver
        self._lock = threading.Lock()
        self._connections: dict[AwsEndpoint, HttpConnection] = {}

    def dynamodb(self, operation: str, payload: Mapping[str, Any], deadline: float) -> DynamoAnswer:
        """One DynamoDB JSON 1.0 call (``UpdateItem``...): the decoded answer, or AwsError."""
        endpoint, connection, body = self._dynamodb_call(payload)
        # Neither the signed headers nor the answer is kept in a local: this frame is in
        # the traceback of what is raised, and a crash reporter serialises its locals.
        outcome = _json_answer(
            connection.request(
                "POST", "/", self._signed(endpoint, operation, body, deadline), body, deadline
            )
        )
        if isinstance(outcome, AwsError):
            raise outcome
        return outcome

    def dynamodb_send(self, operation: str, payload: Mapping[str, Any], deadline: float) -> None:
        """Send a DynamoDB call without waiting for its answer (best effort, off the login)."""
        endpoint, connection, body = self._dynamodb_call(payload)
        connection.send(
            "POST", "/", self._signed(endpoint, operation, body, deadline), body, deadline
        )

    def warm(self, service: str, deadline: float) -> None:
        """Open ``service``'s connection now if it is not open (TCP and TLS before the clock
        is read for a request whose timing matters)."""
        self._connection(resolve_endpoint(service, self._rt.environ)).open(deadline)

    def sts(self, params: Mapping[str, str], deadline: float) -> Element:
        """One STS Query call (``Action=...``): the answer's XML root, or AwsError."""
        endpoint = resolve_endpoint("sts", self._rt.environ)
        form = {"Action": params["Action"], "Version": "2011-06-15"}
        form.update((k, v) for k, v in params.items() if k != "Action")
        body = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in form.items())
        data = body.encode()
        # As in dynamodb(): AssumeRole's answer holds the role's secret key.
        outcome = _xml_answer(
            self._connection(endpoint).request(
                "POST", "/", self._signed(endpoint, None, data, deadline), data, deadline
            )
        )
        if isinstance(outcome, AwsError):
            raise outcome
        return outcome

    def close(self) -> None:
        """Close every connection (the next call opens a new one)."""
        with self._lock:
            connections, self._connections = self._connections, {}
        for connection in connections.values():
            connection.close()

    def _dynamodb_call(
        self, payload: Mapping[str, Any]
    ) -> tuple[AwsEndpoint, HttpConnection, bytes]:
        endpoint = resolve_endpoint("dynamodb", self._rt.environ)
        body = json.dumps(payload, separators=(",", ":")).encode()
        return endpoint, self._connection(endpoint), body

    def _signed(
        self, endpoint: AwsEndpoint, target: str | None, body: bytes, deadline: float
    ) -> dict[str, str]:
        """The headers of a request to ``endpoint``, signed with the current credentials
        (fetched by ``deadline`` when they come from the container endpoint); DynamoDB's
        operation is ``target``, STS's (None) is in the body.

        A failure (no credentials, unsignable ones) is raised detached: the resolver's and
        the signer's frames hold tokens and the string that was signed.
        """
        if target is None:
            service, content_type = "sts", "application/x-www-form-urlencoded; charset=utf-8"
        else:
            service, content_type = "dynamodb", "application/x-amz-json-1.0"
        headers = {"host": endpoint.host_header, "content-type": content_type}
        if target is not None:
            headers["x-amz-target"] = f"DynamoDB_20120810.{target}"
        try:
            added = _sigv4.sign_headers(
                "POST",
                headers,
                body,
                service=service,
                region=endpoint.region,
                credentials=self._resolver.resolve(deadline),  # rotated ones are picked up
            )
        except IamDbError as exc:
            failure = _detached(exc)
        else:
            return {**headers, **added, "user-agent": USER_AGENT}
        raise failure

    def _connection(self, endpoint: AwsEndpoint) -> HttpConnection:
        with self._lock:
            found = self._connections.get(endpoint)
            if found is None:
                found = HttpConnection(
                    endpoint.scheme,
                    endpoint.host.strip("[]"),
                    endpoint.port,
                    clock=self._rt.clock,
                    environ=self._rt.environ,
                )
                self._connections[endpoint] = found
            return found


def _json_answer(answer: Response) -> DynamoAnswer | AwsError:
    """A DynamoDB answer decoded: the success, or the AwsError to raise (never raises)."""
    rid = answer.headers.get("x-amzn-requestid", "")
    server_time = http_date(answer.headers.get("date", ""))
    try:
        data = json.loads(answer.body) if answer.body else {}
    except (ValueError, RecursionError):  # RecursionError: garbage nested past the stack
        data = None
    if not isinstance(data, dict):
        return AwsError(
            "dynamodb",
            "MalformedResponse",
            "not a JSON object",
            status=answer.status,
            request_id=rid,
            server_time=server_time,
        )
    if answer.status == 200:
        found = DynamoAnswer(data)
        found.server_time = server_time
        return found
    kind, message = data.get("__type"), data.get("message", data.get("Message"))
    item = data.get("Item")
    return AwsError(
        "dynamodb",
        (kind.rpartition("#")[2] if isinstance(kind, str) else "") or f"HTTP{answer.status}",
        message if isinstance(message, str) else "",
        status=answer.status,
        request_id=rid,
        item=item if isinstance(item, dict) else None,
        server_time=server_time,
    )


def _xml_answer(answer: Response) -> Element | AwsError:
    """An STS answer parsed: the success's root, or the AwsError to raise (never raises).

    The body is decoded as UTF-8 (what STS sends) and parsed as text, so an encoding the
    XML declares (``shift_jis``, ``utf-32``, an unknown name) is never looked up.
    """
    from xml.etree import ElementTree

    server_time = http_date(answer.headers.get("date", ""))
    try:
        root = ElementTree.fromstring(answer.body.decode("utf-8-sig"))
    except (ValueError, SyntaxError):  # UnicodeDecodeError; ParseError is a SyntaxError
        root = None
    if root is None:
        return AwsError(
            "sts", "MalformedResponse", "not XML", status=answer.status, server_time=server_time
        )
    rid = answer.headers.get("x-amzn-requestid") or xml_text(root, ".//RequestId") or ""
    if answer.status == 200:
        return root
    error = root.find(".//{*}Error")  # ErrorResponse/Error, or ErrorResponse/Errors/Error
    code = (xml_text(error, "Code") if error is not None else None) or f"HTTP{answer.status}"
    message = (xml_text(error, "Message") if error is not None else None) or ""
    return AwsError(
        "sts", code, message, status=answer.status, request_id=rid, server_time=server_time
    )


def xml_text(root: Element, path: str) -> str | None:
    """The text at ``path`` (``/``-separated tag names, in any or no namespace) below ``root``."""
    found = root.find(
        "/".join(tag if tag in ("", ".") else f"{{*}}{tag}" for tag in path.split("/"))
    )
    return None if found is None or found.text is None else found.text.strip()
