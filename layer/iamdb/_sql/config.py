"""A SQL instance's configuration from the environment, validated before any network call.

Every SQL instance is described by ``IAMDB_<ENGINE>_*`` variables (the default instance)
or ``IAMDB_<ENGINE>_<NAME>_*`` (``get_pg("reporting")`` reads ``IAMDB_PG_REPORTING_*``);
engines are ``pg``, ``mysql`` and ``dsql`` (Aurora DSQL: PostgreSQL with rules of its own, see
:mod:`iamdb._sql.dsql`).
A missing or malformed value raises :class:`~iamdb.errors.ConfigError` naming the
variable and what was expected. Instance names are case-insensitive (see
:func:`iamdb._core.env.instance_name`); numbers, ports and regions are ASCII. The settings
every instance shares are :mod:`iamdb._core.settings`'. A role to assume (``<P>ROLE_ARN``,
``<P>EXTERNAL_ID``, ``<P>SESSION_SECONDS``) means what it means for every engine
(:mod:`iamdb._aws.roles`); ``<P>WRITER`` says whether the instance must take writes (what
that changes is :mod:`iamdb._sql.writer`'s).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from iamdb._aws.roles import ROLE_SUFFIXES, Role, load_role, shortest_session
from iamdb._aws.signer import TOKEN_LIFETIME_SECONDS
from iamdb._core.env import (
    INTEGER,
    RDS_CA_BUNDLE,
    aws_region,
    ca_file_problem,
    client_name,
    env_flag,
    env_host,
    env_number,
    env_text,
    env_value,
    instance_name,
    instance_prefix,
    is_ip,
    is_region,
    settings_environ,
    valid_host,
)
from iamdb._sql import dsql as _dsql
from iamdb._sql import slots as _slots
from iamdb._sql.tokens import DSQL_CONNECT, DSQL_CONNECT_ADMIN, Target
from iamdb.errors import ConfigError

Engine = Literal["pg", "mysql", "dsql"]

DEFAULT_PORTS: dict[str, int] = {"pg": 5432, "mysql": 3306, "dsql": 5432}
SSLMODES = ("disable", "require", "verify-ca", "verify-full")
# MySQL's --ssl-mode spellings, accepted for IAMDB_MYSQL_SSLMODE.
_MYSQL_SSLMODES = {
    "disabled": "disable",
    "required": "require",
    "verify_ca": "verify-ca",
    "verify_identity": "verify-full",
}

# What load_sql_config reads after the instance's prefix (instance names must not collide).
SQL_SUFFIXES = (
    "HOST",
    "PORT",
    "USER",
    "DBNAME",
    "REGION",
    "IAM_HOST",
    "SSLMODE",
    "SSLROOTCERT",
    "CONNECT_TIMEOUT",
    "TOKEN_EXPIRES_SECONDS",  # these three: DSQL only
    "MAX_AGE_SECONDS",
    "CONNECT_RATE",
    *ROLE_SUFFIXES,
    "WRITER",
    _slots.SUFFIX,  # PostgreSQL and MySQL: the server's idle limit on sessions
    _slots.BETWEEN_SUFFIX,  # and between invocations (iamdb.lambda_handler)
)
# <id>.<cluster-|cluster-ro-|cluster-custom-|proxy-|><hash>.<region>.rds.amazonaws.com[.cn]
_RDS_ENDPOINT = re.compile(
    r"[^.]+\.(?:cluster-(?:ro-|custom-)?|proxy-)?[a-z0-9]+\."
    r"(?P<region>[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2})\.rds\.amazonaws\.com(?:\.cn)?\.?",
    re.IGNORECASE | re.ASCII,  # else [a-z] also matches U+017F, U+212A
)
# The writer endpoint of an Aurora cluster or an RDS Multi-AZ DB cluster (not cluster-ro-,
# cluster-custom-): its name says it leads to the server that takes writes.
_WRITER_ENDPOINT = re.compile(
    r"[^.]+\.cluster-[a-z0-9]+\.[a-z]{2}(?:-[a-z]+)+-[0-9]{1,2}\.rds\.amazonaws\.com(?:\.cn)?\.?",
    re.IGNORECASE | re.ASCII,
)


@dataclass(frozen=True)
class SqlConfig:
    """Everything needed to open one IAM-authenticated SQL connection."""

    engine: Engine
    name: str | None  # lower case: names are case-insensitive
    prefix: str  # "IAMDB_PG_" or "IAMDB_PG_REPORTING_": used in messages
    host: str
    port: int
    user: str
    dbname: str | None
    region: str
    signing_host: str  # the RDS (or DSQL) endpoint name the token is signed for
    signing_port: int  # DSQL: unused, its tokens have no port
    sslmode: str
    sslrootcert: str
    connect_timeout: int
    token_lifetime: int = TOKEN_LIFETIME_SECONDS  # DSQL: <P>TOKEN_EXPIRES_SECONDS
    max_age: float | None = None  # DSQL: replace connections this old (seconds) at get_dsql()
    connect_rate: float | None = None  # DSQL: new connections/s per cluster; None: the setting
    client_name: str = "iamdb"  # the session's application name: AWS_LAMBDA_FUNCTION_NAME
    role: Role | None = None  # the role whose credentials sign; None: the execution role's
    writer: bool = False  # confirm at every login that the server takes writes (<P>WRITER)
    idle: _slots.IdleSetting = _slots.UNSET  # PostgreSQL, MySQL: <P>IDLE_SESSION_TIMEOUT

    @property
    def label(self) -> str:
        """``pg`` or ``pg:reporting``: how logs and errors name this instance."""
        return self.engine if self.name is None else f"{self.engine}:{self.name}"

    @property
    def target(self) -> Target:
        """What this instance's tokens are signed for (DSQL: the action follows the role)."""
        host, port, user, region = self.signing_host, self.signing_port, self.user, self.region
        if self.engine != "dsql":
            return Target(host, port, user, region, role=self.role)
        action = DSQL_CONNECT_ADMIN if user == _dsql.ADMIN_ROLE else DSQL_CONNECT
        return Target(host, port, user, region, action, self.token_lifetime, self.role)


