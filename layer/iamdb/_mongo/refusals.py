"""What a MongoDB login's failure means: pymongo's errors classified into :mod:`iamdb.errors`'
types, and a server's refusal of a later socket's login noticed (the SQL twin is
:mod:`iamdb._sql.refusals`).

pymongo fixes a client's credentials for its life; once the server refuses them (code 18: the
role was revoked, its ``$external`` user removed, the credentials expired), every new socket
fails, so the handle must know to assume the role again (:func:`login_refused`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from iamdb._mongo.uri import EXTERNAL, MECHANISM
from iamdb.errors import AuthError, ConnectError, _detached

if TYPE_CHECKING:
    from iamdb._aws.sts import Lease
    from iamdb._mongo.config import MongoConfig


E = TypeVar("E", AuthError, ConnectError)


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
            f"({type(exc).__name__}; tls={'on' if cfg.tls else 'off'}): {short(exc)}"
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


def refusal_listener() -> Any:
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


def short(exc: BaseException) -> str:
    text = str(exc).split(", Timeout:")[0]
    return text[:300]
