"""``get_mongo()``: a reused pymongo client that logs in with MONGODB-AWS, refreshed before expiry.

Configuration (``IAMDB_MONGO_*``, or ``IAMDB_MONGO_<NAME>_*`` for ``get_mongo("name")``):

- ``URI``: ``mongodb://`` or ``mongodb+srv://`` with the database in the path; options in
  it are kept and override iamdb's Lambda defaults. No user name or password: nobody
  handles a Mongo password. Checked by pymongo's parser and iamdb's TLS rules at
  configuration time (:mod:`iamdb._mongo_uri`).
- ``ROLE_ARN``: the role to assume; its ARN is the user in ``$external``. Unset: the
  execution role's own credentials log in (its role ARN is then the ``$external`` user).
- ``SESSION_SECONDS`` (900-43200, default 3600), ``REFRESH_SECONDS`` (assume again when
  fewer than this remain, default 300), ``EXTERNAL_ID`` (optional).

Amazon DocumentDB endpoints get the bundled RDS CA bundle and ``retryWrites=false`` unless
the URI sets them (:func:`iamdb._mongo_uri.documentdb_options`).

Credentials are renewed and the client swapped before they expire by
:class:`iamdb._mongo_handle.MongoHandle`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from iamdb import _mongo_aws, _redact
from iamdb._checks import instance_name, is_region, settings_environ
from iamdb._credentials import CredentialResolver, Credentials
from iamdb._mongo_uri import EXTERNAL, MECHANISM, documentdb_options, parse_uri, split_query
from iamdb._sts import assume_role
from iamdb.errors import AuthError, ConfigError, ConnectError, IamDbError

if TYPE_CHECKING:
    from pymongo import MongoClient

    from iamdb._aws import AwsClient
    from iamdb._runtime import Runtime


# Lambda-fit defaults, each overridable by the same option in the URI (case-insensitive).
DEFAULTS: dict[str, Any] = {
    "maxPoolSize": 4,  # one invocation at a time: a few sockets are plenty
    "maxIdleTimeMS": 60_000,  # MongoDB's advice for Lambda
    "serverSelectionTimeoutMS": 5_000,  # fail within a Lambda timeout, not after 30 s
    "connectTimeoutMS": 5_000,
}

# What load_mongo_config reads after the instance's prefix (instance names must not collide).
MONGO_SUFFIXES = ("URI", "ROLE_ARN", "SESSION_SECONDS", "REFRESH_SECONDS", "EXTERNAL_ID")
_ROLE_ARN = re.compile(
    r"arn:aws(?:-cn|-us-gov|-iso|-iso-b)?:iam::\d{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}",
    re.ASCII,
)
_EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]{2,1224}", re.ASCII)


# -- configuration -----------------------------------------------------------------------


@dataclass(frozen=True)
class MongoConfig:
    """One MongoDB instance: where it is and which AWS identity logs in."""

    name: str | None  # lower case: names are case-insensitive
    prefix: str  # "IAMDB_MONGO_" or "IAMDB_MONGO_<NAME>_": used in messages
    uri: str
    srv: bool
    hosts: tuple[str, ...]
    database: str
    options: Mapping[str, Any] = field(repr=False)  # pymongo's reading, lower-case names
    tls: bool  # on unless the URI says tls=false (then: one loopback host, direct)
    role_arn: str | None
    session_seconds: int
    refresh_seconds: int
    external_id: str | None = field(repr=False)
    documentdb: bool = False  # Amazon DocumentDB endpoints: see documentdb_options

    @property
    def label(self) -> str:
        """``mongo`` or ``mongo:<name>``: how logs and errors name this instance."""
        return "mongo" if self.name is None else f"mongo:{self.name}"


def mongo_prefix(name: str | None) -> str:
    """``IAMDB_MONGO_`` for the default instance, ``IAMDB_MONGO_<NAME>_`` for a named one."""
    if name is None:
        return "IAMDB_MONGO_"
    return f"IAMDB_MONGO_{instance_name(name, MONGO_SUFFIXES).upper()}_"


def load_mongo_config(
    name: str | None = None, environ: Mapping[str, str] | None = None
) -> MongoConfig:
    """Read and validate one instance's ``IAMDB_MONGO_*`` settings (no network).

    Imports pymongo's URI parser: the URI is checked as pymongo will read it.
    """
    env = settings_environ(environ)
    p = mongo_prefix(name)
    uri = parse_uri(p + "URI", _get(env, p + "URI"))
    role_arn = _get(env, p + "ROLE_ARN")
    if role_arn is not None and not _ROLE_ARN.fullmatch(role_arn):
        raise ConfigError(
            p + "ROLE_ARN",
            f"expected a role ARN like arn:aws:iam::123456789012:role/MongoAccess, "
            f"got {role_arn!r:.120}",
        )
    session = _int(env, p + "SESSION_SECONDS", 3600, 900, 43200)
    refresh = _int(env, p + "REFRESH_SECONDS", 300, 30, 43200)
    if refresh > session - 300:
        raise ConfigError(
            p + "REFRESH_SECONDS",
            f"expected at most {p}SESSION_SECONDS - 300 = {session - 300}, got {refresh}: "
            "credentials would be renewed on (almost) every call",
        )
    external_id = _get(env, p + "EXTERNAL_ID")
    if external_id is not None:
        if role_arn is None:
            raise ConfigError(p + "EXTERNAL_ID", f"set but {p}ROLE_ARN is not")
        if not _EXTERNAL_ID.fullmatch(external_id):
            raise ConfigError(
                p + "EXTERNAL_ID", "expected 2-1224 characters of letters, digits and +=,.@:/-_"
            )
    if role_arn is not None:
        _sts_region(env, p + "ROLE_ARN")
    return MongoConfig(
        name=None if name is None else instance_name(name, MONGO_SUFFIXES),
        prefix=p,
        uri=_get(env, p + "URI") or "",
        srv=uri.srv,
        hosts=uri.hosts,
        database=uri.database,
        options=uri.options,
        tls=uri.tls,
        role_arn=role_arn,
        session_seconds=session,
        refresh_seconds=refresh,
        external_id=external_id,
        documentdb=uri.documentdb,
    )


def _sts_region(env: Mapping[str, str], role_var: str) -> None:
    """STS is called on the regional endpoint of ``AWS_REGION`` (else ``AWS_DEFAULT_REGION``)."""
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        region = _get(env, var)
        if region is not None:
            if not is_region(region):
                raise ConfigError(
                    var, f"expected an AWS region such as 'us-east-1', got {region!r:.40}"
                )
            return
    raise ConfigError("AWS_REGION", f"not set: needed to call STS for {role_var}")


def _get(env: Mapping[str, str], var: str) -> str | None:
    value = env.get(var)
    return value.strip() if value is not None and value.strip() else None


def _int(env: Mapping[str, str], var: str, default: int, low: int, high: int) -> int:
    value = _get(env, var)
    if value is None:
        return default
    # 1 to 9 ASCII digits (str.isdigit admits '²', which int refuses, and other scripts' digits)
    digits = value.isascii() and value.isdigit() and len(value) <= 9
    if not digits or not low <= int(value) <= high:
        raise ConfigError(var, f"expected an integer from {low} to {high}, got {value!r:.40}")
    return int(value)


# -- credentials -------------------------------------------------------------------------


@dataclass(frozen=True)
class Lease:
    """Credentials for one client and when they stop working (None: not known to expire)."""

    credentials: Credentials = field(repr=False)
    expires_at: float | None
    principal: str  # what the server will see: the role ARN, or "the execution role"

    def left(self, now: float) -> float:
        return float("inf") if self.expires_at is None else self.expires_at - now


@dataclass(frozen=True)
class Sources:
    """Where one registry's Mongo credentials come from: its AWS client, runtime, resolver."""

    aws: AwsClient
    runtime: Runtime
    resolver: CredentialResolver
    environ: Mapping[str, str] | None = None  # what the opener reads; None: os.environ


