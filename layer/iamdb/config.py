"""Configuration from the environment, validated before any network call.

Every SQL instance is described by ``IAMDB_<ENGINE>_*`` variables (the default instance)
or ``IAMDB_<ENGINE>_<NAME>_*`` (``get_pg("reporting")`` reads ``IAMDB_PG_REPORTING_*``).
A missing or malformed value raises :class:`~iamdb.errors.ConfigError` naming the
variable and what was expected.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from iamdb.errors import ConfigError
from iamdb.tokens import Endpoint

Engine = Literal["pg", "mysql"]

DEFAULT_PORTS: dict[str, int] = {"pg": 5432, "mysql": 3306}
SSLMODES = ("disable", "require", "verify-ca", "verify-full")
# MySQL's --ssl-mode spellings, accepted for IAMDB_MYSQL_SSLMODE.
_MYSQL_SSLMODES = {
    "disabled": "disable",
    "required": "require",
    "verify_ca": "verify-ca",
    "verify_identity": "verify-full",
}
DEFAULT_CA_BUNDLE = str(Path(__file__).resolve().parent / "data" / "rds-ca-bundle.pem")

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}")
_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
# <id>.<cluster-|cluster-ro-|cluster-custom-|proxy-|><hash>.<region>.rds.amazonaws.com[.cn]
_RDS_ENDPOINT = re.compile(
    r"[^.]+\.(?:cluster-(?:ro-|custom-)?|proxy-)?[a-z0-9]+\."
    r"(?P<region>[a-z]{2}(?:-[a-z]+)+-\d{1,2})\.rds\.amazonaws\.com(?:\.cn)?\.?",
    re.IGNORECASE,
)


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


@dataclass(frozen=True)
class SqlConfig:
    """Everything needed to open one IAM-authenticated SQL connection."""

    engine: Engine
    name: str | None
    prefix: str  # "IAMDB_PG_" or "IAMDB_PG_REPORTING_": used in messages
    host: str
    port: int
    user: str
    dbname: str | None
    region: str
    signing_host: str  # the RDS endpoint name the token is signed for
    signing_port: int
    sslmode: str
    sslrootcert: str
    connect_timeout: int

    @property
    def label(self) -> str:
        """``pg`` or ``pg:reporting``: how logs and errors name this instance."""
        return self.engine if self.name is None else f"{self.engine}:{self.name}"

    @property
    def endpoint(self) -> Endpoint:
        """What this instance's tokens are signed for."""
        return Endpoint(self.signing_host, self.signing_port, self.user, self.region)


def env_prefix(engine: Engine, name: str | None) -> str:
    """``IAMDB_PG_`` for the default instance, ``IAMDB_PG_<NAME>_`` for a named one."""
    if name is None:
        return f"IAMDB_{engine.upper()}_"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            "name", f"expected a letter then up to 31 letters, digits or '_', got {name!r:.40}"
        )
    return f"IAMDB_{engine.upper()}_{name.upper()}_"


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the process-wide ``IAMDB_*`` settings."""
    env = os.environ if environ is None else environ
    refresh = _number(env, "IAMDB_TOKEN_REFRESH_SECONDS", 840.0, low=1.0, high=900.0)
    idle = _number(env, "IAMDB_HEALTHCHECK_IDLE_SECONDS", 30.0, low=0.0, high=86400.0)
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
        auth_retries=int(_number(env, "IAMDB_AUTH_RETRIES", 3, low=0, high=10, integer=True)),
        metrics_namespace=_metrics_namespace(env),
    )


# RDS throttles new IAM logins per instance: 200/s in AWS's current documentation (older
# material says 256/s), 10/s on db.t2.micro.
RDS_IAM_CONNECT_RATE = 200.0
_CLASS_RATES = {"db.t2.micro": 10.0}
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")


def _connect_rate(env: Mapping[str, str]) -> float:
    """``IAMDB_CONNECT_RATE`` when set, else the figure for ``IAMDB_DB_INSTANCE_CLASS``."""
    if _get(env, "IAMDB_CONNECT_RATE") is not None:
        return _number(env, "IAMDB_CONNECT_RATE", RDS_IAM_CONNECT_RATE, low=0.001, high=1e6)
    klass = _text(env, "IAMDB_DB_INSTANCE_CLASS", required=False, max_len=64)
    return _CLASS_RATES.get((klass or "").lower(), RDS_IAM_CONNECT_RATE)


def _throttle_table(env: Mapping[str, str]) -> str | None:
    value = _get(env, "IAMDB_THROTTLE_TABLE")
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
        value = _get(env, var)
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


def load_sql_config(
    engine: Engine, name: str | None = None, environ: Mapping[str, str] | None = None
) -> SqlConfig:
    """Read and validate one SQL instance's configuration."""
    env = os.environ if environ is None else environ
    p = env_prefix(engine, name)
    host = _host(env, p + "HOST", required=True)
    port = int(_number(env, p + "PORT", DEFAULT_PORTS[engine], low=1, high=65535, integer=True))
    signing_host, signing_port = _iam_host(env, p + "IAM_HOST", host, port)
    return SqlConfig(
        engine=engine,
        name=name,
        prefix=p,
        host=host,
        port=port,
        user=_text(env, p + "USER", required=True, max_len=128),  # type: ignore[arg-type]
        dbname=_text(env, p + "DBNAME", required=False, max_len=128),
        region=_region(env, p + "REGION", signing_host),
        signing_host=signing_host,
        signing_port=signing_port,
        sslmode=_sslmode(env, p + "SSLMODE", engine),
        sslrootcert=_rootcert(env, p + "SSLROOTCERT"),
        connect_timeout=int(_number(env, p + "CONNECT_TIMEOUT", 5, low=1, high=300, integer=True)),
    )


