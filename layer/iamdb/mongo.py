"""``get_mongo()``: a reused pymongo client that logs in with MONGODB-AWS, refreshed before expiry.

Configuration (``IAMDB_MONGO_*``, or ``IAMDB_MONGO_<NAME>_*`` for ``get_mongo("name")``):

- ``URI``: ``mongodb://`` or ``mongodb+srv://`` with the database in the path; options in
  it are kept and override iamdb's Lambda defaults. No user name or password: nobody
  handles a Mongo password.
- ``ROLE_ARN``: the role to assume; its ARN is the user in ``$external``. Unset: the
  execution role's own credentials log in (its role ARN is then the ``$external`` user).
- ``SESSION_SECONDS`` (900-43200, default 3600), ``REFRESH_SECONDS`` (assume again when
  fewer than this remain, default 300), ``EXTERNAL_ID`` (optional).

Why a swap: pymongo fixes a client's credentials for its whole life, and every socket it
opens after they expired fails to log in (code 18). So when the credentials enter the
refresh window, :meth:`MongoHandle.get` assumes the role again, logs a new client in, and
hands that out from then on. The old client is closed on the next call, not at once, so a
caller still iterating one of its cursors is not broken; it is always closed well before
its credentials expire, so no socket ever authenticates with expired credentials.
"""

from __future__ import annotations

import ipaddress
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

from iamdb import _mongo_aws, redact
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


EXTERNAL = "$external"
MECHANISM = "MONGODB-AWS"
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

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_ROLE_ARN = re.compile(
    r"arn:aws(?:-cn|-us-gov|-iso|-iso-b)?:iam::\d{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}",
    re.ASCII,
)
_EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]{2,1224}", re.ASCII)
_DATABASE = re.compile(r"[^/\\. \"$\x00]{1,63}")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_FORBIDDEN_OPTIONS = {
    "authmechanismproperties": "iamdb passes the session token itself",
    "username": "iamdb logs in with MONGODB-AWS; no user name belongs in the URI",
    "password": "iamdb logs in with MONGODB-AWS; no password belongs in the URI",
}


# -- configuration -----------------------------------------------------------------------


@dataclass(frozen=True)
class MongoConfig:
    """One MongoDB instance: where it is and which AWS identity logs in."""

    name: str | None
    prefix: str  # "IAMDB_MONGO_" or "IAMDB_MONGO_<NAME>_": used in messages
    uri: str
    srv: bool
    hosts: tuple[str, ...]
    database: str
    options: Mapping[str, str] = field(repr=False)  # lower-cased URI option -> value
    role_arn: str | None
    session_seconds: int
    refresh_seconds: int
    external_id: str | None = field(repr=False)

    @property
    def label(self) -> str:
        """``mongo`` or ``mongo:<name>``: how logs and errors name this instance."""
        return "mongo" if self.name is None else f"mongo:{self.name}"

    @property
    def tls(self) -> bool:
        """Whether the client uses TLS: as the URI says, else on unless every host is loopback."""
        for key in ("tls", "ssl"):
            if key in self.options:
                return self.options[key].lower() == "true"
        return self.srv or not all(_is_loopback(h) for h in self.hosts)


def mongo_prefix(name: str | None) -> str:
    """``IAMDB_MONGO_`` for the default instance, ``IAMDB_MONGO_<NAME>_`` for a named one."""
    if name is None:
        return "IAMDB_MONGO_"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            "name", f"expected a letter then up to 31 letters, digits or '_', got {name!r:.40}"
        )
    return f"IAMDB_MONGO_{name.upper()}_"


