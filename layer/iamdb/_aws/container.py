"""Credentials from the container credentials endpoint (Lambda SnapStart, ECS, EKS Pod Identity).

With SnapStart, Lambda sets no ``AWS_ACCESS_KEY_ID``: it sets
``AWS_CONTAINER_CREDENTIALS_FULL_URI`` and ``AWS_CONTAINER_AUTHORIZATION_TOKEN`` (or
``..._TOKEN_FILE``), and the function fetches its credentials over HTTP. iamdb does that
itself (botocore's import would be paid after every restore), caches them, and fetches again
shortly before their ``Expiration``. As botocore: plain HTTP only to loopback or the
documented link-local addresses (the token must not leave the host), a relative URI goes to
``169.254.170.2``, and a hiccup (5xx, 429, timeout, refused connection, answer cut short) is
tried again, up to 3 attempts with iamdb's backoff; every attempt and wait ends by the
caller's deadline. Stricter: credentials with a minute or less left are refused, and so is a
control or non-ASCII character in them or in the token.

Secrets: the functions that hold the token or a served answer return an outcome (a value or
a :class:`_Problem`) and never raise; :meth:`ContainerCredentials.get` raises, holding only
opaque holders. A crash reporter serialises the locals of every frame on a traceback.
"""

from __future__ import annotations

import ipaddress
import json
import threading
from typing import NamedTuple  # typing is loaded already: iamdb._aws.http uses it

from iamdb._aws.credentials import Credentials, checked, expiry_seconds
from iamdb._aws.http import HttpConnection, TransportError
from iamdb._aws.net import split_url
from iamdb._core.backoff import DecorrelatedJitter
from iamdb._core.env import read_regular_file
from iamdb._core.log import logger
from iamdb.errors import ConfigError, CredentialsError, IamDbError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from iamdb._aws.http import Response
    from iamdb._core.runtime import Runtime

FULL_URI = "AWS_CONTAINER_CREDENTIALS_FULL_URI"
RELATIVE_URI = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"
TOKEN = "AWS_CONTAINER_AUTHORIZATION_TOKEN"
TOKEN_FILE = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"
FETCH_SECONDS = 2.0  # each attempt, at most (botocore's timeout)
ATTEMPTS = 3  # botocore's
REFRESH_SECONDS = 300.0  # fetch again this long before expiry (or at half-life if sooner)
MIN_LEFT_SECONDS = 60.0  # credentials with this much left or less are never handed out
RETRY_SECONDS = 10.0  # after a failed refresh kept the cached credentials, ask again
_MAX_TOKEN_BYTES = 16 * 1024
_LINK_LOCAL = {"169.254.170.2", "169.254.170.23", "fd00:ec2::23"}
_FIELDS = ("AccessKeyId", "SecretAccessKey", "Token")


class _Issued(NamedTuple):
    """Served credentials, when they expire and when to fetch again (clock seconds)."""

    credentials: Credentials
    expires_at: float
    refresh_at: float


class _Problem(NamedTuple):
    """Why one attempt failed (never a secret), whether another may succeed, what to do."""

    why: str
    transient: bool
    advice: str = ""


class _Request:
    """Where a fetch goes and its headers, the authorization token among them (an opaque
    holder: the default repr shows nothing of it)."""

    __slots__ = ("headers", "host", "path", "port", "scheme", "where")

    def __init__(self, scheme: str, host: str, port: int, path: str, token: str | None) -> None:
        self.scheme, self.host, self.port, self.path = scheme, host, port, path
        named = host if ":" not in host else f"[{host}]"
        default = 443 if scheme == "https" else 80
        self.where = named if port == default else f"{named}:{port}"
        self.headers = {"host": self.where, "accept": "application/json"}
        if token is not None:
            self.headers["authorization"] = token


