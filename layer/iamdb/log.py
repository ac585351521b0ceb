"""iamdb's logger.

iamdb logs through the standard ``logging`` module under the name ``iamdb``;
``IAMDB_LOG_LEVEL`` sets its level. Nothing logged ever contains a token, secret key,
session token or signature: log lines name hosts, users, key ids and timings only.
"""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger("iamdb")


def apply_level(level: str | None) -> None:
    """Set iamdb's own log level (``IAMDB_LOG_LEVEL``); None leaves it to the application."""
    if level is not None:
        logger.setLevel(level)


class WarnOnce:
    """Log each distinct warning once per process (e.g. "TLS verification is off")."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, key: str, message: str, *args: object) -> None:
        with self._lock:
            if key in self._seen:
                return
            self._seen.add(key)
        logger.warning(message, *args)

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()
