"""iamdb for ``async def`` handlers: ``await get_pg()`` and ``await get_mongo()``.

>>> from iamdb import aio
>>> async def main(event):
...     conn = await aio.get_pg()
...     return await (await conn.execute("SELECT now()")).fetchone()

Same configuration, tokens, permits, retries, deadline, TLS, health checks, credential
renewal and metrics as :func:`iamdb.get_pg` and :func:`iamdb.get_mongo` (and shared with
them), without blocking the event loop: waits for permits and AssumeRole run in a worker
thread. Concurrent tasks of one loop get the same connection, made by one login.

A connection belongs to the event loop that made it. On the same loop (a module-level loop
the handler keeps, ``loop.run_until_complete(main(event))``) it is reused across
invocations. When a loop ends the way ``asyncio.run()`` ends it, iamdb closes its
connections on it, and the next loop gets new ones: with ``asyncio.run(main(event))`` per
invocation, each invocation logs in again (with the cached token or credentials: no new
signature, permit or AssumeRole). docs/asyncio.md compares both patterns and measures them.

No MySQL getter: see docs/asyncio.md for why.
"""

from __future__ import annotations

from iamdb import _default

# Importing this module loads nothing more (not even typing): asyncio, the drivers and
# iamdb's machinery are imported by the first call.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from pymongo import AsyncMongoClient

    from iamdb._sql.pg_classes import PgAsyncConnection

__all__ = ["get_mongo", "get_pg"]


async def get_pg(name: str | None = None) -> PgAsyncConnection:
    """The running loop's ``psycopg.AsyncConnection`` for ``IAMDB_PG_*`` (``IAMDB_PG_<NAME>_*``).

    Created on first use on this loop, reused afterwards, replaced when it died. Autocommit
    is on: use ``async with conn.transaction():`` for transactions.
    """
    handle = _default().aio_handle("pg", name)
    try:
        conn: PgAsyncConnection = await handle.get()
        return conn
    finally:
        handle.probe.flush()  # one EMF record for what this call did, if anything


async def get_mongo(name: str | None = None) -> AsyncMongoClient[Any]:
    """The running loop's ``pymongo.AsyncMongoClient`` for ``IAMDB_MONGO_*``
    (``IAMDB_MONGO_<NAME>_*``), logged in with MONGODB-AWS.

    Swapped for a new one before its credentials expire: call ``get_mongo()`` in the handler
    rather than keeping the client. Needs pymongo >= 4.13.2 (``iamdb[aio]``).
    """
    handle = _default().aio_handle("mongo", name)
    try:
        client: AsyncMongoClient[Any] = await handle.get()
        return client
    finally:
        handle.probe.flush()
