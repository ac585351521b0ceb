"""The two AWS APIs iamdb calls, DynamoDB ``UpdateItem`` and STS ``AssumeRole``, without the SDK.

boto3 and botocore cost ~250 ms of cold start to import and create a client; iamdb needs two
calls. Every AWS call goes through :class:`AwsClient` and one path: resolve the endpoint as
boto3 does (:func:`resolve_endpoint`), sign with SigV4 (:func:`iamdb._sigv4.sign_headers`),
send over the endpoint's one kept-alive connection (:mod:`iamdb._http`, every wait bounded by
the caller's deadline), decode any answer that is not a success into :class:`AwsError`.
Retrying is the caller's decision (:func:`retryable` says what may be retried); the backoff
is :class:`iamdb._retry.DecorrelatedJitter`.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

from iamdb import _sigv4
from iamdb._env import aws_region
from iamdb._http import HttpConnection, Response, TransportError
from iamdb._net import split_url
from iamdb.errors import ConfigError, IamDbError

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from iamdb._credentials import CredentialResolver
    from iamdb._runtime import Runtime

USER_AGENT = "iamdb/0.1"
# (region pattern, DNS suffix) by partition, as botocore's partitions.json; the rest is "aws".
_PARTITIONS = (
    (re.compile(r"cn-\w+-\d+", re.ASCII), "amazonaws.com.cn"),
    (re.compile(r"eusc-de-\w+-\d+", re.ASCII), "amazonaws.eu"),
    (re.compile(r"us-iso-\w+-\d+", re.ASCII), "c2s.ic.gov"),
    (re.compile(r"us-isob-\w+-\d+", re.ASCII), "sc2s.sgov.gov"),
    (re.compile(r"eu-isoe-\w+-\d+", re.ASCII), "cloud.adc-e.uk"),
    (re.compile(r"us-isof-\w+-\d+", re.ASCII), "csp.hci.ic.gov"),
)
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
    (epoch seconds, whole; None when absent). Messages never hold secrets.
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
        rid = f", request id {request_id}" if request_id else ""
        super().__init__(f"{service}: {code}: {message[:300]} (HTTP {status}{rid})")
        self.service, self.code, self.status = service, code, status
        self.request_id, self.item, self.server_time = request_id, item, server_time


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


class AwsEndpoint(NamedTuple):
    """Where one service's calls go, and the region they are signed for."""

    scheme: str
    host: str
    port: int
    region: str

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


def resolve_endpoint(service: str, environ: Mapping[str, str]) -> AwsEndpoint:
    """The endpoint boto3 would use for ``service`` (``dynamodb`` or ``sts``), validated.

    ``AWS_ENDPOINT_URL_<SERVICE>``, then ``AWS_ENDPOINT_URL`` (unless
    ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`` is true); otherwise the regional endpoint of the
    region's partition, ``<service>-fips`` with ``AWS_USE_FIPS_ENDPOINT`` (STS in GovCloud is
    FIPS already). Raises ConfigError naming the variable, before any call.
    """
    region = aws_region(environ)
    if not _flag(environ, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
        for var in (f"AWS_ENDPOINT_URL_{service.upper()}", "AWS_ENDPOINT_URL"):
            url = (environ.get(var) or "").strip()
            if url:
                return _parse_endpoint_url(var, url, region)
    suffix = next((s for p, s in _PARTITIONS if p.fullmatch(region)), "amazonaws.com")
    fips = _flag(environ, "AWS_USE_FIPS_ENDPOINT")
    if fips and not (service == "sts" and region.startswith("us-gov-")):
        service = f"{service}-fips"
    return AwsEndpoint("https", f"{service}.{region}.{suffix}", 443, region)


def _flag(environ: Mapping[str, str], var: str) -> bool:
    """A boolean setting read as botocore's ``ensure_boolean`` does: only ``true`` (any case)."""
    return (environ.get(var) or "").lower() == "true"


def _parse_endpoint_url(var: str, url: str, region: str) -> AwsEndpoint:
    parts, host, port = split_url(var, url)
    if (
        parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.port == 0
        or host.strip("abcdefghijklmnopqrstuvwxyz0123456789.-:") != ""
    ):
        shown = f"{parts.scheme}://{host}"  # neither userinfo nor the rest is repeated
        raise ConfigError(var, f"expected http(s)://host[:port] (no path), got {shown!r:.120}")
    if ":" in host:
        host = f"[{host}]"
    return AwsEndpoint(parts.scheme, host, port, region)


class AwsClient:
    """Signed calls to DynamoDB and STS; one kept-alive connection per endpoint. Thread-safe."""

    def __init__(self, runtime: Runtime, resolver: CredentialResolver) -> None:
        self._rt = runtime
        self._resolver = resolver
        self._lock = threading.Lock()
        self._connections: dict[AwsEndpoint, HttpConnection] = {}

    def dynamodb(self, operation: str, payload: Mapping[str, Any], deadline: float) -> DynamoAnswer:
        """One DynamoDB JSON 1.0 call (``UpdateItem``...): the decoded answer, or AwsError."""
        endpoint, headers, body = self._dynamodb_request(operation, payload, deadline)
        answer = self._connection(endpoint).request("POST", "/", headers, body, deadline)
        return _json_answer(answer)

    def dynamodb_send(self, operation: str, payload: Mapping[str, Any], deadline: float) -> None:
        """Send a DynamoDB call without waiting for its answer (best effort, off the login)."""
        endpoint, headers, body = self._dynamodb_request(operation, payload, deadline)
        self._connection(endpoint).send("POST", "/", headers, body, deadline)

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
        headers = {
            "host": endpoint.host_header,
            "content-type": "application/x-www-form-urlencoded; charset=utf-8",
        }
        signed = self._signed(endpoint, "sts", headers, body.encode())
        answer = self._connection(endpoint).request("POST", "/", signed, body.encode(), deadline)
        return _xml_answer(answer)

    def close(self) -> None:
        """Close every connection (the next call opens a new one)."""
        with self._lock:
            connections, self._connections = self._connections, {}
        for connection in connections.values():
            connection.close()

    def _dynamodb_request(
        self, operation: str, payload: Mapping[str, Any], deadline: float
    ) -> tuple[AwsEndpoint, dict[str, str], bytes]:
        endpoint = resolve_endpoint("dynamodb", self._rt.environ)
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "host": endpoint.host_header,
            "content-type": "application/x-amz-json-1.0",
            "x-amz-target": f"DynamoDB_20120810.{operation}",
        }
        return endpoint, self._signed(endpoint, "dynamodb", headers, body), body

    def _signed(
        self, endpoint: AwsEndpoint, service: str, headers: dict[str, str], body: bytes
    ) -> dict[str, str]:
        credentials = self._resolver.resolve()  # every call: rotated credentials are picked up
        added = _sigv4.sign_headers(
            "POST", headers, body, service=service, region=endpoint.region, credentials=credentials
        )
        return {**headers, **added, "user-agent": USER_AGENT}

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


