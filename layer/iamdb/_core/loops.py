"""One object per asyncio event loop, closed on that loop when it shuts down.

Async Lambda handlers usually run ``asyncio.run(...)`` once per invocation, so each invocation
has a new event loop, and a connection made on the previous one is unusable there: psycopg's
``AsyncConnection`` holds an ``asyncio.Lock`` that binds to the first loop that waits on it
(the next loop's concurrent queries then fail), and pymongo's ``AsyncMongoClient`` refuses
every loop but its first (its sockets are that loop's transports, its monitors that loop's
tasks). So each instance keeps what it made per loop (:class:`PerLoop`):

- the same loop again (a module-level loop the handler keeps): the slot is reused;
- a loop that shuts down as ``asyncio.run()`` ends it (``loop.shutdown_asyncgens()`` before
  ``close()``): its slots are closed on it, while it still runs. An async generator started on
  the loop holds each one, and asyncio closes open async generators at shutdown;
- a loop closed without that shutdown: its slots are let go at the next call from another loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable
from typing import Generic, Protocol, TypeVar


class Slot(Protocol):
    """What one event loop holds of an instance."""

    async def aclose(self) -> None:
        """Close it, on its loop (which still runs)."""

    def discard(self) -> None:
        """Let it go from anywhere, its loop possibly closed: close what can be closed."""


S = TypeVar("S", bound=Slot)


_Loop = asyncio.AbstractEventLoop


class PerLoop(Generic[S]):
    """One ``S`` per event loop: made on its first use there, closed when that loop shuts down.

    Thread-safe (each thread has its own loop); the lock is never held across an await.
    """

    def __init__(self, make: Callable[[], S]) -> None:
        self._make = make
        self._lock = threading.Lock()
        # Replaced whole under the lock, so slot() reads it without one.
        self._slots: dict[_Loop, tuple[S, AsyncGenerator[None, None]]] = {}

    async def slot(self) -> S:
        """The running loop's ``S``."""
        loop = asyncio.get_running_loop()
        found = self._slots.get(loop)
        if found is not None:
            return found[0]
        slot = self._make()
        closer = self._closer(loop, slot)
        with self._lock:
            gone = [s for other, (s, _) in self._slots.items() if other.is_closed()]
            kept = {other: e for other, e in self._slots.items() if not other.is_closed()}
            self._slots = {**kept, loop: (slot, closer)}
        for old in gone:  # loops closed without shutting down their async generators
            old.discard()
        await closer.__anext__()  # the loop's now: its shutdown_asyncgens() will close it
        return slot

    def close(self) -> None:
        """Let every slot go (reset): each closes what it can from here."""
        with self._lock:
            slots, self._slots = self._slots, {}
        for slot, _ in slots.values():
            slot.discard()

    async def _closer(self, loop: _Loop, slot: S) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._lock:
                found = self._slots.get(loop)
                if found is not None and found[0] is slot:
                    self._slots = {k: v for k, v in self._slots.items() if k is not loop}
            await slot.aclose()
