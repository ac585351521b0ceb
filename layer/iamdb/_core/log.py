"""iamdb's logger.

iamdb logs through the standard ``logging`` module under the name ``iamdb``;
``IAMDB_LOG_LEVEL`` sets its level. Nothing logged ever contains a token, secret key,
session token or signature: log lines name hosts, users, key ids and timings only.

When the application made a Powertools ``Logger``, iamdb's records go through that
Logger's handler instead (:func:`join_powertools_logger`): structured JSON with the keys
the handler added, the Lambda context from ``@logger.inject_lambda_context`` included.
Powertools absent is not an error: iamdb then logs through ``logging`` alone.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

logger = logging.getLogger("iamdb")


def apply_level(level: str | None) -> None:
    """Set iamdb's own log level (``IAMDB_LOG_LEVEL``); None leaves it to the application."""
    if level is not None:
        logger.setLevel(level)


def join_powertools_logger(*, keep_level: bool) -> bool:
    """Send iamdb's records through the application's Powertools Logger; False if none.

    The Logger is the one named ``POWERTOOLS_SERVICE_NAME``, else the only one the process
    has. Powertools is never imported here unless the application already did, so this
    costs nothing without it. iamdb's logger then takes the Logger's level (unless
    ``keep_level``: ``IAMDB_LOG_LEVEL`` was set) and stops propagating, as Powertools'
    ``copy_config_to_registered_loggers`` does for any library logger.
    """
    if "aws_lambda_powertools.logging.logger" not in sys.modules:
        return False
    service = _powertools_service()
    if service is None:
        return False
    from aws_lambda_powertools import Logger
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    copy_config_to_registered_loggers(
        source_logger=Logger(service=service), include={logger.name}, ignore_log_level=keep_level
    )
    return True


def _powertools_service() -> str | None:
    """The service name of the Powertools Logger the application configured, if any."""
    configured = [
        name
        for name, found in logging.root.manager.loggerDict.items()
        if isinstance(found, logging.Logger) and getattr(found, "init", False) and "." not in name
    ]
    wanted = os.environ.get("POWERTOOLS_SERVICE_NAME", "").strip()
    if wanted in configured:
        return wanted
    return configured[0] if len(configured) == 1 else None


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
