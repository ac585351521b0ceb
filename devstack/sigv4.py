"""The SigV4 query-presigned tokens RDS and Aurora DSQL accept, taken apart and re-signed.

:func:`parse` splits ``host[:port]/?query`` and checks what every kind of token shares (the
SigV4 parameters, algorithm, signed headers, credential scope, date and expiry);
:func:`signature_for` recomputes the signature of such a token for a secret key. What each
kind of server demands beyond that is :mod:`devstack.verifier`'s business. Independent of
iamdb and botocore on purpose: both are checked against it.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

ALGORITHM = "AWS4-HMAC-SHA256"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
SIGV4_PARAMS = (
    "Action",
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)
OPTIONAL_PARAMS = ("X-Amz-Security-Token",)


class Refused(Exception):
    """A check failed. ``reason`` is a short fixed code, ``detail`` is safe to log."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Token:
    """A parsed token; ``port`` is None when the signed host has none (DSQL)."""

    host: str
    port: int | None
    params: dict[str, str]
    access_key: str
    scope_date: str
    region: str
    service: str
    signed_at: float
    expires: int


def parse(token: str) -> Token:
    """Split ``host[:port]/?query`` and check the SigV4 parameters (any kind's token)."""
    hostport, sep, query = token.partition("/?")
    host, port = hostport, None
    if ":" in hostport and not hostport.endswith("]"):  # "[::1]" alone has no port
        host, _, port_text = hostport.rpartition(":")
        if not port_text.isdigit() or len(port_text) > 5:
            raise Refused("malformed", "expected host[:port]/?query")
        port = int(port_text)
    if not sep or not host:
        raise Refused("malformed", "expected host[:port]/?query")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise Refused("malformed", "bad query string") from None
    params = dict(pairs)
    if len(params) != len(pairs):
        raise Refused("malformed", "repeated parameter")
    missing = [k for k in SIGV4_PARAMS if not params.get(k)]
    if missing:
        raise Refused("malformed", f"missing {missing}")
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise Refused("malformed", "algorithm must be AWS4-HMAC-SHA256")
    if params["X-Amz-SignedHeaders"] != "host":
        raise Refused("malformed", "signed headers must be exactly 'host'")
    parts = params["X-Amz-Credential"].split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not parts[0]:
        raise Refused("malformed", "bad credential scope")
    try:
        signed_at = float(calendar.timegm(time.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ")))
        expires = int(params["X-Amz-Expires"])
    except ValueError:
        raise Refused("malformed", "bad X-Amz-Date or X-Amz-Expires") from None
    return Token(host, port, params, parts[0], parts[1], parts[2], parts[3], signed_at, expires)


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


def signature_for(secret_key: str, token: Token) -> str:
    """Recompute the SigV4 query signature of a ``GET /`` with only the ``host`` header."""
    query = "&".join(
        f"{k}={v}"
        for k, v in sorted(
            (_encode(k), _encode(v)) for k, v in token.params.items() if k != "X-Amz-Signature"
        )
    )
    # As SigV4 clients do: lower-case host, no port when it is HTTPS's default (or absent).
    host = token.host.lower()
    if token.port not in (None, 443):
        host = f"{host}:{token.port}"
    canonical = "\n".join(["GET", "/", query, f"host:{host}\n", "host", _EMPTY_SHA256])
    scope = f"{token.scope_date}/{token.region}/{token.service}/aws4_request"
    to_sign = "\n".join(
        [
            ALGORITHM,
            token.params["X-Amz-Date"],
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = f"AWS4{secret_key}".encode()
    for part in (token.scope_date, token.region, token.service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