def _json_answer(answer: Response) -> DynamoAnswer:
    rid = answer.headers.get("x-amzn-requestid", "")
    server_time = http_date(answer.headers.get("date", ""))
    try:
        data = json.loads(answer.body) if answer.body else {}
    except (ValueError, RecursionError):  # RecursionError: garbage nested past the stack
        data = None
    if not isinstance(data, dict):
        status = answer.status
        raise AwsError(
            "dynamodb",
            "MalformedResponse",
            "not JSON",
            status=status,
            request_id=rid,
            server_time=server_time,
        )
    if answer.status == 200:
        found = DynamoAnswer(data)
        found.server_time = server_time
        return found
    code = str(data.get("__type", "")).rpartition("#")[2] or f"HTTP{answer.status}"
    message = str(data.get("message") or data.get("Message") or "")
    item = data.get("Item")
    raise AwsError(
        "dynamodb",
        code,
        message,
        status=answer.status,
        request_id=rid,
        item=item if isinstance(item, dict) else None,
        server_time=server_time,
    )


def _xml_answer(answer: Response) -> Element:
    from xml.etree import ElementTree

    try:
        root = ElementTree.fromstring(answer.body)
    except ElementTree.ParseError:
        raise AwsError("sts", "MalformedResponse", "not XML", status=answer.status) from None
    rid = answer.headers.get("x-amzn-requestid") or xml_text(root, ".//RequestId") or ""
    if answer.status == 200:
        return root
    error = root.find(".//{*}Error")  # ErrorResponse/Error, or ErrorResponse/Errors/Error
    code = (xml_text(error, "Code") if error is not None else None) or f"HTTP{answer.status}"
    message = (xml_text(error, "Message") if error is not None else None) or ""
    raise AwsError("sts", code, message, status=answer.status, request_id=rid)


def xml_text(root: Element, path: str) -> str | None:
    """The text at ``path`` (``/``-separated tag names, in any or no namespace) below ``root``."""
    found = root.find(
        "/".join(tag if tag in ("", ".") else f"{{*}}{tag}" for tag in path.split("/"))
    )
    return None if found is None or found.text is None else found.text.strip()


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(text: str) -> float | None:
    """Epoch seconds of an HTTP ``Date`` (IMF-fixdate, ``Sun, 06 Nov 1994 08:49:37 GMT``, as
    AWS sends it); None when absent or another form. Own parser: ``email.utils`` costs ms."""
    from datetime import datetime, timezone

    parts = text.split()
    if len(parts) != 6 or parts[5] != "GMT" or parts[2] not in _MONTHS:
        return None
    day, year, clock = parts[1], parts[3], parts[4].split(":")
    numbers = [day, year, *clock]
    if len(clock) != 3 or not all(n.isascii() and n.isdigit() for n in numbers):
        return None
    try:
        instant = datetime(
            int(year),
            _MONTHS.index(parts[2]) + 1,
            int(day),
            int(clock[0]),
            int(clock[1]),
            int(clock[2]),
            tzinfo=timezone.utc,
        )
    except ValueError:
        return None
    return instant.timestamp()
