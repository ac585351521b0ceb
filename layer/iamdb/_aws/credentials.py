"""AWS credentials as iamdb holds them: one immutable :class:`Credentials` whose repr hides the
secrets, the check every source's values pass (:func:`checked`), ``Expiration`` read.

Where they come from is :mod:`iamdb._aws.chain`'s (the environment, the container endpoint,
botocore's chain). Secrets never appear in a repr, a log line or an error message, nor in the
locals of a frame an error passes through (what crash reporters serialise): code that holds one
returns an outcome (:func:`checked`), and the raising happens where nothing secret is left.
"""

from __future__ import annotations

import hashlib

from iamdb.errors import ConfigError

TYPE_CHECKING = False  # typing itself costs ~10 ms of cold start; only the checker needs it
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Credentials", "as_credentials", "checked", "expiry_seconds"]


class Credentials:
    """One set of AWS credentials (attribute names as botocore's ``ReadOnlyCredentials``).

    Immutable. A plain class rather than a dataclass: ``dataclasses`` costs ~7 ms of
    import on the cold-start path that signing must keep cheap.
    """

    __slots__ = ("_fingerprint", "access_key", "secret_key", "token")
    access_key: str
    secret_key: str
    token: str | None
    _fingerprint: str | None

    def __init__(self, access_key: str, secret_key: str, token: str | None = None) -> None:
        object.__setattr__(self, "access_key", access_key)
        object.__setattr__(self, "secret_key", secret_key)
        object.__setattr__(self, "token", token)
        object.__setattr__(self, "_fingerprint", None)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Credentials are immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Credentials):
            return NotImplemented
        return (self.access_key, self.fingerprint()) == (other.access_key, other.fingerprint())

    def __hash__(self) -> int:
        return hash((self.access_key, self.fingerprint()))

    def __repr__(self) -> str:
        token = "None" if self.token is None else "<hidden>"
        return f"Credentials(access_key={self.access_key!r}, secret_key=<hidden>, token={token})"

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the secret key and session token.

        Tells "same access key, new secret or session token" apart without keeping or
        comparing the secrets themselves. Computed once per object.
        """
        found = self._fingerprint
        if found is None:
            # Length prefix and a marker keep (secret, token) pairs unambiguous (None != "").
            material = f"{len(self.secret_key)}:{self.secret_key}"
            if self.token is not None:
                material += "t" + self.token
            found = hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()
            object.__setattr__(self, "_fingerprint", found)
        return found


def expiry_seconds(text: str) -> float | None:
    """Epoch seconds of an ISO 8601 UTC instant as AWS writes ``Expiration``; None if malformed."""
    from datetime import datetime, timezone

    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        return None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=timezone.utc)
    return instant.timestamp()


def as_credentials(obj: object) -> Credentials:
    """Convert any object with ``access_key``/``secret_key``/``token`` attributes.

    Accepts botocore's ``Credentials`` and ``ReadOnlyCredentials`` and iamdb's own
    :class:`Credentials` (returned as is). A missing ``token`` attribute means no token.
    Values are the caller's to choose (the signer presigns any Unicode secret as botocore
    does); the sources iamdb reads itself are checked by :func:`checked`.
    """
    if isinstance(obj, Credentials):
        return obj
    access_key: Any = getattr(obj, "access_key", None)
    secret_key: Any = getattr(obj, "secret_key", None)
    token: Any = getattr(obj, "token", None)
    why = None
    if not (isinstance(access_key, str) and access_key):
        why = "access_key must be a non-empty string"
    elif not (isinstance(secret_key, str) and secret_key):
        why = "secret_key must be a non-empty string"
    elif token is not None and not isinstance(token, str):
        why = "token must be a string or None"
    if why is not None:
        del obj, access_key, secret_key, token  # the raise passes through this frame
        raise ConfigError("credentials", why)
    return Credentials(access_key, secret_key, token)


def checked(
    key: Any, secret: Any, token: Any, names: tuple[str, str, str]
) -> Credentials | ConfigError:
    """:class:`Credentials`, or a ConfigError naming the unusable one by ``names``.

    Each must be a non-empty string of printable ASCII, as every real AWS key id, secret key
    and session token is (base64 and ``/+=``); the token may also be None or empty (none).
    Anything else would reach the signer and the HTTP client, whose encoding errors keep the
    whole request head, session token included. Returns rather than raises: this frame
    holds the secrets, so no exception may pass through it; the message never has a value.
    """
    token = None if token == "" else token
    for i, value in enumerate((key, secret, token)):
        if i == 2 and value is None:
            continue
        if not (isinstance(value, str) and value.isascii() and value.isprintable() and value):
            missing = "missing or empty" + (f" while {names[0]} is set" if i else "")
            why = missing if value is None or value == "" else _UNPRINTABLE
            return ConfigError(names[i], why)
    return Credentials(key, secret, token)


_UNPRINTABLE = (
    "must be printable ASCII (AWS keys and tokens are base64 and '/+='): it is not a string, "
    "or has control or non-ASCII characters"
)
