"""SigV4, the steps every signature of iamdb's shares, with the standard library only.

Two signers build on them: :mod:`iamdb._aws.signer` presigns RDS and DSQL auth tokens (a query
string), :func:`sign_headers` signs the DynamoDB and STS requests of :mod:`iamdb._aws.client`
and the STS request of MONGODB-AWS (headers). Both equal botocore's output byte for byte. The
derived signing key is cached per (secret key, date, region, service); query values are
percent-encoded as UTF-8 with only ``-_.~`` and alphanumerics left alone.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timezone

from iamdb._aws import credentials as _credentials
from iamdb.errors import ConfigError

# Query values are UTF-8 with every byte outside RFC 3986's unreserved set escaped as %XX
# (upper case), as botocore's percent_encode does. Own code: urllib.parse costs ~8 ms to import.
ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
UNRESERVED = ALNUM + "-_.~"
_ESCAPED = tuple(chr(b) if chr(b) in UNRESERVED else f"%{b:02X}" for b in range(256))
_KEY_CACHE_MAX = 32
_signing_keys: dict[tuple[str, str, str, str], bytes] = {}


def sign_headers(
    method: str,
    headers: dict[str, str],
    body: bytes,
    *,
    service: str,
    region: str,
    credentials: _credentials.Credentials,
    now: datetime | None = None,
) -> dict[str, str]:
    """SigV4-sign a request to ``/`` without query string (the JSON and Query protocols).

    ``headers`` maps lower-case names to the values the request sends, ``host`` included;
    every one of them is signed. Returns the headers to add to the request:
    ``x-amz-date``, ``x-amz-security-token`` (when the credentials carry one) and
    ``authorization``, equal to what botocore's ``SigV4Auth`` computes for the same request
    and instant.
    """
    stamp = timestamp(now)
    if not encodable(credentials):  # checked before any local holds a secret
        raise ConfigError("credentials", "keys and token must be encodable as UTF-8")
    added = {"x-amz-date": stamp}
    if credentials.token is not None:
        added["x-amz-security-token"] = credentials.token
    signed = {**headers, **added}
    names = sorted(signed)
    canonical_headers = "".join(f"{n}:{' '.join(signed[n].split())}\n" for n in names)
    signed_names = ";".join(names)
    canonical_request = (
        f"{method}\n/\n\n{canonical_headers}\n{signed_names}\n{hashlib.sha256(body).hexdigest()}"
    )
    signed_with = signature(canonical_request, credentials.secret_key, stamp, region, service)
    added["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope(stamp, region, service)}, "
        f"SignedHeaders={signed_names}, Signature={signed_with}"
    )
    return added


def encodable(credentials: _credentials.Credentials) -> bool:
    """Whether the credentials' strings encode as UTF-8 (no lone surrogates), as signing needs."""
    try:
        for part in (credentials.access_key, credentials.secret_key, credentials.token or ""):
            part.encode()
    except UnicodeEncodeError:  # its .object is the secret: dropped with this frame
        return False
    return True


def scope(stamp: str, region: str, service: str) -> str:
    """The credential scope of a signature made at ``stamp`` (:func:`timestamp`)."""
    return f"{stamp[:8]}/{region}/{service}/aws4_request"


def signature(
    canonical_request: str, secret_key: str, stamp: str, region: str, service: str
) -> str:
    """The hex SigV4 signature of ``canonical_request``: the string to sign (algorithm,
    instant, scope, the request's SHA-256), signed with the derived key. Both signers' last
    step; UnicodeEncodeError when the request or key holds lone surrogates."""
    digest = hashlib.sha256(canonical_request.encode()).hexdigest()
    string_to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope(stamp, region, service)}\n{digest}"
    key = signing_key(secret_key, stamp[:8], region, service)
    return hmac.digest(key, string_to_sign.encode(), "sha256").hex()


def percent_encode(text: str) -> str:
    """UTF-8 percent-encoding of everything but ``A-Z a-z 0-9 - _ . ~`` (upper-case hex)."""
    if not text.strip(UNRESERVED):
        return text
    return "".join([_ESCAPED[b] for b in text.encode()])


def is_region(region: object) -> bool:
    """A DNS label (letters, digits, inner hyphens), as botocore validates region names."""
    return (
        isinstance(region, str)
        and 0 < len(region) <= 63
        and not region.strip(ALNUM + "-")
        and not region.startswith("-")
        and not region.endswith("-")
    )


def timestamp(now: datetime | None) -> str:
    """The SigV4 timestamp ``YYYYMMDDTHHMMSSZ`` of ``now`` (UTC); None means the present."""
    if now is None:
        now = datetime.now(timezone.utc)
    elif not isinstance(now, datetime) or now.utcoffset() is None:
        raise ConfigError("now", "must be a timezone-aware datetime")
    else:
        now = now.astimezone(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ")


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """The derived SigV4 key for one day, region and service, cached (bounded)."""
    cache_key = (secret_key, date, region, service)
    key = _signing_keys.get(cache_key)
    if key is None:
        key = _hmac(f"AWS4{secret_key}".encode(), date)
        for part in (region, service, "aws4_request"):
            key = _hmac(key, part)
        if len(_signing_keys) >= _KEY_CACHE_MAX:
            _signing_keys.clear()  # rare (rotation, many regions): simplest safe bound
        _signing_keys[cache_key] = key
    return key


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.digest(key, msg.encode(), "sha256")
