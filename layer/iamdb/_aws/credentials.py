"""AWS credentials for signing: the environment, the container endpoint, botocore's chain last.

On Lambda the execution role's credentials are in ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY`` and ``AWS_SESSION_TOKEN``; reading them costs microseconds
and needs no import of botocore (about half a second of cold start). With SnapStart (and on
ECS) they come from the container credentials endpoint instead, which iamdb asks itself
(:mod:`iamdb._aws.container`). Only when neither is configured (a laptop with profiles or SSO,
an EC2 instance) is botocore's default credential chain imported and used.

Secrets never appear in a repr, a log line or an error message, nor in the locals of a frame
an error passes through (what crash reporters serialise): code that holds one returns an
outcome (:func:`checked`), and the raising happens where nothing secret is left.
"""

from __future__ import annotations

import _thread  # threading costs ~5 ms of import; its Lock is this one
import hashlib
import os

from iamdb.errors import ConfigError, CredentialsError

TYPE_CHECKING = False  # typing itself costs ~10 ms of cold start; only the checker needs it
if TYPE_CHECKING:
    from typing import Any

    from iamdb._core.runtime import Runtime

__all__ = [
    "CredentialResolver",
    "Credentials",
    "as_credentials",
    "default_resolver",
    "expiry_seconds",
]

_ENV_KEY = "AWS_ACCESS_KEY_ID"
_ENV_SECRET = "AWS_SECRET_ACCESS_KEY"
_ENV_TOKEN = "AWS_SESSION_TOKEN"

_WHERE = (
    f"looked in the environment ({_ENV_KEY}, {_ENV_SECRET}, {_ENV_TOKEN}, "
    "AWS_CONTAINER_CREDENTIALS_FULL_URI/_RELATIVE_URI) and in botocore's default chain "
    "(shared config/credentials files, SSO, instance metadata)"
)


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


class CredentialResolver:
    """The environment first, then the container endpoint, botocore's default chain last.

    The environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
    ``AWS_SESSION_TOKEN``) is read from the runtime's ``environ`` on every call: it is cheap
    and picks up rotated credentials. botocore is never imported on that path.

    Without ``AWS_ACCESS_KEY_ID``, a container credentials endpoint
    (``AWS_CONTAINER_CREDENTIALS_FULL_URI`` or ``_RELATIVE_URI``) is asked, and its answer
    cached until shortly before it expires (:mod:`iamdb._aws.container`). Only when neither is
    configured, botocore's default chain is used:
    imported lazily, its credentials object created once per resolver, and
    ``get_frozen_credentials()`` called on every :meth:`resolve` so that refreshable
    credentials (SSO, assumed roles, container/instance metadata) refresh. botocore reads
    the process environment (``os.environ``), not the runtime's.

    Thread-safe.
    """

    def __init__(self, runtime: Runtime | None = None) -> None:
        """``runtime``: where to read the variables (its ``environ``), and the clock, sleep
        and random source of container credential fetches; None: ``os.environ`` read live, and
        :data:`iamdb._core.runtime.PROCESS` imported only when the container endpoint is asked
        (not on signing's cold path)."""
        self._runtime = runtime
        self._lock = _thread.allocate_lock()
        self._botocore: Any = None
        self._container: Any = None
        self._last: Credentials | None = None

    def resolve(self, deadline: float | None = None) -> Credentials:
        """The current credentials; raises ConfigError or CredentialsError.

        ``deadline`` (clock seconds) bounds a fetch from the container endpoint, retries
        included, if one is due. No frame an error passes through here holds the environment
        or a secret: a crash reporter that serialises a traceback's locals finds none.
        """
        env = os.environ if self._runtime is None else self._runtime.environ
        key = env.get(_ENV_KEY)
        if key:
            secret, token = env.get(_ENV_SECRET), env.get(_ENV_TOKEN) or None
            del env
            last = self._last  # unchanged: the same object, its fingerprint computed once
            if (
                last is not None
                and last.access_key == key
                and last.secret_key == secret
                and last.token == token
            ):
                return last
            found = checked(key, secret, token, (_ENV_KEY, _ENV_SECRET, _ENV_TOKEN))
            if isinstance(found, ConfigError):
                del key, secret, token
                raise found
            self._last = found
            return found
        container = bool(
            (env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") or "").strip()
            or (env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") or "").strip()
        )
        del env  # it holds the container authorization token, or other secrets
        if container:
            return self._container_source().get(deadline)  # type: ignore[no-any-return]
        return self._from_botocore()

    def reset(self) -> None:
        """Forget cached credentials and sources (the next resolve starts afresh)."""
        with self._lock:
            self._botocore = None
            self._container = None
            self._last = None

    def _container_source(self) -> Any:
        with self._lock:
            if self._container is None:
                from iamdb._aws.container import ContainerCredentials

                runtime = self._runtime
                if runtime is None:
                    from iamdb._core.runtime import PROCESS

                    runtime = PROCESS
                self._container = ContainerCredentials(runtime)
            return self._container

    def _from_botocore(self) -> Credentials:
        source = self._botocore_credentials()
        why = None
        try:
            frozen = source.get_frozen_credentials()
        except Exception as exc:  # botocore raises many types; its messages hold no secrets
            why = f"botocore could not refresh credentials ({type(exc).__name__}: {str(exc)[:300]})"
        if why is not None:  # raised here, not in the except: no caught frame stays reachable
            raise CredentialsError(why)
        if not (frozen and frozen.access_key and frozen.secret_key):
            del frozen  # a key without its secret (or the reverse): still not for a traceback
            raise CredentialsError(f"no AWS credentials found: {_WHERE}")
        last = self._last  # unchanged: the same object, its fingerprint computed once
        if last is not None and (last.access_key, last.secret_key, last.token) == (
            frozen.access_key,
            frozen.secret_key,
            frozen.token or None,
        ):
            return last
        names = ("access_key", "secret_key", "token")
        found = checked(frozen.access_key, frozen.secret_key, frozen.token, names)
        if isinstance(found, ConfigError):
            del frozen
            raise CredentialsError(f"botocore's credential chain answered unusable ones ({found})")
        self._last = found
        return found

    def _botocore_credentials(self) -> Any:
        with self._lock:
            if self._botocore is not None:
                return self._botocore
            missing = False
            try:  # absent: a CredentialsError, not MissingDependencyError (no iamdb extra brings
                # botocore; on Lambda the environment or container endpoint has the credentials)
                import botocore.session
            except ImportError:
                missing = True
            if missing:
                raise CredentialsError(
                    f"no AWS credentials found: {_ENV_KEY} is not set and botocore is not "
                    "installed to look further"
                )
            why = None
            try:
                found = botocore.session.Session().get_credentials()
            except Exception as exc:
                why = f"no AWS credentials found ({type(exc).__name__}: {str(exc)[:300]}): {_WHERE}"
            if why is not None:
                raise CredentialsError(why)
            if found is None:
                raise CredentialsError(f"no AWS credentials found: {_WHERE}")
            from iamdb._aws import redact as _redact

            _redact.install()  # botocore's DEBUG logs of SSO or assume-role refreshes hold secrets
            self._botocore = found
            return found


default_resolver = CredentialResolver()
"""The process's resolver: live ``os.environ``, shared by iamdb's default registry and signer."""
