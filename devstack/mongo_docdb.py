"""How devstack's Mongo peer plays an Amazon DocumentDB 5.0 cluster (``MongoPeer(documentdb=...)``).

What it imitates, from AWS's DocumentDB guide and what DocumentDB answers drivers:

- The cluster endpoint leads to the primary, which says it belongs to replica set ``rs0`` and
  names its members by their *instance* endpoints; a driver given ``replicaSet=rs0`` drops the
  seed and talks to those names from then on (so the CA must verify them too).
- Engines before 8.0.2 (5.0 is the one with IAM logins) refuse every command that carries a
  retryable-write ``txnNumber`` outside a transaction: code 301, "Retryable writes are not
  supported", no ``codeName``.
- ``buildInfo`` says 5.0.0; ``hello`` says ``maxWireVersion`` 13 and keeps
  ``logicalSessionTimeoutMinutes`` (sessions exist, which is why drivers send ``txnNumber``).

Its certificate comes from a CA of its own that names the DocumentDB-style endpoints only, as
a real cluster's names its endpoints and not ``localhost``. Those names must reach 127.0.0.1:
:func:`loopback_resolver` is the ``socket.getaddrinfo`` a test installs for that.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from devstack.mongo_wire import CommandError

SET_NAME = "rs0"
VERSION = "5.0.0"
MAX_WIRE_VERSION = 13
RETRYABLE_WRITES_UNSUPPORTED = 301


@dataclass(frozen=True)
class DocumentDB:
    """The one member's instance endpoint name (what ``hello`` reports as ``me``)."""

    instance: str

    def hello(self, port: int) -> dict[str, Any]:
        """What a DocumentDB primary adds to (or changes in) a standalone's ``hello``."""
        me = f"{self.instance}:{port}"
        return {
            "setName": SET_NAME,
            "setVersion": 1,
            "hosts": [me],
            "primary": me,
            "me": me,
            "secondary": False,
            "maxWireVersion": MAX_WIRE_VERSION,
        }

    def check(self, body: dict[str, Any]) -> None:
        """Refuse a retryable write (a ``txnNumber`` without a transaction's ``autocommit``)."""
        if "txnNumber" in body and "autocommit" not in body:
            raise CommandError(
                RETRYABLE_WRITES_UNSUPPORTED, "", "Retryable writes are not supported"
            )


def loopback_resolver(names: Iterable[str]) -> Callable[..., Any]:
    """A ``socket.getaddrinfo`` resolving ``names`` to 127.0.0.1, every other name as before.

    The process-local equivalent of a hosts-file line: pymongo connects to (and checks the
    certificate against) the name in the URI or in ``hello``'s member list, and these
    names exist in no DNS. Install it with ``monkeypatch.setattr(socket, "getaddrinfo", ...)``.
    """
    real = socket.getaddrinfo
    loopback = {name.lower().rstrip(".") for name in names}

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.lower().rstrip(".") in loopback:
            host = "127.0.0.1"
        return real(host, port, *args, **kwargs)

    return getaddrinfo
