"""The one way iamdb runs a sequence of steps, blocking or awaited.

What a login or a credential renewal does is written once, as a generator that yields each
step it needs done (a permit, a connect, a sleep...) and is sent its result, or thrown its
failure, as psycopg 3 writes its connection logic once for both worlds. :func:`run` does the
steps blocking, :func:`run_async` awaits them: the two differ only in how they wait.

A failure of the kinds the steps expect is thrown into the generator outside the ``except``
that caught it, so nothing the generator raises from it chains it as ``__context__`` (its
frames may hold a token); any other exception propagates as it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

S = TypeVar("S")  # a step
R = TypeVar("R")  # what the steps return

Failures = type[BaseException] | tuple[type[BaseException], ...]


def run(steps: Generator[S, Any, R], do: Callable[[S], Any], failures: Failures) -> R:
    """Run ``steps`` blocking: ``do(step)`` for each, its result sent back, a ``failures``
    exception thrown back in."""
    result: Any = None
    failure: BaseException | None = None
    while True:
        try:
            step = steps.send(result) if failure is None else steps.throw(failure)
        except StopIteration as done:
            returned: R = done.value
            return returned
        result, failure = None, None
        try:
            result = do(step)
        except failures as exc:
            failure = exc


async def run_async(
    steps: Generator[S, Any, R], do: Callable[[S], Awaitable[Any]], failures: Failures
) -> R:
    """:func:`run`, each step awaited (``do`` is a coroutine function)."""
    result: Any = None
    failure: BaseException | None = None
    while True:
        try:
            step = steps.send(result) if failure is None else steps.throw(failure)
        except StopIteration as done:
            returned: R = done.value
            return returned
        result, failure = None, None
        try:
            result = await do(step)
        except failures as exc:
            failure = exc
