"""iamdb's process-wide settings (``IAMDB_*`` beyond any one instance), read and checked once.

Token refresh age, the health check's idle limit, the log level, the login rate and the fleet's
throttle table, the refusal retries, the metrics namespace: every instance of every engine
shares them. A missing or malformed value is a :class:`~iamdb.errors.ConfigError` naming the
variable, before any network call. Each instance's own settings are its engine's
(:mod:`iamdb._sql.config`, :mod:`iamdb._mongo.config`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from iamdb._core.env import env_number, env_text, env_value, settings_environ
from iamdb.errors import ConfigError


@dataclass(frozen=True)
class Settings:
    """Process-wide settings shared by every instance."""

    token_refresh_seconds: float = 840.0
    healthcheck_idle_seconds: float = 30.0
    log_level: str | None = None
    connect_rate: float = 200.0  # new IAM logins per second per database endpoint
    throttle_table: str | None = None  # DynamoDB table of the fleet-wide limiter; None: off
    auth_retries: int = 3  # retries of a refused login (0: none)
    metrics_namespace: str | None = None  # CloudWatch namespace of iamdb's EMF metrics; None: off


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the process-wide ``IAMDB_*`` settings."""
    env = settings_environ(environ)
    refresh = env_number(env, "IAMDB_TOKEN_REFRESH_SECONDS", 840.0, low=1.0, high=900.0)
    idle = env_number(env, "IAMDB_HEALTHCHECK_IDLE_SECONDS", 30.0, low=0.0, high=86400.0)
    level = env.get("IAMDB_LOG_LEVEL", "").strip().upper() or None
    if level is not None and level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(
            "IAMDB_LOG_LEVEL",
            f"expected DEBUG, INFO, WARNING, ERROR or CRITICAL, got {level!r:.40}",
        )
    return Settings(
        refresh,
        idle,
        level,
        connect_rate=_connect_rate(env),
        throttle_table=_throttle_table(env),
        auth_retries=int(env_number(env, "IAMDB_AUTH_RETRIES", 3, low=0, high=10, integer=True)),
        metrics_namespace=_metrics_namespace(env),
    )


# RDS throttles new IAM logins per instance: 200/s in AWS's current documentation (older
# material says 256/s), 10/s on db.t2.micro.
RDS_IAM_CONNECT_RATE = 200.0


_CLASS_RATES = {"db.t2.micro": 10.0}


_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")


def _connect_rate(env: Mapping[str, str]) -> float:
    """``IAMDB_CONNECT_RATE`` when set, else the figure for ``IAMDB_DB_INSTANCE_CLASS``."""
    if env_value(env, "IAMDB_CONNECT_RATE") is not None:
        return env_number(env, "IAMDB_CONNECT_RATE", RDS_IAM_CONNECT_RATE, low=0.001, high=1e6)
    klass = env_text(env, "IAMDB_DB_INSTANCE_CLASS", required=False, max_len=64)
    return _CLASS_RATES.get((klass or "").lower(), RDS_IAM_CONNECT_RATE)


def _throttle_table(env: Mapping[str, str]) -> str | None:
    value = env_value(env, "IAMDB_THROTTLE_TABLE")
    if value is not None and not _TABLE_NAME.fullmatch(value):
        raise ConfigError(
            "IAMDB_THROTTLE_TABLE",
            f"expected a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -), got {value!r:.80}",
        )
    return value


# CloudWatch: 1-255 of letters, digits and . - _ / # : space; "AWS/" is reserved for AWS.
_NAMESPACE = re.compile(r"(?!AWS/)[A-Za-z0-9.\-_/#: ]{1,255}", re.ASCII)


def _metrics_namespace(env: Mapping[str, str]) -> str | None:
    """``IAMDB_METRICS_NAMESPACE``, else Powertools' ``POWERTOOLS_METRICS_NAMESPACE``, else None."""
    for var in ("IAMDB_METRICS_NAMESPACE", "POWERTOOLS_METRICS_NAMESPACE"):
        value = env_value(env, var)
        if value is None:
            continue
        if not _NAMESPACE.fullmatch(value):
            raise ConfigError(
                var,
                "expected a CloudWatch namespace: 1-255 of A-Z a-z 0-9 . - _ / # : and space, "
                f"not starting with AWS/, got {value!r:.80}",
            )
        return value
    return None