def fetch_lease(cfg: MongoConfig, sources: Sources, deadline: float) -> Lease:
    """Assume ``cfg.role_arn`` (role authentication) or take the function's own credentials."""
    if cfg.role_arn is None:
        return Lease(sources.resolver.resolve(deadline), None, "the execution role")
    assumed = assume_role(
        sources.aws,
        sources.runtime,
        cfg.role_arn,
        duration_seconds=cfg.session_seconds,
        external_id=cfg.external_id,
        deadline=deadline,
    )
    return Lease(assumed.credentials, assumed.expires_at, cfg.role_arn)


# -- the client ---------------------------------------------------------------------------


def client_options(
    cfg: MongoConfig, credentials: Credentials, function_name: str | None
) -> dict[str, Any]:
    """Keyword arguments for ``MongoClient(cfg.uri, **kwargs)``.

    Lambda defaults are added only for options the URI does not set (pymongo lets keyword
    arguments win over the URI, so a default given for a URI option would override it).
    TLS is explicit; without it, the connection is direct: plaintext reaches only the one
    loopback host of the URI, never members a server names.
    """
    options = cfg.options
    kwargs: dict[str, Any] = {
        key: value for key, value in DEFAULTS.items() if key.lower() not in options
    }
    if "maxPoolSize" in kwargs:  # pymongo refuses a minPoolSize above maxPoolSize
        kwargs["maxPoolSize"] = max(DEFAULTS["maxPoolSize"], options.get("minpoolsize", 0))
    if "appname" not in options:
        kwargs["appname"] = function_name or "iamdb"
    if "tls" not in options:
        kwargs["tls"] = cfg.tls
    if not cfg.tls and "directconnection" not in options:
        kwargs["directConnection"] = True
    if cfg.documentdb:
        kwargs.update(documentdb_options(options))
    kwargs.update(
        username=credentials.access_key,
        password=credentials.secret_key,
        authMechanism=MECHANISM,
        authSource=EXTERNAL,
    )
    if credentials.token:
        # A dict, not the URI form: session tokens hold '/', '+' and '=' that URI parsing mangles.
        kwargs["authMechanismProperties"] = {"AWS_SESSION_TOKEN": credentials.token}
    return kwargs


