"""The pymongo clients behind ``get_mongo()``: credentials, options, the login and its failures.

What :class:`iamdb._mongo.handle.MongoHandle` does for each client, in the order it does it:
take credentials (:func:`fetch_lease`: AssumeRole, or the execution role's own), make a client
with iamdb's Lambda defaults (:func:`client_options`, :func:`new_client`), log one socket in
and map a failure to iamdb's errors (:func:`open_client`, :func:`login_failure`), and notice a
server refusing a later login (:func:`login_refused`). The SQL twin is :mod:`iamdb._sql.pg`.
:func:`connection_string` writes the same rules into a URI for people (``python -m iamdb
mongo-uri``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import quote

from iamdb._aws.sts import Lease, assume_role
from iamdb._mongo import aws as _mongo_aws
from iamdb._mongo.uri import EXTERNAL, MECHANISM, documentdb_options, split_query
from iamdb.errors import AuthError, ConfigError, ConnectError, _detached

Until = tuple[Callable[[], float], float]  # a clock and a deadline on it
E = TypeVar("E", AuthError, ConnectError)

if TYPE_CHECKING:
    from pymongo import MongoClient

    from iamdb._aws.chain import CredentialResolver
    from iamdb._aws.client import AwsClient
    from iamdb._aws.credentials import Credentials
    from iamdb._core.runtime import Runtime
    from iamdb._mongo.config import MongoConfig


# Lambda-fit defaults, each overridable by the same option in the URI (case-insensitive).
DEFAULTS: dict[str, Any] = {
    "maxPoolSize": 4,  # one invocation at a time: a few sockets are plenty
    "maxIdleTimeMS": 60_000,  # MongoDB's advice for Lambda
    "serverSelectionTimeoutMS": 5_000,  # fail within a Lambda timeout, not after 30 s
    "connectTimeoutMS": 5_000,
}


# -- credentials -------------------------------------------------------------------------


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
    return assume_role(
        sources.aws,
        sources.runtime,
        cfg.role_arn,
        duration_seconds=cfg.session_seconds,
        external_id=cfg.external_id,
        deadline=deadline,
    )


# -- the client ---------------------------------------------------------------------------


def client_options(cfg: MongoConfig, credentials: Credentials) -> dict[str, Any]:
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
        kwargs["appname"] = cfg.client_name
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


def open_client(cfg: MongoConfig, lease: Lease, until: Until) -> MongoClient[Any]:
    """Create a client for ``lease`` and log one socket in (``ping``) by ``until``'s deadline
    (pymongo's client-side operation timeout bounds server selection, the connect, TLS and the
    login), mapping failures.

    Secrets are built into the call, never kept in a local, and errors are raised outside
    ``except``, so neither this frame (what a crash reporter captures) nor a ``__context__``
    holds the credentials.
    """
    import pymongo

    client: MongoClient[Any] = new_client("MongoClient", cfg, lease)
    try:
        with pymongo.timeout(_left(until)):
            client.admin.command("ping")
    except BaseException as exc:
        failure = login_failure(cfg, lease, exc)
    else:
        return client
    close_soon(client)
    del client  # its init arguments hold the credentials
    raise failure  # made, not raised, in the except: it carries no __context__


def close_soon(client: Any) -> None:
    """Close a client that failed to log in without waiting for it: pymongo's ``close()`` waits
    for its monitor threads (up to half a second), time the caller's deadline does not have."""
    import threading

    threading.Thread(target=client.close, name="iamdb-mongo-close", daemon=True).start()


def check_client(client: Any, until: Until) -> str | None:
    """None when the server answers a ``ping`` by the deadline, else why not. A ping that fails
    makes pymongo drop the server's pooled sockets, so a second one connects anew: a socket
    that died while the environment was frozen costs one reconnect, not the invocation."""
    import pymongo

    problem = "no time left"
    for _ in range(2):
        if until[1] - until[0]() <= 0:
            break
        try:
            with pymongo.timeout(_left(until)):
                client.admin.command("ping")
        except Exception as exc:  # pymongo's errors: the message names hosts, never secrets
            problem = f"{type(exc).__name__}: {_short(exc)}"
        else:
            return None
    return problem


def _left(until: Until) -> float:
    """Seconds left before the deadline, as pymongo's timeout takes them (more than 0)."""
    return max(0.001, until[1] - until[0]())


def new_client(
    kind: Literal["MongoClient", "AsyncMongoClient"], cfg: MongoConfig, lease: Lease
) -> Any:
    """``pymongo.<kind>`` for ``lease``, not connected yet; ConfigError when pymongo refuses
    the options."""
    from iamdb._core.deps import requires

    with requires("mongo", cfg.prefix + "URI"):
        import pymongo
        from pymongo import errors
    if not _mongo_aws.install():  # the application imported pymongo-auth-aws (botocore) itself
        from iamdb._aws import (
            redact as _redact,  # on this path only: compiling its patterns costs ~5 ms
        )

        _redact.install()  # its botocore DEBUG logs would show the session token
    try:
        return getattr(pymongo, kind)(
            cfg.uri,
            connect=False,
            event_listeners=[_refusal_watch()],
            **client_options(cfg, lease.credentials),
        )
    except (errors.ConfigurationError, ValueError, TypeError) as exc:  # load_mongo_config's gap
        problem = f"{exc}"[:300]
    raise ConfigError(cfg.prefix + "URI", f"pymongo refuses it: {problem}")


def login_failure(cfg: MongoConfig, lease: Lease, exc: BaseException) -> BaseException:
    """What a failed first login (``ping``) raises: iamdb's error for any ``Exception`` (a
    refusal, an unreachable server, an answer pymongo could not read), else ``exc`` itself
    (an interrupt, a cancellation) without the traceback whose frames hold the credentials."""
    from pymongo import errors

    hosts = ",".join(cfg.hosts)
    if isinstance(exc, errors.OperationFailure):
        if exc.code == 18:
            return refused(cfg, lease)
        return _at(cfg, AuthError(f"{cfg.label}: MongoDB answered the login with code {exc.code}"))
    if isinstance(exc, errors.PyMongoError):
        return _at(cfg, ConnectError(
            f"{cfg.label}: could not reach {hosts} "
            f"({type(exc).__name__}; tls={'on' if cfg.tls else 'off'}): {_short(exc)}"
        ))  # fmt: skip
    if isinstance(exc, Exception):  # pymongo's own KeyError, TypeError, InvalidBSON...
        return _at(cfg, ConnectError(
            f"{cfg.label}: the answer of {hosts} to the {MECHANISM} login could not be read "
            f"({type(exc).__name__}): is it a MongoDB server (Atlas, Percona, DocumentDB) that "
            "offers MONGODB-AWS?"
        ))  # fmt: skip
    return _detached(exc)


def _at(cfg: MongoConfig, failure: E) -> E:
    """``failure`` saying where the login went (see :mod:`iamdb.errors`)."""
    failure.engine, failure.instance, failure.attempts = "mongo", cfg.label, 1
    failure.host = ",".join(cfg.hosts)
    return failure


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
