"""MONGODB-AWS verification for devstack's peer, as Atlas does it: ask STS who signed.

The client's ``saslContinue`` payload holds the ``Authorization`` header ``a``, the
``X-Amz-Date`` ``d`` (and the session token ``t``) of a SigV4-signed STS
``GetCallerIdentity`` request. The header must sign ``host``, ``x-amz-date``,
``x-mongodb-server-nonce`` and ``x-mongodb-gs2-cb-flag`` (and the session token); the request
is rebuilt with the peer's *own* nonce and forwarded to devstack's STS (moto, signature
checking on), so a client that signed anything else fails there. STS answers the caller's
ARN; ``arn:aws:sts::A:assumed-role/R/S`` maps to the ``$external`` user
``arn:aws:iam::A:role/R``.
"""

from __future__ import annotations

import base64
import calendar
import http.client
import re
import time
import urllib.parse
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

STS_BODY = "Action=GetCallerIdentity&Version=2011-06-15"
REQUIRED_SIGNED = ("host", "x-amz-date", "x-mongodb-gs2-cb-flag", "x-mongodb-server-nonce")
MAX_DATE_SKEW = 900  # STS refuses requests signed more than 15 minutes away
_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[A-Z0-9]{16,128})/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)"
    r"/(?P<service>[a-z0-9-]+)/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;-]+), ?"
    r"Signature=(?P<sig>[0-9a-f]{64})"
)
_ASSUMED = re.compile(r"arn:(?P<p>[\w-]+):sts::(?P<a>\d{12}):assumed-role/(?P<r>[\w+=,.@-]+)/.+")


@dataclass(frozen=True)
class Role:
    """A built-in role granted on a database, e.g. ``Role("readWrite", "app")``."""

    role: str
    db: str


@dataclass(frozen=True)
class AuthEvent:
    """One MONGODB-AWS login attempt as the peer saw it."""

    ok: bool
    reason: str
    access_key: str
    user: str  # the $external user it mapped to ("" when STS refused)
    at: float  # peer clock
    expires_at: float | None  # the credentials' Expiration, as STS issued it


class AuthFailed(Exception):
    """A login check failed: ``args`` are (reason, access key), both safe to log."""


def verify_caller(
    second: dict[str, Any], server_nonce: bytes, *, sts_endpoint: str, sts_host: str
) -> tuple[str, str]:
    """Check one ``saslContinue`` payload with STS; return ($external user, access key)."""
    auth, date, token = second.get("a"), second.get("d"), second.get("t")
    if not isinstance(auth, str) or not isinstance(date, str):
        raise AuthFailed("payload lacks a or d")
    match = _AUTH.fullmatch(auth)
    if match is None:
        raise AuthFailed("malformed Authorization header")
    key = match["key"]
    signed = match["signed"].split(";")
    missing = [h for h in REQUIRED_SIGNED if h not in signed]
    if token is not None and "x-amz-security-token" not in signed:
        missing.append("x-amz-security-token")
    if missing:
        raise AuthFailed(f"headers not signed: {','.join(missing)}", key)
    if match["service"] != "sts" or match["date"] != date[:8]:
        raise AuthFailed("credential scope is not sts or not of X-Amz-Date's day", key)
    try:
        signed_at = calendar.timegm(time.strptime(date, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        raise AuthFailed("malformed X-Amz-Date", key) from None
    if abs(time.time() - signed_at) > MAX_DATE_SKEW:  # STS's own check: wall clock
        raise AuthFailed("request signed too long ago or in the future", key)
    arn = _caller_arn(auth, date, token, server_nonce, key, sts_endpoint, sts_host)
    return external_user(arn), key


def _caller_arn(
    auth: str,
    date: str,
    token: Any,
    server_nonce: bytes,
    key: str,
    sts_endpoint: str,
    sts_host: str,
) -> str:
    """Forward the client-signed GetCallerIdentity (with our nonce) to STS."""
    url = urllib.parse.urlsplit(sts_endpoint)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80, timeout=10)
    headers = {
        "Host": sts_host,  # exactly what the client signed
        "Content-Type": "application/x-www-form-urlencoded",
        "Content-Length": str(len(STS_BODY)),
        "X-Amz-Date": date,
        "X-MongoDB-Server-Nonce": base64.b64encode(server_nonce).decode(),
        "X-MongoDB-GS2-CB-Flag": "n",
        "Authorization": auth,
    }
    if isinstance(token, str):
        headers["X-Amz-Security-Token"] = token
    try:
        conn.putrequest("POST", "/", skip_host=True, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders(STS_BODY.encode())
        response = conn.getresponse()
        text = response.read().decode("utf-8", "replace")
    except OSError as exc:
        raise AuthFailed(f"STS unreachable: {type(exc).__name__}", key) from None
    finally:
        conn.close()
    root = _xml(text)
    if response.status != 200:
        code = _find(root, "Code") or f"HTTP {response.status}"
        raise AuthFailed(f"STS refused: {code}", key)
    arn = _find(root, "Arn")
    if not arn:
        raise AuthFailed("STS answered without an Arn", key)
    return arn


def external_user(arn: str) -> str:
    """``arn:aws:sts::A:assumed-role/R/S`` -> ``arn:aws:iam::A:role/R``; others unchanged."""
    match = _ASSUMED.fullmatch(arn)
    if match:
        return f"arn:{match['p']}:iam::{match['a']}:role/{match['r']}"
    return arn


def _xml(text: str) -> ET.Element | None:
    try:
        return ET.fromstring(text)
    except ET.ParseError:
        return None


def _find(root: ET.Element | None, tag: str) -> str | None:
    if root is None:
        return None
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == tag:
            return (element.text or "").strip()
    return None