def open_client(
    cfg: MongoConfig, lease: Lease, environ: Mapping[str, str] | None
) -> MongoClient[Any]:
    """Create a client for ``lease`` and log one socket in (``ping``), mapping failures.

    Secrets are built into the call, never kept in a local, and errors are raised outside
    ``except``, so neither this frame (what a crash reporter captures) nor a ``__context__``
    holds the credentials.
    """
    client: MongoClient[Any] = new_client("MongoClient", cfg, lease, environ)
    failure: IamDbError | None = None
    try:
        client.admin.command("ping")
    except BaseException as exc:
        failure = login_failure(cfg, lease, exc)
        if failure is None:
            client.close()
            raise
    if failure is None:
        return client
    client.close()
    del client  # its init arguments hold the credentials
    raise failure  # made, not raised, in the except: it carries no __context__


def new_client(
    kind: Literal["MongoClient", "AsyncMongoClient"],
    cfg: MongoConfig,
    lease: Lease,
    environ: Mapping[str, str] | None,
) -> Any:
    """``pymongo.<kind>`` for ``lease``, not connected yet; ConfigError when pymongo refuses
    the options. ``environ`` (None: ``os.environ``) gives the function name."""
    from iamdb._errors import requires

    with requires("mongo", cfg.prefix + "URI"):
        import pymongo
        from pymongo import errors
    if not _mongo_aws.install():  # the application imported pymongo-auth-aws (botocore) itself
        _redact.install()  # its botocore DEBUG logs would show the session token
    function_name = (os.environ if environ is None else environ).get("AWS_LAMBDA_FUNCTION_NAME")
    try:
        return getattr(pymongo, kind)(
            cfg.uri,
            connect=False,
            event_listeners=[_refusal_watch()],
            **client_options(cfg, lease.credentials, function_name),
        )
    except (errors.ConfigurationError, ValueError, TypeError) as exc:  # load_mongo_config's gap
        problem = f"{exc}"[:300]
    raise ConfigError(cfg.prefix + "URI", f"pymongo refuses it: {problem}")


def login_failure(cfg: MongoConfig, lease: Lease, exc: BaseException) -> IamDbError | None:
    """The iamdb error for a failed first login (``ping``), or None when ``exc`` is not
    pymongo's (it is then the caller's to re-raise)."""
    from pymongo import errors

    if isinstance(exc, errors.OperationFailure):
        if exc.code == 18:
            return refused(cfg, lease)
        return AuthError(
            f"{cfg.label}: MongoDB answered the login with code {exc.code}",
            engine="mongo",
            instance=cfg.label,
            host=",".join(cfg.hosts),
            attempts=1,
        )
    if isinstance(exc, errors.PyMongoError):
        return ConnectError(
            f"{cfg.label}: could not reach {','.join(cfg.hosts)} "
            f"({type(exc).__name__}; tls={'on' if cfg.tls else 'off'}): {_short(exc)}",
            engine="mongo",
            instance=cfg.label,
            host=",".join(cfg.hosts),
            attempts=1,
        )
    return None