def load_mongo_config(
    name: str | None = None, environ: Mapping[str, str] | None = None
) -> MongoConfig:
    """Read and validate one instance's ``IAMDB_MONGO_*`` settings (no network)."""
    env = os.environ if environ is None else environ
    p = mongo_prefix(name)
    srv, hosts, database, options = parse_uri(p + "URI", _get(env, p + "URI"))
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
    if role_arn is not None and not (_get(env, "AWS_REGION") or _get(env, "AWS_DEFAULT_REGION")):
        raise ConfigError("AWS_REGION", f"not set: needed to call STS for {p}ROLE_ARN")
    return MongoConfig(
        name=name,
        prefix=p,
        uri=_get(env, p + "URI") or "",
        srv=srv,
        hosts=hosts,
        database=database,
        options=options,
        role_arn=role_arn,
        session_seconds=session,
        refresh_seconds=refresh,
        external_id=external_id,
    )


def parse_uri(var: str, uri: str | None) -> tuple[bool, tuple[str, ...], str, dict[str, str]]:
    """(srv, hosts, database, lower-cased options) of a credential-free MongoDB URI."""
    if uri is None:
        raise ConfigError(var, "is required and not set (mongodb://host/database?options)")
    if not uri.isprintable():  # pymongo ignores an option whose value it cannot read
        raise ConfigError(var, "expected printable characters only (no control characters)")
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in ("mongodb", "mongodb+srv"):
        raise ConfigError(var, "expected a mongodb:// or mongodb+srv:// URI")
    hostpart, slash, tail = rest.partition("/")
    if "@" in hostpart:
        raise ConfigError(
            var, "must not contain a user name or password: iamdb logs in with MONGODB-AWS"
        )
    database, _, query = tail.partition("?")
    if not slash or not _DATABASE.fullmatch(database):
        raise ConfigError(var, "expected the database name in the path: mongodb://host/<database>")
    hosts = tuple(hostpart.split(","))
    for host in hosts:
        if not _valid_hostport(host):
            raise ConfigError(var, f"expected host[:port] entries, got {host!r:.80}")
    srv = scheme == "mongodb+srv"
    if srv and (len(hosts) != 1 or ":" in hosts[0]):
        raise ConfigError(var, "mongodb+srv:// takes exactly one host name and no port")
    try:
        # pymongo also splits options on ';': so must the checks below, or they miss some.
        pairs = parse_qsl(
            query.replace(";", "&"), keep_blank_values=True, strict_parsing=bool(query)
        )
    except ValueError:
        raise ConfigError(var, "malformed options after '?'") from None
    options = {key.lower(): value for key, value in pairs}
    _check_options(var, options, hosts, srv)
    return srv, hosts, database, options


def _check_options(var: str, options: Mapping[str, str], hosts: tuple[str, ...], srv: bool) -> None:
    for key, why in _FORBIDDEN_OPTIONS.items():
        if key in options:
            raise ConfigError(var, f"remove {key}: {why}")
    mechanism = options.get("authmechanism")
    if mechanism is not None and mechanism != MECHANISM:
        raise ConfigError(var, f"authMechanism must be {MECHANISM} (or absent), got {mechanism!r}")
    source = options.get("authsource")
    if source is not None and source != EXTERNAL:
        raise ConfigError(var, f"authSource must be {EXTERNAL} (or absent), got {source!r:.40}")
    for key in ("tls", "ssl"):
        value = options.get(key)
        if value is None:
            continue
        if value not in ("true", "false"):  # pymongo warns and ignores any other: TLS off
            raise ConfigError(var, f"{key} must be 'true' or 'false', got {value!r:.20}")
        if value == "false" and (srv or not all(_is_loopback(h) for h in hosts)):
            raise ConfigError(
                var, f"{key}=false: TLS is required for every host that is not loopback"
            )
    if options.get("tlsinsecure", "").lower() == "true":
        raise ConfigError(var, "tlsInsecure=true would send the login to an unverified server")


def _valid_hostport(entry: str) -> bool:
    if entry.startswith("["):  # [ipv6]:port
        addr, _, port = entry[1:].partition("]")
        host_ok = _is_ip(addr)
        port = port[1:] if port.startswith(":") else port
    else:
        host, _, port = entry.partition(":")
        host_ok = bool(_HOST.fullmatch(host)) or _is_ip(host)
    return host_ok and (port == "" or (_digits(port, 5) and 1 <= int(port) <= 65535))