class ContainerCredentials:
    """Fetches and caches one endpoint's credentials, on ``runtime``'s environment, clock,
    sleep and random source. Thread-safe."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._lock = threading.Lock()
        self._issued: _Issued | None = None

    def get(self, deadline: float | None = None) -> Credentials:
        """The cached credentials, fetched first when missing or due for refresh.

        Returns or raises by ``deadline`` (clock seconds; None: in 6 s), waiting for another
        thread's fetch and every retry included. While the cached credentials have over a
        minute left, a refresh is one attempt, a failed one keeps them (logged), and a thread
        that finds another refreshing does not wait.
        """
        issued = self._issued
        now = self._runtime.clock()
        if issued is not None and now < issued.refresh_at:
            return issued.credentials
        keep = issued if issued is not None and issued.expires_at - now > MIN_LEFT_SECONDS else None
        until = now + ATTEMPTS * FETCH_SECONDS if deadline is None else deadline
        if keep is not None:
            if not self._lock.acquire(blocking=False):
                return keep.credentials  # another thread is refreshing them
        elif not self._lock.acquire(timeout=max(0.0, until - now)):
            raise CredentialsError(
                "container credentials: another thread's fetch was still running at the "
                f"deadline ({self._runtime.clock() - now:.1f} s waited): the endpoint is slow "
                "or unreachable; a later call tries again"
            )
        try:
            outcome = self._refresh(until, keep)
        finally:
            self._lock.release()
        if isinstance(outcome, IamDbError):
            raise outcome
        return outcome

    def _refresh(self, until: float, keep: _Issued | None) -> Credentials | IamDbError:
        """(Lock held.) Fetch, unless another thread just did; fall back on ``keep``."""
        issued = self._issued
        if issued is not None and self._runtime.clock() < issued.refresh_at:
            return issued.credentials
        outcome = self._fetch(until, ATTEMPTS if keep is None else 1)
        if isinstance(outcome, _Issued):
            self._issued = outcome
            return outcome.credentials
        now = self._runtime.clock()
        if keep is None or keep.expires_at - now <= MIN_LEFT_SECONDS:
            return outcome
        left = keep.expires_at - now
        logger.warning("iamdb: %s; the cached credentials (%.0f s left) are kept", outcome, left)
        retry_at = min(now + RETRY_SECONDS, keep.expires_at - MIN_LEFT_SECONDS)
        self._issued = _Issued(keep.credentials, keep.expires_at, retry_at)
        return keep.credentials

    def _fetch(self, until: float, attempts: int) -> _Issued | IamDbError:
        """Up to ``attempts`` attempts, by ``until``: transient failures are tried again.

        ConfigError raised when the endpoint's URI is not allowed; never holds the
        environment in a local (it holds the token).
        """
        rt = self._runtime
        started = rt.clock()
        target = _target(rt.environ.get(FULL_URI) or "", rt.environ.get(RELATIVE_URI) or "")
        request = _request(target, rt.environ)
        if isinstance(request, ConfigError):
            return request
        backoff = DecorrelatedJitter(0.1, 1.0, uniform=rt.uniform)
        connection = HttpConnection(
            request.scheme, request.host, request.port, clock=rt.clock, environ=rt.environ
        )
        tries, cut = 0, False
        try:
            while True:
                tries += 1
                attempt_until = min(until, rt.clock() + FETCH_SECONDS)
                outcome = _attempt(connection, request, attempt_until, rt.clock)
                if isinstance(outcome, _Issued) or not outcome.transient or tries >= attempts:
                    break
                delay = backoff.next_delay()
                if rt.clock() + delay >= until:
                    cut = True
                    break
                logger.info(
                    "iamdb: container credentials: %s; attempt %d in %.2f s",
                    outcome.why,
                    tries + 1,
                    delay,
                )
                rt.sleep(delay)
        finally:
            connection.close()
        if isinstance(outcome, _Issued):
            return outcome
        spent = rt.clock() - started
        counted = "1 attempt" if tries == 1 else f"{tries} attempts"
        advice = outcome.advice or (
            "the endpoint (Lambda's, or the ECS or EKS agent's) is unavailable or too slow; "
            "a later call tries again"
        )
        if cut:
            advice = f"the deadline left no time for another attempt; {advice}"
        return CredentialsError(
            f"container credentials: {outcome.why} ({counted} over {spent:.1f} s): {advice}"
        )


def _target(full: str, relative: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path?query) of the endpoint; ConfigError when not allowed."""
    relative = relative.strip()  # botocore: it wins over FULL_URI
    var, url = (RELATIVE_URI, f"http://169.254.170.2{relative}") if relative else (FULL_URI, full)
    if relative and not relative.startswith("/"):
        raise ConfigError(RELATIVE_URI, "expected a path starting with '/'")
    parts, host, port = split_url(var, url.strip())
    if parts.scheme == "http" and not _allowed_http_host(host):
        raise ConfigError(
            var,
            f"plain http is allowed only to loopback or {', '.join(sorted(_LINK_LOCAL))}, "
            f"got host {host!r:.80}",
        )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if not path.isprintable() or " " in path:  # it goes into the request line as it is
        raise ConfigError(var, "the path has spaces or control characters: percent-encode them")
    return parts.scheme, host, port, path


def _allowed_http_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or str(address) in _LINK_LOCAL


