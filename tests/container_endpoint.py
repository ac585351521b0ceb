"""A scripted container credentials endpoint on loopback, for iamdb's and botocore's clients.

Each request gets the next step of a script (the last step repeats): an answer's bytes, or a
way of not answering (:data:`SILENT`, :data:`CLOSE`, :data:`RESET`, :class:`Dribble`). The
secrets it serves (:data:`TOKEN`, :data:`SECRET`, :data:`SESSION`) are long and unique, so a
test can look for them in everything an exception keeps alive.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from tests.fakes import FakeTime
from tests.localserver import LocalServer, read_request, response

TOKEN = "container-authorization-token-0123456789abcdef"
KEY = "ASIACONTAINER0000001"
SECRET = "container-secret-key-0123456789abcdefghij"
SESSION = "container-session-token-" + "0123456789" * 20
SECRETS = (TOKEN, SECRET, SESSION)


def iso(epoch: float, zone: str = "Z") -> str:
    """``epoch`` as AWS writes ``Expiration`` (``zone`` "" for none at all)."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + zone


def creds_body(expires_at: float, **changes: Any) -> bytes:
    """The JSON of served credentials; a change to None drops that field."""
    body: dict[str, Any] = {
        "AccessKeyId": KEY,
        "SecretAccessKey": SECRET,
        "Token": SESSION,
        "Expiration": iso(expires_at),
        "AccountId": "123456789012",
    }
    for name, value in changes.items():
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    return json.dumps(body).encode()


def ok(expires_at: float, **changes: Any) -> bytes:
    """A 200 answer with credentials (see :func:`creds_body`)."""
    return response(200, creds_body(expires_at, **changes), [("Content-Type", "application/json")])


class _Silent:
    """Read the request, never answer (until the server stops)."""


class _Close:
    """Read the request, close the connection without a byte."""


class _Reset:
    """Read the request, reset the connection (RST)."""


SILENT, CLOSE, RESET = _Silent(), _Close(), _Reset()


@dataclass(frozen=True)
class Dribble:
    """Send ``answer`` one byte every ``every`` seconds."""

    answer: bytes
    every: float = 0.05


Step = bytes | _Silent | _Close | _Reset | Dribble


class Scripted:
    """The handler of a :class:`LocalServer`: request *n* gets ``steps[n]`` (the last repeats).

    ``requests`` counts the requests read; ``authorizations`` keeps each one's header.
    """

    def __init__(self, steps: Sequence[Step]) -> None:
        assert steps
        self.steps = list(steps)
        self.requests = 0
        self.authorizations: list[str | None] = []
        self._lock = threading.Lock()

    def __call__(self, conn: socket.socket, server: LocalServer) -> None:
        while True:
            request = read_request(conn)
            if request is None:
                return
            with self._lock:
                step = self.steps[min(self.requests, len(self.steps) - 1)]
                self.requests += 1
                self.authorizations.append(request.header("authorization"))
            if isinstance(step, bytes):
                conn.sendall(step)
            elif isinstance(step, Dribble):
                for i in range(len(step.answer)):
                    if server.stopping.wait(step.every):
                        return
                    conn.sendall(step.answer[i : i + 1])
                return
            elif step is SILENT:
                server.stopping.wait(30)
                return
            elif step is RESET:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            else:
                return


class Ticking(FakeTime):
    """A clock that real time moves (from ``START``), and a sleep that moves it without
    waiting: the HTTP client's real waits count, backoff costs no test time."""

    def __init__(self) -> None:
        super().__init__()
        self._started = time.monotonic()

    def clock(self) -> float:
        return self.now + time.monotonic() - self._started

    __call__ = clock


def serve(steps: Iterable[Step]) -> tuple[LocalServer, Scripted]:
    """A server answering ``steps``, listening already; ``with`` it to serve."""
    script = Scripted(list(steps))
    return LocalServer(script), script


def environment(server: LocalServer, token: str | None = TOKEN, **extra: str) -> dict[str, str]:
    """What Lambda sets with SnapStart: the full URI and the authorization token."""
    env = {"AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{server.url}/2021-04-23/credentials"}
    if token is not None:
        env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = token
    env.update(extra)
    return env
