"""iamdb.aio benchmarks against devstack's PostgreSQL and MONGODB-AWS peer.

- Warm ``await aio.get_pg()`` against warm ``get_pg()``: the per-call cost of the asyncio
  getter on a live connection (same loop, recently used).
- An invocation on a new loop (``asyncio.run()`` per invocation: a new connection each time,
  the old one closed at the loop's shutdown) against one on a module-level loop
  (``loop.run_until_complete``: the connection reused); both engines, the handler doing one
  round trip; and ``asyncio.run()`` of an empty handler, what the loop itself costs.
- First async login against first blocking login (a fresh registry each: sign, permit, TCP,
  TLS, IAM login), without the fleet limiter, as bench.sql's first-login row.

Run: ``python -m bench.aio`` (starts and stops its own devstack).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.table import Row, interleaved, median_us, print_table


async def _median_us_async(fn: Callable[[], Awaitable[Any]], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t = time.perf_counter_ns()
        await fn()
        samples.append(time.perf_counter_ns() - t)
    return statistics.median(samples) / 1000


async def _pg_invocation() -> None:
    from iamdb import aio

    conn = await aio.get_pg()
    await (await conn.execute("SELECT 1")).fetchone()


async def _mongo_invocation() -> None:
    from iamdb import aio

    client = await aio.get_mongo()
    await client.admin.command("ping")


async def _empty() -> None:
    pass


def _invocations(handler: Callable[[], Awaitable[None]], repeat: int) -> tuple[float, float]:
    """Median us of a new-loop invocation and of a same-loop one, interleaved."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(handler())  # warm: imports, token or lease cached
        asyncio.run(handler())
        return interleaved(
            lambda: asyncio.run(handler()), lambda: loop.run_until_complete(handler()), repeat
        )
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def rows(env: dict[str, str]) -> list[Row]:
    import iamdb
    from iamdb._core.runtime import Runtime
    from iamdb._registry import Registry

    os.environ.update({k: v for k, v in env.items() if k != "IAMDB_THROTTLE_TABLE"})
    os.environ.pop("IAMDB_THROTTLE_TABLE", None)  # as bench.sql: one DynamoDB call apart
    from iamdb import aio

    iamdb.get_pg().execute("SELECT 1")
    warm_sync = median_us(iamdb.get_pg, 20000)

    async def warm() -> float:
        await aio.get_pg()
        return await _median_us_async(aio.get_pg, 20000)

    warm_async = asyncio.run(warm())
    iamdb.reset()

    pg_new, pg_same = _invocations(_pg_invocation, 40)
    mongo_new, mongo_same = _invocations(_mongo_invocation, 40)
    empty_new, empty_same = _invocations(_empty, 200)
    iamdb.reset()

    plain = {k: v for k, v in env.items() if k != "IAMDB_THROTTLE_TABLE"}

    def first_sync() -> None:
        r = Registry(runtime=Runtime(environ=plain))
        r.get_pg()
        r.reset()

    async def first_async() -> None:
        r = Registry(runtime=Runtime(environ=plain))
        await r.aio_handle("pg").get()
        r.reset()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(first_async())
        first_sync()
        first_s, first_a = interleaved(
            first_sync, lambda: loop.run_until_complete(first_async()), 40
        )
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    return [
        Row("warm: aio.get_pg() vs get_pg()", warm_sync, warm_async, "info: <= 5 us median"),
        Row(
            "pg invocation: new loop (asyncio.run) vs module-level loop",
            pg_same,
            pg_new,
            "info: the price of asyncio.run per invocation",
        ),
        Row(
            "mongo invocation: new loop (asyncio.run) vs module-level loop",
            mongo_same,
            mongo_new,
            "info: the price of asyncio.run per invocation",
        ),
        Row(
            "empty handler: asyncio.run vs run_until_complete",
            empty_same,
            empty_new,
            "info: the loop's own share",
        ),
        Row(
            "first login: async vs blocking (sign + TLS + verify)",
            first_s,
            first_a,
            "info: within a few %",
        ),
    ]


def main() -> None:
    from devstack.stack import Stack

    stack = Stack(mysql=False)
    stack.start()
    try:
        print_table("iamdb.aio through devstack (times in us, median)", rows(dict(stack.env)))
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