def _request(
    target: tuple[str, str, int, str], environ: Mapping[str, str]
) -> _Request | ConfigError:
    """The request to send, with the token from the variable or file; never raises.

    A token file is read at every fetch (EKS and ECS rotate it), at most 16 KiB, never a FIFO
    or a device, and stripped (a trailing newline is how files end). The token must fit one
    header line as iamdb's HTTP client sends one: printable ASCII. Errors never repeat it.
    """
    path = (environ.get(TOKEN_FILE) or "").strip()
    var = TOKEN_FILE if path else TOKEN
    token: str | None = None
    problem = None
    if path:
        data = read_regular_file(path, _MAX_TOKEN_BYTES)
        if isinstance(data, str):
            problem = data
        else:
            try:
                token = data.decode("utf-8")
            except UnicodeDecodeError:
                problem = f"{path!r:.200} is not UTF-8 text"
    else:
        token = environ.get(TOKEN)
    token = (token or "").strip() or None
    if token is not None and not (token.isascii() and token.isprintable()):
        problem = (
            "the authorization token has control or non-ASCII characters (it must fit one "
            "HTTP header line: printable ASCII, as Lambda's and ECS's tokens are)"
        )
    if problem is not None:
        return ConfigError(var, problem)
    return _Request(*target, token)


def _attempt(
    connection: HttpConnection, request: _Request, until: float, clock: Callable[[], float]
) -> _Issued | _Problem:
    """One GET and its answer, by ``until``; never raises (this frame holds the token and
    the answer): a failure is a :class:`_Problem`, the caught exception dropped."""
    try:
        answer = connection.request("GET", request.path, request.headers, b"", until)
    except TransportError as exc:
        why = str(exc)
    except ValueError:  # a status line or length the HTTP client could not read
        why = f"broken answer from {request.where}"
    else:
        return _read(answer, request, clock())
    return _Problem(why, transient=True)


def _read(answer: Response, request: _Request, now: float) -> _Issued | _Problem:
    """The served credentials, or what is wrong with the answer (never its content)."""
    try:
        data = json.loads(answer.body)
    except (ValueError, RecursionError):  # RecursionError: garbage nested past the stack
        data = None
    where, status = request.where, answer.status
    if status != 200:
        refused = status in (401, 403)
        return _Problem(
            f"{where} answered HTTP {status}{_said(data, request)}",
            transient=status >= 500 or status in (408, 429),
            advice="check AWS_CONTAINER_AUTHORIZATION_TOKEN (or _TOKEN_FILE)" if refused else "",
        )
    if not isinstance(data, dict):
        return _Problem(f"{where} answered HTTP 200 without a JSON object", transient=True)
    found = checked(
        data.get("AccessKeyId"), data.get("SecretAccessKey"), data.get("Token"), _FIELDS
    )
    if isinstance(found, ConfigError):
        why = f"{where} answered HTTP 200 with unusable credentials ({found})"
        return _Problem(why, transient=False, advice=_NOT_AN_ENDPOINT)
    expiration = data.get("Expiration")
    expires_at = expiry_seconds(expiration) if isinstance(expiration, str) else None
    if expires_at is None:
        why = f"{where} answered HTTP 200 without a readable Expiration (ISO 8601)"
        return _Problem(why, transient=False, advice=_NOT_AN_ENDPOINT)
    left = expires_at - now
    if left <= MIN_LEFT_SECONDS:
        return _Problem(
            f"{where} served credentials that "
            + (f"expired {-left:.0f} s ago" if left <= 0 else f"expire in {left:.0f} s"),
            transient=False,
            advice="iamdb hands out none with a minute or less left; is this host's clock right?",
        )
    refresh_at = expires_at - max(MIN_LEFT_SECONDS, min(REFRESH_SECONDS, left / 2))
    return _Issued(found, expires_at, refresh_at)


_NOT_AN_ENDPOINT = "is the URI in AWS_CONTAINER_CREDENTIALS_FULL_URI (or _RELATIVE_URI) right?"


def _said(data: object, request: _Request) -> str:
    """``: <message>`` of an error answer (200 printable characters, the token replaced), or
    nothing: nothing either when the answer holds credentials, which may be in the message."""
    if not isinstance(data, dict) or any(name in data for name in _FIELDS[1:]):
        return ""
    said, token = data.get("message") or data.get("Message"), request.headers.get("authorization")
    if not isinstance(said, str):
        return ""
    said = said.replace(token, "<token>") if token else said
    said = "".join(c if c.isprintable() else " " for c in said[:200]).strip()
    return f": {said}" if said else ""