def region_from_endpoint(hostname: str) -> str | None:
    """The region in an RDS endpoint name (instance, cluster, reader, custom, proxy; China,
    GovCloud), or None when ``hostname`` is not an RDS endpoint name."""
    match = _RDS_ENDPOINT.fullmatch(hostname)
    return match.group("region").lower() if match else None


def _get(env: Mapping[str, str], var: str) -> str | None:
    value = env.get(var)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _text(env: Mapping[str, str], var: str, *, required: bool, max_len: int) -> str | None:
    value = _get(env, var)
    if value is None:
        if required:
            raise ConfigError(var, "is required and not set")
        return None
    if len(value) > max_len or not value.isprintable():
        raise ConfigError(var, f"expected at most {max_len} printable characters")
    return value


def _host(env: Mapping[str, str], var: str, *, required: bool) -> str:
    value = _get(env, var)
    if value is None:
        raise ConfigError(var, "is required and not set (the database host name or IP)")
    if not _valid_host(value):
        raise ConfigError(var, f"expected a host name or IP address, got {value!r:.80}")
    return value


def _valid_host(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return "%" not in value  # no IPv6 scope id: it admits any text ("fe80::1%x y=z")
    except ValueError:
        return bool(_HOSTNAME.fullmatch(value))


def _iam_host(env: Mapping[str, str], var: str, host: str, port: int) -> tuple[str, int]:
    """``IAM_HOST`` is ``name`` or ``name:port``; default: the connect host and port."""
    value = _get(env, var)
    if value is None:
        return host, port
    name, sep, port_text = value.rpartition(":") if value.count(":") == 1 else ("", "", "")
    if not sep:
        name = value
    if not _valid_host(name):
        raise ConfigError(
            var, f"expected an RDS endpoint name, optionally ':port', got {value!r:.80}"
        )
    if not sep:
        return name, port
    digits = port_text.isascii() and port_text.isdigit() and len(port_text) <= 5
    if not digits or not 1 <= int(port_text) <= 65535:
        raise ConfigError(var, f"expected a port number 1-65535 after ':', got {port_text!r:.20}")
    return name, int(port_text)


def _region(env: Mapping[str, str], var: str, signing_host: str) -> str:
    value = _get(env, var)
    if value is not None:
        if not _REGION.fullmatch(value):
            raise ConfigError(var, f"expected an AWS region such as 'us-east-1', got {value!r:.40}")
        return value
    parsed = region_from_endpoint(signing_host)
    if parsed:
        return parsed
    fallback = _get(env, "AWS_REGION") or _get(env, "AWS_DEFAULT_REGION")
    if fallback is None or not _REGION.fullmatch(fallback):
        raise ConfigError(
            var,
            f"not set, {signing_host!r:.80} is not an RDS endpoint name, and AWS_REGION "
            "is not a valid region: set it to the database's region, e.g. 'us-east-1'",
        )
    return fallback


def _sslmode(env: Mapping[str, str], var: str, engine: Engine) -> str:
    value = _get(env, var)
    if value is None:
        return "verify-full"
    mode = value.lower()
    if engine == "mysql":
        mode = _MYSQL_SSLMODES.get(mode, mode)
    if mode not in SSLMODES:
        raise ConfigError(
            var,
            f"expected one of {', '.join(SSLMODES)}, got {value!r:.40} "
            "('allow'/'prefer' could silently send the token in plaintext)",
        )
    return mode


def _rootcert(env: Mapping[str, str], var: str) -> str:
    value = _get(env, var)
    if value is None:
        return DEFAULT_CA_BUNDLE
    if "\0" in value or not os.path.isfile(value):
        raise ConfigError(var, f"expected the path of a PEM CA bundle, no file at {value!r:.200}")
    return value


def _number(
    env: Mapping[str, str],
    var: str,
    default: float,
    *,
    low: float,
    high: float,
    integer: bool = False,
) -> float:
    value = _get(env, var)
    if value is None:
        return default
    kind = "an integer" if integer else "a number"
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        raise ConfigError(
            var, f"expected {kind} from {low:g} to {high:g}, got {value!r:.40}"
        ) from None
    if not low <= number <= high:  # also rejects NaN
        raise ConfigError(var, f"expected {kind} from {low:g} to {high:g}, got {value!r:.40}")
    return number
