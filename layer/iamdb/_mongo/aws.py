"""MONGODB-AWS for pymongo without boto3: iamdb's SigV4 signer in place of pymongo-auth-aws.

pymongo performs MONGODB-AWS logins through the ``pymongo_auth_aws`` package
(``AwsCredential``, ``AwsSaslContext``, ``PyMongoAuthAwsError``, and its ``auth`` module's
credential cache switches), which imports boto3 and botocore (~110 ms of cold start) to sign
one STS ``GetCallerIdentity`` request per new socket. This module is that same interface,
signing with :func:`iamdb._aws.sigv4.sign_headers`. :func:`install` registers it under the
package's name before pymongo first needs it, unless the application already imported the
real one (then that one keeps serving, boto3 already paid for).

Without explicit credentials (a ``MongoClient`` the application made with
``authMechanism=MONGODB-AWS`` alone), credentials come from iamdb's resolver: the
environment, the container endpoint, then botocore's chain, as pymongo-auth-aws would.
"""

from __future__ import annotations

import os
import sys
import threading
from base64 import standard_b64encode
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from iamdb._aws import sigv4 as _sigv4
from iamdb._aws.chain import default_resolver
from iamdb._aws.credentials import Credentials

__version__ = "1.3.0+iamdb"  # the pymongo-auth-aws interface this module implements
_BODY = "Action=GetCallerIdentity&Version=2011-06-15"
_lock = threading.Lock()


class PyMongoAuthAwsError(Exception):
    """A MONGODB-AWS conversation failed (pymongo turns it into ``OperationFailure``)."""


class AwsCredential:
    """Credentials for one conversation (pymongo's username, password and session token)."""

    def __init__(
        self,
        username: str | None,
        password: str | None,
        token: str | None,
        refresh_needed: Callable[[int], bool] | None = None,
    ) -> None:
        self.username, self.password, self.token = username, password, token
        self.refresh_needed = refresh_needed

    def __repr__(self) -> str:
        return f"AwsCredential(username={self.username!r}, password=<hidden>, token=<hidden>)"


def set_use_cached_credentials(value: bool) -> None:
    """pymongo calls this; iamdb's resolver caches what needs caching already."""


def set_cached_credentials(credentials: AwsCredential | None) -> None:
    """pymongo calls this after a failure; nothing is cached here to clear."""


def get_cached_credentials() -> AwsCredential | None:
    return None


class AwsSaslContext:
    """The two-step MONGODB-AWS SASL conversation (pymongo injects the BSON functions)."""

    def __init__(self, credentials: AwsCredential) -> None:
        self._credentials = credentials
        self._step = 0
        self._client_nonce = b""

    def step(self, server_payload: bytes | None) -> Any:
        """The client's payload for the next SASL step."""
        self._step += 1
        if self._step == 1:
            if self._credentials.username is None:
                creds = default_resolver.resolve()
                self._credentials = AwsCredential(creds.access_key, creds.secret_key, creds.token)
            self._client_nonce = os.urandom(32)
            binary = self.binary_type()
            return binary(self.bson_encode({"r": binary(self._client_nonce), "p": 110}))
        if self._step == 2:
            return self._second(server_payload)
        raise PyMongoAuthAwsError("MONGODB-AWS failed: too many steps")

    def _second(self, server_payload: bytes | None) -> Any:
        if not server_payload:
            raise PyMongoAuthAwsError("MONGODB-AWS failed: server payload empty")
        server = self._decoded(server_payload)
        if server is None:
            raise PyMongoAuthAwsError("MONGODB-AWS failed: the server's payload is not BSON")
        nonce, sts_host = server.get("s"), server.get("h")
        if not isinstance(nonce, bytes) or len(nonce) != 64:
            raise PyMongoAuthAwsError("Server returned an invalid nonce.")
        if not nonce.startswith(self._client_nonce):
            raise PyMongoAuthAwsError("Server returned an invalid nonce.")
        if not isinstance(sts_host, str):
            raise PyMongoAuthAwsError("Server returned an invalid sts host")
        creds = self._credentials
        if not (creds.username and creds.password):
            raise PyMongoAuthAwsError("MONGODB-AWS credentials are incomplete")
        answer = auth_header(creds, nonce, sts_host)
        return self.binary_type()(self.bson_encode(answer))

    def _decoded(self, payload: bytes) -> Mapping[str, Any] | None:
        """The server's payload as a document, or None when it is none (any decoding error:
        pymongo's would escape the conversation as something other than an auth failure)."""
        try:
            server = self.bson_decode(payload)
        except Exception:
            return None
        return server if isinstance(server, Mapping) else None

    # pymongo's subclass provides these (dependency injection, as in pymongo-auth-aws)
    def binary_type(self) -> Any:
        raise NotImplementedError

    def bson_encode(self, doc: Mapping[str, Any]) -> bytes:
        raise NotImplementedError

    def bson_decode(self, data: bytes) -> Mapping[str, Any]:
        raise NotImplementedError


def auth_header(
    creds: AwsCredential, server_nonce: bytes, sts_host: str, now: datetime | None = None
) -> dict[str, str]:
    """The signed ``GetCallerIdentity`` request the server forwards to STS: ``a`` (the
    Authorization header), ``d`` (X-Amz-Date) and ``t`` (the session token, if any)."""
    assert creds.username and creds.password
    headers = {
        "content-length": str(len(_BODY)),
        "content-type": "application/x-www-form-urlencoded",
        "host": sts_host,
        "x-mongodb-gs2-cb-flag": "n",
        "x-mongodb-server-nonce": standard_b64encode(server_nonce).decode(),
    }
    added = _sigv4.sign_headers(
        "POST",
        headers,
        _BODY.encode(),
        service="sts",
        region=sts_region(sts_host),
        credentials=Credentials(creds.username, creds.password, creds.token or None),
        now=now,
    )
    answer = {"a": added["authorization"], "d": added["x-amz-date"]}
    if creds.token:
        answer["t"] = creds.token
    return answer


def sts_region(sts_host: str) -> str:
    """The region the server's STS host is in (``us-east-1`` for the global endpoint)."""
    if not sts_host or len(sts_host) > 255:
        raise PyMongoAuthAwsError(f"Server returned an invalid sts host: {sts_host[:80]}")
    parts = sts_host.split(".")
    if len(parts) == 1 or sts_host == "sts.amazonaws.com":
        return "us-east-1"
    if not all(parts):
        raise PyMongoAuthAwsError(f"Server returned an invalid sts host: {sts_host[:80]}")
    return parts[1]


def install() -> bool:
    """Serve pymongo's ``pymongo_auth_aws`` imports from this module; False when the real
    package was already imported (it keeps serving)."""
    with _lock:
        found = sys.modules.get("pymongo_auth_aws")
        if found is not None:
            return found is sys.modules[__name__]
        module = sys.modules[__name__]
        sys.modules["pymongo_auth_aws"] = module
        sys.modules["pymongo_auth_aws.auth"] = module
        sys.modules["pymongo_auth_aws.errors"] = module
        return True