def load_sql_config(
    engine: Engine, name: str | None = None, environ: Mapping[str, str] | None = None
) -> SqlConfig:
    """Read and validate one SQL instance's configuration."""
    env = settings_environ(environ)
    p = instance_prefix(engine, name, SQL_SUFFIXES)
    name = None if name is None else instance_name(name, SQL_SUFFIXES)
    dsql = engine == "dsql"
    host = env_host(env, p + "HOST")
    port = int(env_number(env, p + "PORT", DEFAULT_PORTS[engine], low=1, high=65535, integer=True))
    timeout = int(env_number(env, p + "CONNECT_TIMEOUT", 5, low=1, high=300, integer=True))
    signing_host, signing_port = _iam_host(env, p + "IAM_HOST", p + "HOST", host, port, dsql)
    user = env_text(env, p + "USER", required=not dsql, max_len=128) or _dsql.ADMIN_ROLE
    dbname = env_text(env, p + "DBNAME", required=False, max_len=128)
    limits = _dsql.limits(env, p) if dsql else {}
    lifetime = limits.get("token_lifetime", TOKEN_LIFETIME_SECONDS)
    return SqlConfig(
        engine=engine,
        name=name,
        prefix=p,
        host=host,
        port=port,
        user=user,
        dbname=_dsql.DBNAME if dsql and dbname is None else dbname,
        region=_region(env, p + "REGION", signing_host),
        signing_host=signing_host,
        signing_port=signing_port,
        sslmode=_sslmode(env, p + "SSLMODE", engine),
        sslrootcert=_rootcert(env, p + "SSLROOTCERT", dsql),
        connect_timeout=timeout,
        client_name=client_name(env),
        role=_role(env, p, lifetime),
        writer=_writer(env, p + "WRITER", signing_host, dsql),
        idle=_slots.load_idle(env, p, engine, (host, signing_host)),
        **(_dsql.limits(env, p) if dsql else {}),
    )


def region_from_endpoint(hostname: str) -> str | None:
    """The region in an RDS endpoint name (instance, cluster, reader, custom, proxy; China,
    GovCloud) or an Aurora DSQL cluster endpoint, or None when ``hostname`` is neither."""
    match = _RDS_ENDPOINT.fullmatch(hostname)
    return match.group("region").lower() if match else _dsql.region_from_endpoint(hostname)


