"""PerLoop on real event loops: one slot per loop, closed on that loop when it shuts down.

The slots here record what happens to them; the real connections (psycopg, pymongo) are in
tests/integration/test_aio.py.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator

import pytest

from iamdb._core.loops import PerLoop


class Recorder:
    """A slot that records how it was let go, and on which loop it was closed."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.closed_on: asyncio.AbstractEventLoop | None = None
        self.closed_while_running = False
        self.discarded = 0

    async def aclose(self) -> None:
        self.closed_on = asyncio.get_running_loop()
        self.closed_while_running = self.closed_on.is_running()

    def discard(self) -> None:
        self.discarded += 1


@pytest.fixture(autouse=True)
def strict_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_each_asyncio_run_gets_its_own_slot_closed_on_its_loop() -> None:
    made: list[Recorder] = []

    def make() -> Recorder:
        made.append(Recorder())
        return made[-1]

    slots = PerLoop(make)

    async def invocation() -> Recorder:
        first = await slots.slot()
        assert await slots.slot() is first  # the same loop: the same slot
        return first

    seen = [asyncio.run(invocation()) for _ in range(3)]
    assert seen == made and len(set(map(id, made))) == 3
    for slot in made:
        assert slot.closed_on is slot.loop and slot.closed_while_running
        assert slot.discarded == 0
    assert slots._slots == {}  # nothing kept for loops that are gone


def test_a_module_level_loop_keeps_its_slot_until_it_shuts_down() -> None:
    slots = PerLoop(Recorder)
    loop = asyncio.new_event_loop()
    try:
        seen = {id(loop.run_until_complete(slots.slot())) for _ in range(3)}
        assert len(seen) == 1
        (slot,) = (s for s, _ in slots._slots.values())
        assert slot.closed_on is None
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    assert slot.closed_on is loop and slot.discarded == 0


def test_concurrent_tasks_make_one_slot() -> None:
    made: list[Recorder] = []

    def make() -> Recorder:
        made.append(Recorder())
        return made[-1]

    slots = PerLoop(make)

    async def many() -> set[int]:
        return {id(s) for s in await asyncio.gather(*(slots.slot() for _ in range(20)))}

    assert len(asyncio.run(many())) == 1 and len(made) == 1


def test_a_loop_closed_without_shutdown_is_let_go_from_the_next_loop() -> None:
    slots = PerLoop(Recorder)
    loop = asyncio.new_event_loop()
    old = loop.run_until_complete(slots.slot())
    loop.close()  # no shutdown_asyncgens(): the closer never ran
    assert old.closed_on is None and old.discarded == 0

    async def next_invocation() -> Recorder:
        return await slots.slot()

    new = asyncio.run(next_invocation())
    assert old.discarded == 1 and old.closed_on is None
    assert new is not old and new.closed_on is new.loop


def test_close_lets_every_slot_go_and_what_needs_the_loop_closes_on_it() -> None:
    slots = PerLoop(Recorder)
    loop = asyncio.new_event_loop()
    other = asyncio.new_event_loop()
    try:
        slot = loop.run_until_complete(slots.slot())
        idle = other.run_until_complete(slots.slot())
        slots.close()
        assert slot.discarded == 1 and idle.discarded == 1 and slots._slots == {}
        assert slot.closed_on is None  # nothing runs on a loop from outside it
        again = loop.run_until_complete(slots.slot())
        assert again is not slot and slot.closed_on is loop  # the next call there closes it
        assert idle.closed_on is None
    finally:
        for each in (loop, other):
            each.run_until_complete(each.shutdown_asyncgens())
            each.close()
    assert again.closed_on is loop and idle.closed_on is other  # the rest at the shutdown