def refused(cfg: MongoConfig, lease: Lease) -> AuthError:
    """The AuthError for a server's refusal (code 18) of a MONGODB-AWS login."""
    if cfg.role_arn is not None:
        user = f"a user {cfg.role_arn!r} in the {EXTERNAL} database"
    else:
        user = (
            f"a user in {EXTERNAL} named after the execution role's ARN "
            "(arn:aws:iam::<account>:role/<name>)"
        )
    return AuthError(
        f"{cfg.label}: MongoDB refused the {MECHANISM} login as {lease.principal} "
        f"(access key {lease.credentials.access_key}): the server expects {user} "
        "(Atlas: Database Access > AWS IAM; Percona: db.getSiblingDB('$external').createUser; "
        "DocumentDB: the same with mechanisms: ['MONGODB-AWS']), "
        "and credentials that have not expired",
        engine="mongo",
        instance=cfg.label,
        host=",".join(cfg.hosts),
        attempts=1,
    )


def login_refused(client: Any, watch: Any = None) -> bool:
    """Whether a server refused to log one of ``client``'s sockets in (code 18).

    pymongo records the refusal on the server's description (``topology_description``)
    until the next heartbeat replaces it (``heartbeatFrequencyMS``, 10 s); ``watch``, the
    listener :func:`open_client` registers (see :func:`refusal_watch`), remembers it for the
    client's whole life, so a refusal seen minutes ago (an environment frozen in between)
    still counts. The listener hears of it a moment later than the description shows it,
    hence both.
    """
    if getattr(watch, "refused", False):
        return True
    description = getattr(client, "topology_description", None)
    if description is None:
        return False
    for server in description.server_descriptions().values():
        if getattr(server.error, "code", None) == 18:
            return True
    return False


def refusal_watch(client: Any) -> Any:
    """The refusal listener :func:`open_client` gave ``client``, or None."""
    options = getattr(client, "options", None)
    for listener in getattr(options, "event_listeners", ()):
        if hasattr(listener, "refused"):
            return listener
    return None


def _refusal_watch() -> Any:
    """A pymongo server listener that remembers a refused login (see :func:`login_refused`)."""
    from pymongo.monitoring import ServerListener

    class RefusalWatch(ServerListener):
        refused = False

        def opened(self, event: Any) -> None:
            pass

        def closed(self, event: Any) -> None:
            pass

        def description_changed(self, event: Any) -> None:
            if getattr(event.new_description.error, "code", None) == 18:
                self.refused = True

    return RefusalWatch()


def _short(exc: BaseException) -> str:
    text = str(exc).split(", Timeout:")[0]
    return text[:300]


# -- admin helpers -----------------------------------------------------------------------


def connection_string(cfg: MongoConfig, lease: Lease) -> str:
    """A URI holding ``lease``'s credentials (for Compass or mongosh; secret until expiry)."""
    creds = lease.credentials
    scheme, _, rest = cfg.uri.partition("://")
    hostpart, _, tail = rest.partition("/")
    database, _, query = tail.partition("?")
    kept = [
        part
        for part in split_query(query)
        if part.split("=", 1)[0].lower() not in ("authmechanism", "authsource")
    ]
    options = [*kept, f"authMechanism={MECHANISM}", "authSource=%24external"]
    if "tls" not in cfg.options and not cfg.srv:  # as client_options: TLS explicit, ...
        options.append("tls=true")
    if not cfg.tls and "directconnection" not in cfg.options:  # ... plaintext only direct
        options.append("directConnection=true")
    if cfg.documentdb:  # ... and DocumentDB's CA bundle, no retryable writes
        for key, value in documentdb_options(cfg.options).items():
            options.append(f"{key}={'false' if value is False else quote(str(value), safe='/')}")
    if creds.token:
        options.append("authMechanismProperties=AWS_SESSION_TOKEN:" + quote(creds.token, safe=""))
    userinfo = f"{quote(creds.access_key, safe='')}:{quote(creds.secret_key, safe='')}"
    return f"{scheme}://{userinfo}@{hostpart}/{database}?{'&'.join(options)}"