def _digits(text: str, most: int) -> bool:
    """1 to ``most`` ASCII digits (``str.isdigit`` admits '²', which ``int`` refuses)."""
    return text.isascii() and text.isdigit() and len(text) <= most


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return "%" not in text  # no IPv6 scope id: it admits any text
    except ValueError:
        return False


def _is_loopback(entry: str) -> bool:
    host = entry[1:].partition("]")[0] if entry.startswith("[") else entry.partition(":")[0]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _get(env: Mapping[str, str], var: str) -> str | None:
    value = env.get(var)
    return value.strip() if value is not None and value.strip() else None


def _int(env: Mapping[str, str], var: str, default: int, low: int, high: int) -> int:
    value = _get(env, var)
    if value is None:
        return default
    if not _digits(value, 9) or not low <= int(value) <= high:
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
    """
    kwargs: dict[str, Any] = {
        key: value for key, value in DEFAULTS.items() if key.lower() not in cfg.options
    }
    if "appname" not in cfg.options:
        kwargs["appname"] = function_name or "iamdb"
    if "tls" not in cfg.options and "ssl" not in cfg.options and cfg.tls:
        kwargs["tls"] = True
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


def open_client(cfg: MongoConfig, lease: Lease, environ: Mapping[str, str]) -> MongoClient[Any]:
    """Create a client for ``lease`` and log one socket in (``ping``), mapping failures."""
    try:
        import pymongo
        from pymongo import errors
    except ImportError:
        raise ConfigError(cfg.prefix + "URI", "pymongo is not installed (iamdb[mongo])") from None
    if not _mongo_aws.install():  # the application imported pymongo-auth-aws (botocore) itself
        redact.install()  # its botocore DEBUG logs would show the session token
    kwargs = client_options(cfg, lease.credentials, environ.get("AWS_LAMBDA_FUNCTION_NAME"))
    kwargs["event_listeners"] = [_refusal_watch()]
    try:
        client: MongoClient[Any] = pymongo.MongoClient(cfg.uri, connect=False, **kwargs)
    except errors.ConfigurationError as exc:
        raise ConfigError(cfg.prefix + "URI", str(exc)) from None
    try:
        client.admin.command("ping")
    except errors.OperationFailure as exc:
        client.close()
        if exc.code == 18:
            raise refused(cfg, lease) from None
        raise AuthError(f"{cfg.label}: MongoDB answered the login with code {exc.code}") from None
    except errors.PyMongoError as exc:
        client.close()
        raise ConnectError(
            f"{cfg.label}: could not reach {','.join(cfg.hosts)} "
            f"({type(exc).__name__}; tls={'on' if cfg.tls else 'off'}): {_short(exc)}"
        ) from None
    except BaseException:
        client.close()
        raise
    return client


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
        "(Atlas: Database Access > AWS IAM; Percona: db.getSiblingDB('$external').createUser), "
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
        opener: Callable[[MongoConfig, Lease, Mapping[str, str]], MongoClient[Any]] = open_client,
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
                client = self._opener(self.cfg, lease, self._sources.runtime.environ)
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
        for part in query.split("&")
        if part and part.split("=", 1)[0].lower() not in ("authmechanism", "authsource")
    ]
    options = [*kept, f"authMechanism={MECHANISM}", "authSource=%24external"]
    if "tls" not in cfg.options and "ssl" not in cfg.options and cfg.tls and not cfg.srv:
        options.append("tls=true")
    if creds.token:
        options.append("authMechanismProperties=AWS_SESSION_TOKEN:" + quote(creds.token, safe=""))
    userinfo = f"{quote(creds.access_key, safe='')}:{quote(creds.secret_key, safe='')}"
    return f"{scheme}://{userinfo}@{hostpart}/{database}?{'&'.join(options)}"
