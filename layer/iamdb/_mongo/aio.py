"""``iamdb.aio.get_mongo()``: an ``AsyncMongoClient`` per event loop, on the instance's credentials.

The credentials are the blocking singleton's (:class:`~iamdb._mongo.handle.MongoHandle`): one
AssumeRole serves ``get_mongo()`` and every loop's client, and the renewal and swap rules are
that handle's :meth:`~iamdb._mongo.handle.MongoHandle.steps`, run here with awaits (AssumeRole
in a worker thread). A new loop (``asyncio.run()`` per invocation) costs a new client and a
MONGODB-AWS login, not a new AssumeRole.

An ``AsyncMongoClient`` belongs to its loop: its sockets are that loop's transports and its
monitors that loop's tasks, so it can only be closed while that loop runs. asyncio.run()'s
shutdown does it (see :mod:`iamdb._sql.aio`); a loop closed without that shutdown leaves the client
behind, and iamdb can only say so (pymongo then warns about it when it is collected).
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from iamdb._core.log import logger
from iamdb._core.loops import PerLoop
from iamdb._core.steps import run_async
from iamdb._mongo.client import Until, new_client
from iamdb._mongo.handle import MongoHandle
from iamdb._mongo.refusals import login_failure
from iamdb._mongo.runner import CheckClient, Clients, CloseClient, Held, MongoStep, OpenClient
from iamdb.errors import ConfigError, IamDbError

if TYPE_CHECKING:
    from pymongo import AsyncMongoClient

    from iamdb._aws.sts import Lease
    from iamdb._core.telemetry import Probe
    from iamdb._mongo.config import MongoConfig

# 4.13 made the asyncio API stable; 4.13.2 stopped new connections blocking the event loop.
MIN_PYMONGO = (4, 13, 2)


async def open_client(cfg: MongoConfig, lease: Lease, until: Until) -> AsyncMongoClient[Any]:
    """:func:`iamdb._mongo.client.open_client` for asyncio: an ``AsyncMongoClient`` with one socket
    logged in by the deadline, failures mapped the same way (and raised outside ``except``)."""
    import pymongo

    client: AsyncMongoClient[Any] = new_client("AsyncMongoClient", cfg, lease)
    try:
        with pymongo.timeout(max(0.001, until[1] - until[0]())):
            await client.admin.command("ping")
    except BaseException as exc:
        failure = login_failure(cfg, lease, exc)
    else:
        return client
    await client.close()
    del client  # its init arguments hold the credentials
    raise failure


async def check_client(client: Any, until: Until) -> str | None:
    """:func:`iamdb._mongo.client.check_client` for asyncio. The event loop runs once first: a
    loop that has not run since the environment thawed has not yet seen its sockets' closes,
    and pymongo's async pool judges a pooled socket by that."""
    import pymongo

    await asyncio.sleep(0)
    problem = "no time left"
    for _ in range(2):
        if until[1] - until[0]() <= 0:
            break
        try:
            with pymongo.timeout(max(0.001, until[1] - until[0]())):
                await client.admin.command("ping")
        except Exception as exc:  # pymongo's errors: the message names hosts, never secrets
            problem = f"{type(exc).__name__}: {str(exc)[:200]}"
        else:
            return None
    return problem


class _MongoSlot:
    """One event loop's clients of an instance."""

    def __init__(self, owner: AsyncMongoHandle) -> None:
        self.lock = asyncio.Lock()
        self.clients = Clients()
        self.loop = asyncio.get_running_loop()
        self._owner = owner

    async def aclose(self) -> None:
        async with self.lock:
            clients, self.clients = self.clients, Clients()
            for held in clients.all():
                await self._owner.close_client(held)

    def discard(self) -> None:
        if not self.loop.is_closed():
            return  # closed on its loop: at the next call there, or at its shutdown
        clients, self.clients = self.clients, Clients()
        if clients.all():
            logger.warning(
                "%s: an event loop was closed without shutting down its async generators, so "
                "its AsyncMongoClient could not be closed; run handlers with asyncio.run() (or "
                "call loop.run_until_complete(loop.shutdown_asyncgens()) before loop.close())",
                self._owner.cfg.label,
            )


class AsyncMongoHandle:
    """An instance's ``AsyncMongoClient`` on each event loop, on its MongoHandle's credentials."""

    def __init__(self, handle: MongoHandle) -> None:
        import pymongo  # the configuration was read: pymongo is there

        if tuple(pymongo.version_tuple[:3]) < MIN_PYMONGO:
            raise ConfigError(
                handle.cfg.prefix + "URI",
                f"iamdb.aio.get_mongo() needs pymongo >= {'.'.join(map(str, MIN_PYMONGO))} "
                f"(its stable asyncio API), found {pymongo.version}: pip install 'iamdb[aio]'",
            )
        self.handle = handle
        self._loops = PerLoop(lambda: _MongoSlot(self))

    @property
    def cfg(self) -> MongoConfig:
        return self.handle.cfg

    @property
    def probe(self) -> Probe:
        return self.handle.probe

    async def get(self) -> AsyncMongoClient[Any]:
        """The running loop's client; assumes again and swaps when the credentials are due."""
        slot = await self._loops.slot()
        client: AsyncMongoClient[Any] | None = self.handle.ready(slot.clients)
        if client is None:
            async with slot.lock:
                client = await self._run(self.handle.steps(slot.clients))
        return client

    def close(self) -> None:
        """Let every loop's clients go (reset): closed on their loops, at the next call there
        or when the loop shuts down."""
        self._loops.close()

    async def close_client(self, held: Held) -> None:
        try:
            self.handle.before_close(held)
            await held.client.close()
        except Exception as exc:  # closing must never break the caller
            logger.info("%s: closing a client: %s", self.cfg.label, exc)

    async def _run(self, steps: Generator[MongoStep, Any, Any]) -> Any:
        """Run the handle's steps without blocking the loop."""
        return await run_async(steps, self._do, IamDbError)

    async def _do(self, step: MongoStep) -> Any:
        until = (self.handle.clock, getattr(step, "deadline", 0.0))
        if isinstance(step, OpenClient):
            return await open_client(self.cfg, step.lease, until)
        if isinstance(step, CheckClient):
            return await check_client(step.held.client, until)
        if isinstance(step, CloseClient):
            return await self.close_client(step.held)
        return await asyncio.to_thread(self.handle.fresh_lease, step.deadline)
