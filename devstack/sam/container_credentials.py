"""The container credentials endpoint Lambda gives SnapStart functions, for ``devstack invoke``.

With SnapStart, Lambda sets no ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
``AWS_SESSION_TOKEN`` (a snapshot would freeze them): it sets
``AWS_CONTAINER_CREDENTIALS_FULL_URI`` and ``AWS_CONTAINER_AUTHORIZATION_TOKEN``, and serves
the execution role's session credentials there to whoever presents the token. devstack does
the same with :class:`CredentialsServer`: an HTTP server on loopback, one per environment,
with a random token; it answers ``GET`` with ``AccessKeyId``, ``SecretAccessKey``, ``Token``
and ``Expiration`` and refuses (401) a request without the token.

``Expiration`` is the credentials' own when known (``AWS_CREDENTIAL_EXPIRATION``, which
devstack's env files carry); otherwise each answer says one hour from then.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
import secrets
import threading
from collections.abc import Mapping, MutableMapping
from http.server import BaseHTTPRequestHandler
from typing import Any

from devstack.aws import Credentials, iso8601
from devstack.httpserver import Server

log = logging.getLogger("devstack")

PATH = "/credentials"
FULL_URI = "AWS_CONTAINER_CREDENTIALS_FULL_URI"
TOKEN = "AWS_CONTAINER_AUTHORIZATION_TOKEN"
EXPIRATION = "AWS_CREDENTIAL_EXPIRATION"  # botocore's name for it, in the environment
_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_UNKNOWN_LIFETIME = dt.timedelta(hours=1)


class CredentialsServer:
    """Serves one set of credentials on ``http://127.0.0.1:<port>/credentials``. Use as a
    context manager (or :meth:`start` / :meth:`stop`)."""

    def __init__(self, credentials: Credentials, *, label: str = "function") -> None:
        self.credentials = credentials
        self.label = label
        self.token = secrets.token_urlsafe(32)
        self._httpd = Server(("127.0.0.1", 0), _handler_class(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{PATH}"

    def environment(self) -> dict[str, str]:
        """The variables Lambda sets for a SnapStart function instead of the keys."""
        return {FULL_URI: self.url, TOKEN: self.token}

    def start(self) -> CredentialsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(5)
        self._httpd.server_close()

    def __enter__(self) -> CredentialsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer(self, authorization: str | None) -> tuple[int, dict[str, Any]]:
        if authorization is None or not hmac.compare_digest(authorization, self.token):
            log.warning("container credentials: refused a request without the right token")
            return 401, {"message": "missing or wrong Authorization token"}
        creds = self.credentials
        expiration = creds.expiration or dt.datetime.now(dt.timezone.utc) + _UNKNOWN_LIFETIME
        log.info("container credentials: served %s to %s", creds.access_key, self.label)
        body = {"AccessKeyId": creds.access_key, "SecretAccessKey": creds.secret_key}
        if creds.token is not None:
            body["Token"] = creds.token
        return 200, {**body, "Expiration": iso8601(expiration)}


def _handler_class(owner: CredentialsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path != PATH:
                status, body = 404, {"message": f"no such path; credentials are at {PATH}"}
            else:
                status, body = owner.answer(self.headers.get("Authorization"))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request would drown the function's own output; answer() logs

    return Handler


def serve_instead_of_keys(
    env: MutableMapping[str, str], settings: Mapping[str, str], label: str
) -> CredentialsServer | None:
    """Take the credentials out of a function's ``env`` and serve them, as Lambda does for
    SnapStart functions; ``env`` gets the endpoint's variables instead. ``settings`` may say
    when the credentials expire (``AWS_CREDENTIAL_EXPIRATION``). None when ``env`` holds no
    credentials (the function then has none, as without SnapStart)."""
    key, secret, token = (env.pop(name, None) for name in _KEYS)
    if not key or not secret:
        return None
    expiration = _expiration(settings.get(EXPIRATION))
    server = CredentialsServer(Credentials(key, secret, token, expiration), label=label)
    env.update(server.environment())
    return server.start()


def _expiration(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        instant = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        log.warning("container credentials: ignoring %s=%r (not ISO 8601)", EXPIRATION, text)
        return None
    return instant if instant.tzinfo else instant.replace(tzinfo=dt.timezone.utc)