def _iam_host(
    env: Mapping[str, str], var: str, host_var: str, host: str, port: int, dsql: bool
) -> tuple[str, int]:
    """``IAM_HOST`` is ``name`` or ``name:port`` (DSQL: ``name``, its tokens have no port);
    default: the connect host and port.

    Never an IP: RDS and DSQL accept only tokens signed for their endpoint name.
    """
    server, example = ("DSQL", "<id>.dsql.<region>.on.aws") if dsql else (
        "RDS", "mydb.xxxx.<region>.rds.amazonaws.com")  # fmt: skip
    value = env_value(env, var)
    if value is None:
        if is_ip(host):
            raise ConfigError(
                var,
                f"not set while {host_var}={host} is an IP address: {server} accepts only tokens "
                f"signed for its endpoint name; set it to that name ({example})",
            )
        return host, port
    name, sep, port_text = value.rpartition(":") if value.count(":") == 1 else ("", "", "")
    if not sep:
        name = value
    if not valid_host(name) or is_ip(name) or (dsql and sep):
        optional = "" if dsql else ", optionally ':port'"
        raise ConfigError(var, f"expected the {server} endpoint name{optional}, got {value!r:.80}")
    if not sep:
        return name, port
    if not INTEGER.fullmatch(port_text) or len(port_text) > 5 or not 1 <= int(port_text) <= 65535:
        raise ConfigError(var, f"expected a port number 1-65535 after ':', got {port_text!r:.20}")
    return name, int(port_text)


def _role(env: Mapping[str, str], prefix: str, lifetime: int) -> Role | None:
    """The role to assume (None: the execution role signs), with a session long enough for the
    tokens it signs (:func:`iamdb._aws.roles.shortest_session`)."""
    role = load_role(env, prefix)
    least = shortest_session(lifetime)
    if role is not None and role.session_seconds < least:
        raise ConfigError(
            prefix + "SESSION_SECONDS",
            f"expected at least {least} with tokens of {lifetime} s, got {role.session_seconds}: "
            "the credentials must outlive every token they sign, and be renewed before",
        )
    return role


def _writer(env: Mapping[str, str], var: str, signing_host: str, dsql: bool) -> bool:
    """``<P>WRITER``; unset: whether ``signing_host`` is a cluster (writer) endpoint."""
    if dsql:
        if env_value(env, var) is not None:
            raise ConfigError(var, "Aurora DSQL has no read-only servers: leave it unset")
        return False
    return env_flag(env, var, bool(_WRITER_ENDPOINT.fullmatch(signing_host)))


def _region(env: Mapping[str, str], var: str, signing_host: str) -> str:
    value = env_value(env, var)
    if value is not None:
        if not is_region(value):
            raise ConfigError(var, f"expected an AWS region such as 'us-east-1', got {value!r:.40}")
        return value
    parsed = region_from_endpoint(signing_host)
    if parsed:
        return parsed
    return aws_region(
        env,
        f"not set, {signing_host!r:.80} is not an RDS or DSQL endpoint name, and AWS_REGION "
        "is not a valid region: set it to the database's region, e.g. 'us-east-1'",
        var=var,
    )


def _sslmode(env: Mapping[str, str], var: str, engine: Engine) -> str:
    value = env_value(env, var)
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


def _rootcert(env: Mapping[str, str], var: str, dsql: bool) -> str:
    """The CA file: the bundled RDS CAs by default; for DSQL, whose certificates chain to
    Amazon's public roots, the system's CA store."""
    value = env_value(env, var)
    if value is None:
        return _dsql.system_ca_file(env, var) if dsql else RDS_CA_BUNDLE
    problem = ca_file_problem(value)
    if problem is not None:
        raise ConfigError(var, f"expected the path of a PEM CA bundle: {problem}")
    return value


def tls_warning(cfg: SqlConfig) -> str | None:
    """What to say once when ``cfg`` sends its token without verifying the server (None: it
    verifies)."""
    if cfg.sslmode == "disable":
        return f"{cfg.label}: {cfg.prefix}SSLMODE=disable: the IAM token travels in plaintext"
    if cfg.sslmode == "require":
        return (
            f"{cfg.label}: {cfg.prefix}SSLMODE=require: the IAM token goes to an unverified server"
        )
    return None
