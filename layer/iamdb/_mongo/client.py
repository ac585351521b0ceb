"""The pymongo clients behind ``get_mongo()``: credentials, options, the login, the liveness check.

What :class:`iamdb._mongo.handle.MongoHandle` does for each client, in the order it does it:
take credentials (:func:`fetch_lease`: AssumeRole, or the execution role's own), make a client
with iamdb's Lambda defaults (:func:`client_options`, :func:`new_client`), log one socket in by
the deadline (:func:`open_client`; a failure means what :mod:`iamdb._mongo.refusals` says), and
show it answers after a freeze (:func:`check_client`). The SQL twin is :mod:`iamdb._sql.pg`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from iamdb._aws.sts import Lease, assume_role
from iamdb._mongo import aws as _mongo_aws
from iamdb._mongo.documentdb import documentdb_options
from iamdb._mongo.refusals import login_failure, refusal_listener, short
from iamdb._mongo.uri import EXTERNAL, MECHANISM
from iamdb.errors import ConfigError

Until = tuple[Callable[[], float], float]  # a clock and a deadline on it

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


def fetch_lease(
    cfg: MongoConfig,
    deadline: float,
    *,
    aws: AwsClient,
    runtime: Runtime,
    resolver: CredentialResolver,
) -> Lease:
    """Assume ``cfg.role_arn`` with ``aws`` (role authentication), or take the function's own
    credentials from ``resolver``, by ``deadline``."""
    if cfg.role_arn is None:
        return Lease(resolver.resolve(deadline), None, "the execution role")
    return assume_role(
        aws,
        runtime,
        cfg.role_arn,
        duration_seconds=cfg.session_seconds,
        external_id=cfg.external_id,
        deadline=deadline,
        external_id_setting=cfg.prefix + "EXTERNAL_ID",
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
            problem = f"{type(exc).__name__}: {short(exc)}"
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
            event_listeners=[refusal_listener()],
            **client_options(cfg, lease.credentials),
        )
    except (errors.ConfigurationError, ValueError, TypeError) as exc:  # load_mongo_config's gap
        problem = f"{exc}"[:300]
    raise ConfigError(cfg.prefix + "URI", f"pymongo refuses it: {problem}")
