"""Where AWS credentials come from: an ordered list of providers, asked in turn, as botocore's
credential chain is (``botocore/credentials.py``).

1. the environment (:class:`Environment`): on Lambda the execution role's credentials are in
   ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and ``AWS_SESSION_TOKEN``; read on every
   call (microseconds, and rotated keys are picked up), with no import of botocore;
2. the container credentials endpoint (:class:`Container`): with SnapStart (and on ECS) Lambda
   sets no keys but ``AWS_CONTAINER_CREDENTIALS_FULL_URI``; iamdb asks it itself
   (:mod:`iamdb._aws.container`), caching until shortly before expiry;
3. botocore's default chain (:class:`Botocore`), only when neither is configured (a laptop with
   profiles or SSO, an EC2 instance): imported on first use, its ``get_frozen_credentials()``
   called on every resolve so that refreshable credentials refresh.

No frame an error passes through holds the environment or a secret: providers read the
environment themselves and let go of it before anything can raise.
"""

from __future__ import annotations

import _thread  # threading costs ~5 ms of import; its Lock is this one
import os

from iamdb._aws.credentials import Credentials, checked
from iamdb.errors import ConfigError, CredentialsError

TYPE_CHECKING = False  # typing itself costs ~10 ms of cold start; only the checker needs it
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from iamdb._core.runtime import Runtime

__all__ = ["CredentialResolver", "default_resolver"]

_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_CONTAINER = ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
_WHERE = (
    f"looked in the environment ({', '.join(_ENV)}, AWS_CONTAINER_CREDENTIALS_FULL_URI/"
    "_RELATIVE_URI) and in botocore's default chain (shared config/credentials files, SSO, "
    "instance metadata)"
)


class Environment:
    """``AWS_ACCESS_KEY_ID`` and its secret (and session token), when the key id is set."""

    def __init__(self, environ: Callable[[], Mapping[str, str]]) -> None:
        self._environ = environ
        self._last: Credentials | None = None  # returned while unchanged: one fingerprint

    def load(self, deadline: float | None) -> Credentials | None:
        env = self._environ()
        key = env.get(_ENV[0])
        if not key:
            return None
        secret, token = env.get(_ENV[1]), env.get(_ENV[2]) or None
        del env
        last = self._last
        if last is not None and (last.access_key, last.secret_key, last.token) == (
            key,
            secret,
            token,
        ):
            return last
        found = checked(key, secret, token, _ENV)
        if isinstance(found, ConfigError):
            del key, secret, token  # the raise passes through this frame
            raise found
        self._last = found
        return found

    def reset(self) -> None:
        self._last = None


class Container:
    """The container credentials endpoint, when one is configured."""

    def __init__(self, runtime: Runtime | None, environ: Callable[[], Mapping[str, str]]) -> None:
        self._runtime = runtime
        self._environ = environ
        self._lock = _thread.allocate_lock()
        self._source: Any = None

    def load(self, deadline: float | None) -> Credentials | None:
        env = self._environ()
        configured = any((env.get(var) or "").strip() for var in _CONTAINER)
        del env  # it holds the container authorization token, or other secrets
        if not configured:
            return None
        found: Credentials = self._fetcher().get(deadline)
        return found

    def reset(self) -> None:
        with self._lock:
            self._source = None

    def _fetcher(self) -> Any:
        with self._lock:
            if self._source is None:
                from iamdb._aws.container import ContainerCredentials

                runtime = self._runtime
                if runtime is None:  # imported only here: not on signing's cold path
                    from iamdb._core.runtime import PROCESS

                    runtime = PROCESS
                self._source = ContainerCredentials(runtime)
            return self._source


class Botocore:
    """botocore's default chain (profiles, SSO, instance metadata), imported on first use.

    Absent, it is a :class:`CredentialsError`, not a MissingDependencyError: no iamdb extra
    brings botocore, and on Lambda the environment or the container endpoint has the
    credentials. botocore reads the process environment, not the runtime's.
    """

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._source: Any = None
        self._last: Credentials | None = None

    def load(self, deadline: float | None) -> Credentials:
        source = self._credentials()
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
        last = self._last
        values = (frozen.access_key, frozen.secret_key, frozen.token or None)
        if last is not None and (last.access_key, last.secret_key, last.token) == values:
            return last
        found = checked(*values, ("access_key", "secret_key", "token"))
        del frozen, values
        if isinstance(found, ConfigError):
            raise CredentialsError(f"botocore's credential chain answered unusable ones ({found})")
        self._last = found
        return found

    def reset(self) -> None:
        with self._lock:
            self._source, self._last = None, None

    def _credentials(self) -> Any:
        with self._lock:
            if self._source is not None:
                return self._source
            missing = False
            try:
                import botocore.session
            except ImportError:
                missing = True
            if missing:
                raise CredentialsError(
                    f"no AWS credentials found: {_ENV[0]} is not set and botocore is not "
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
            from iamdb._aws import redact

            redact.install()  # botocore's DEBUG logs of SSO or assume-role refreshes hold secrets
            self._source = found
            return found


class CredentialResolver:
    """The chain: :class:`Environment`, :class:`Container`, :class:`Botocore`, in that order.
    Thread-safe."""

    def __init__(self, runtime: Runtime | None = None) -> None:
        """``runtime``: where to read the variables (its ``environ``), and the clock, sleep and
        random source of container credential fetches; None: ``os.environ`` read live, and
        :data:`iamdb._core.runtime.PROCESS` for a container fetch."""
        environ: Callable[[], Mapping[str, str]] = (
            (lambda: os.environ) if runtime is None else (lambda: runtime.environ)
        )
        self._providers = (Environment(environ), Container(runtime, environ), Botocore())

    def resolve(self, deadline: float | None = None) -> Credentials:
        """The current credentials from the first provider that has them; ConfigError or
        CredentialsError. ``deadline`` (clock seconds) bounds a fetch from the container
        endpoint, retries included, if one is due."""
        for provider in self._providers:
            found = provider.load(deadline)
            if found is not None:
                return found
        raise AssertionError("unreachable: botocore's provider answers or raises")

    def reset(self) -> None:
        """Forget cached credentials and sources (the next resolve starts afresh)."""
        for provider in self._providers:
            provider.reset()


default_resolver = CredentialResolver()
"""The process's resolver: live ``os.environ``, shared by iamdb's default registry and signer."""
