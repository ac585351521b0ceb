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

Why a swap: pymongo fixes a client's credentials for its whole life, and every socket it
opens after they expired fails to log in (code 18). So when the credentials enter the
refresh window, :meth:`MongoHandle.get` assumes the role again, logs a new client in, and
hands that out from then on. The old client is closed on the next call, not at once, so a
caller still iterating one of its cursors is not broken; it is always closed well before
its credentials expire, so no socket ever authenticates with expired credentials.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from iamdb import _mongo_aws, redact
from iamdb._checks import instance_name, is_region, settings_environ
from iamdb._mongo_uri import EXTERNAL, MECHANISM, documentdb_options, parse_uri, split_query
from iamdb.credentials import CredentialResolver, Credentials
from iamdb.errors import AuthError, ConfigError, ConnectError, IamDbError
from iamdb.log import logger
from iamdb.sts import assume_role
from iamdb.telemetry import Probe

if TYPE_CHECKING:
    from pymongo import MongoClient

    from iamdb._aws import AwsClient
    from iamdb._runtime import Runtime
    from iamdb.limiter import Deadline


# Lambda-fit defaults, each overridable by the same option in the URI (case-insensitive).
DEFAULTS: dict[str, Any] = {
    "maxPoolSize": 4,  # one invocation at a time: a few sockets are plenty
    "maxIdleTimeMS": 60_000,  # MongoDB's advice for Lambda
    "serverSelectionTimeoutMS": 5_000,  # fail within a Lambda timeout, not after 30 s
    "connectTimeoutMS": 5_000,
}
# Keep a retired client's credentials at least this far from expiry; a failed refresh
# falls back to the current client only while it has this much left.
MIN_LEFT_SECONDS = 60.0
_RETRY_REFRESH_SECONDS = 10.0
_CONNECT_SECONDS = 5.0  # waits for credentials end by twice this without a Lambda context

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

    ``environ`` (None: ``os.environ``) gives the function name. Secrets are built into the
    call, never kept in a local, and errors are raised outside ``except``, so neither this
    frame (what a crash reporter captures) nor a ``__context__`` holds the credentials.
    """
    try:
        import pymongo
        from pymongo import errors
    except ImportError:
        raise ConfigError(cfg.prefix + "URI", "pymongo is not installed (iamdb[mongo])") from None
    if not _mongo_aws.install():  # the application imported pymongo-auth-aws (botocore) itself
        redact.install()  # its botocore DEBUG logs would show the session token
    function_name = (os.environ if environ is None else environ).get("AWS_LAMBDA_FUNCTION_NAME")
    try:
        client: MongoClient[Any] = pymongo.MongoClient(
            cfg.uri,
            connect=False,
            event_listeners=[_refusal_watch()],
            **client_options(cfg, lease.credentials, function_name),
        )
    except (errors.ConfigurationError, ValueError, TypeError) as exc:  # load_mongo_config's gap
        problem = f"{exc}"[:300]
    else:
        failure = _first_login(cfg, lease, client)
        if failure is None:
            return client
        del client  # closed; its init arguments hold the credentials
        raise failure
    raise ConfigError(cfg.prefix + "URI", f"pymongo refuses it: {problem}")


def _first_login(cfg: MongoConfig, lease: Lease, client: MongoClient[Any]) -> IamDbError | None:
    """None when ``client`` logged a socket in; else the error (``client`` is then closed)."""
    from pymongo import errors

    failure: IamDbError
    try:
        client.admin.command("ping")
        return None
    except errors.OperationFailure as exc:
        if exc.code == 18:
            failure = refused(cfg, lease)
        else:
            failure = AuthError(f"{cfg.label}: MongoDB answered the login with code {exc.code}")
    except errors.PyMongoError as exc:
        failure = ConnectError(
            f"{cfg.label}: could not reach {','.join(cfg.hosts)} "
            f"({type(exc).__name__}; tls={'on' if cfg.tls else 'off'}): {_short(exc)}"
        )
    except BaseException:
        client.close()
        raise
    client.close()
    return failure  # made, not raised, in the except: it carries no __context__


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
        "and credentials that have not expired"
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


class MongoHandle:
    """One instance's client: created on first use, swapped before its credentials expire."""

    def __init__(
        self,
        cfg: MongoConfig,
        *,
        sources: Sources,
        deadline: Deadline,
        probe: Probe,
        opener: Callable[
            [MongoConfig, Lease, Mapping[str, str] | None], MongoClient[Any]
        ] = open_client,
    ) -> None:
        self.cfg = cfg
        self.probe = probe  # metrics and subsegments
        self._sources = sources
        self._deadline = deadline
        self._clock = sources.runtime.clock
        self._opener = opener
        self._lock = threading.Lock()
        self._client: MongoClient[Any] | None = None
        self._lease: Lease | None = None
        self._renew_at = 0.0  # when get() must take the slow path
        self._retired: list[tuple[MongoClient[Any], Lease]] = []
        self._watch: Any = None  # the current client's refusal listener (see login_refused)
        self.swaps = 0  # clients replaced because their credentials were due

    def fresh_lease(self) -> Lease:
        """New credentials for this instance, not used by this handle (the admin helpers)."""
        return fetch_lease(self.cfg, self._sources, self._deadline.at(_CONNECT_SECONDS))

    @property
    def lease(self) -> Lease | None:
        """The current client's credentials (never printed: the repr hides secrets)."""
        return self._lease

    def get(self) -> MongoClient[Any]:
        """The current client; assumes again and swaps when the credentials are due."""
        client = self._client
        if (
            client is not None
            and not self._retired
            and self._valid(self._clock())
            and not login_refused(client, self._watch)
        ):
            return client
        with self._lock:
            return self._get_locked()

    def close(self) -> None:
        """Close every client this handle made (tests, snapshots, reset)."""
        with self._lock:
            clients = list(self._retired)
            if self._client is not None and self._lease is not None:
                clients.append((self._client, self._lease))
            self._client, self._lease, self._retired, self._renew_at = None, None, [], 0.0
            self._watch = None
        for client, lease in clients:
            self._close_client(client, lease)

    def _get_locked(self) -> MongoClient[Any]:
        self._close_retired()
        now = self._clock()
        client, lease = self._client, self._lease
        refused_now = client is not None and login_refused(client, self._watch)
        if client is not None and lease is not None and self._valid(now) and not refused_now:
            return client
        if refused_now:
            # The role was revoked or its user removed: assume again once (new credentials
            # may be accepted); if the server refuses those too, the caller gets AuthError.
            logger.warning(
                "%s: MongoDB refused a new login; assuming the role again", self.cfg.label
            )
            self.probe.count("AuthFailures")
            self.probe.count("AuthRetries")
        try:
            return self._swap(now)
        except IamDbError as exc:
            if (
                not refused_now
                and client is not None
                and lease is not None
                and lease.left(now) > MIN_LEFT_SECONDS
            ):
                logger.warning(
                    "%s: renewing credentials failed (%s: %s); keeping the current client, "
                    "%.0f s of validity left",
                    self.cfg.label,
                    type(exc).__name__,
                    exc,
                    lease.left(now),
                )
                self._renew_at = now + _RETRY_REFRESH_SECONDS
                return client
            raise

    def _swap(self, now: float) -> MongoClient[Any]:
        with self.probe.span("credentials"):
            lease = fetch_lease(self.cfg, self._sources, self._deadline.at(_CONNECT_SECONDS))
        if self.cfg.role_arn is not None:
            self.probe.count("CredentialRefreshes")
        left = lease.left(now)
        if left <= self.cfg.refresh_seconds:
            raise AuthError(
                f"{self.cfg.label}: STS issued credentials for {lease.principal} that expire in "
                f"{left:.0f} s, within {self.cfg.prefix}REFRESH_SECONDS={self.cfg.refresh_seconds}"
            )
        try:
            with self.probe.span("connect"):
                client = self._opener(self.cfg, lease, self._sources.environ)
        except AuthError:
            self.probe.count("AuthFailures")
            raise
        self.probe.count("ConnectionsOpened")
        old, old_lease = self._client, self._lease
        if old is not None and old_lease is not None:
            self._retired.append((old, old_lease))  # closed on the next call: maybe mid-cursor
            self.swaps += 1
        self._client, self._lease, self._watch = client, lease, refusal_watch(client)
        self._renew_at = now + left - self.cfg.refresh_seconds
        logger.info(
            "%s: logged in to %s as %s (access key %s%s)",
            self.cfg.label,
            ",".join(self.cfg.hosts),
            lease.principal,
            lease.credentials.access_key,
            "" if lease.expires_at is None else f", credentials expire in {left:.0f} s",
        )
        return client

    def _valid(self, now: float) -> bool:
        """Whether the current client may be handed out as it is."""
        return now < self._renew_at and (self.cfg.role_arn is not None or self._same_credentials())

    def _same_credentials(self) -> bool:
        lease = self._lease
        try:
            return lease is not None and self._sources.resolver.resolve() == lease.credentials
        except IamDbError:
            return False

    def _close_retired(self) -> None:
        retired, self._retired = self._retired, []
        for client, lease in retired:
            self._close_client(client, lease)

    def _close_client(self, client: MongoClient[Any], lease: Lease) -> None:
        """Close ``client``; without ``endSessions`` when its credentials are (nearly) expired.

        ``MongoClient.close()`` sends ``endSessions``, which opens a new socket when the idle
        ones were dropped (``maxIdleTimeMS``): with expired credentials that login would fail.
        Sessions not ended expire on the server by themselves (30 minutes).
        """
        try:
            if lease.left(self._clock()) <= MIN_LEFT_SECONDS:
                topology = getattr(client, "_topology", None)
                if topology is not None:
                    topology.pop_all_sessions()
            client.close()
        except Exception as exc:  # closing must never break the caller
            logger.info("%s: closing a retired client: %s", self.cfg.label, exc)


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
