"""``iamdb.info()``: what one instance did so far, read without touching the network."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from iamdb._core.env import instance_name
from iamdb._mongo.config import MONGO_SUFFIXES
from iamdb._sql.config import SQL_SUFFIXES
from iamdb._valkey.config import VALKEY_SUFFIXES

if TYPE_CHECKING:
    from iamdb._core.telemetry import Probe
    from iamdb._registry import Registry


@dataclass(frozen=True)
class Info:
    """One instance of one engine, as this process sees it.

    ``reused``: the last ``get_*()`` handed out the connection (or client) it already had.
    ``token_age_seconds``: SQL, the age of the token the server last accepted; MongoDB, of the
    credentials the current client logged in with; Valkey, of the token new connections present.
    ``reauthentications``: Valkey connections re-authenticated before AWS's 12 hours.
    ``last_login``: epoch seconds of the last new connection (None before any). The counts are
    the instance's metrics since the process started (or since ``iamdb.reset()``), kept
    whether or not metrics are emitted. ``idle_limit_seconds``: SQL, after how long idle the
    server closes the connection held now (None: no limit, or none held); ``slot_waits`` and
    ``slot_wait_ms``: logins that waited for a free connection slot, and how long in all.
    """

    engine: str
    name: str | None
    connected: bool
    reused: bool
    token_age_seconds: float | None
    last_login: float | None
    logins: int
    tokens_signed: int
    fail_opens: int
    throttle_wait_ms: float
    reconnects: int
    idle_limit_seconds: int | None = None
    slot_waits: int = 0
    slot_wait_ms: float = 0.0
    reauthentications: int = 0


def describe(registry: Registry, engine: str, name: str | None) -> Info:
    """The :class:`Info` of an instance; an instance never used reads as all zeros."""
    now = registry.runtime.clock()
    if name is not None:
        suffixes = {"mongo": MONGO_SUFFIXES, "valkey": VALKEY_SUFFIXES}.get(engine, SQL_SUFFIXES)
        name = instance_name(name, suffixes)
    if engine == "valkey":
        cache = registry.known_valkey(name)
        if cache is None:
            return _unused(engine, name)
        token = registry.tokens.peek(cache.cfg.target)
        return _info(
            cache.probe,
            engine,
            cache.cfg.name,
            connected=cache.connected,
            reused=cache.reused,
            age=None if token is None else token.age(now),
            last_login=cache.last_login,
        )
    if engine == "mongo":
        handle = registry.known_mongo(name)
        if handle is None:
            return _unused(engine, name)
        return _info(
            handle.probe,
            engine,
            handle.cfg.name,
            connected=handle.lease is not None,
            reused=handle.reused,
            age=None if handle.credentials_since is None else now - handle.credentials_since,
            last_login=handle.last_login,
        )
    managed = registry.known_managed(engine, name)
    if managed is None:
        return _unused(engine, name)
    token = managed.last_token
    info = _info(
        managed.probe,
        engine,
        managed.cfg.name,
        connected=managed.connected,
        reused=managed.reused,
        age=None if token is None else token.age(now),
        last_login=managed.login.last_login,
    )
    return replace(info, idle_limit_seconds=managed.idle_limit)


def _info(
    probe: Probe,
    engine: str,
    name: str | None,
    *,
    connected: bool,
    reused: bool,
    age: float | None,
    last_login: float | None,
) -> Info:
    totals = probe.totals()
    return Info(
        engine=engine,
        name=name,
        connected=connected,
        reused=reused,
        token_age_seconds=age,
        last_login=last_login,
        logins=int(totals.get("ConnectionsOpened", 0)),
        tokens_signed=int(totals.get("TokensSigned", 0)),
        fail_opens=int(totals.get("LimiterFailOpen", 0)),
        throttle_wait_ms=totals.get("ThrottleWaitMs", 0.0),
        reconnects=int(totals.get("Reconnects", 0)),
        slot_waits=int(totals.get("SlotWaits", 0)),
        slot_wait_ms=totals.get("SlotWaitMs", 0.0),
        reauthentications=int(totals.get("Reauthentications", 0)),
    )


def _unused(engine: str, name: str | None) -> Info:
    return Info(engine, name, False, False, None, None, 0, 0, 0, 0.0, 0)
