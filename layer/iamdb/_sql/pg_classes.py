"""psycopg's ``Connection`` and ``AsyncConnection`` as iamdb makes them.

Three changes: the connect generator gives up once the login's deadline (:data:`LOGIN_DEADLINE`,
set around each connect) passed, whatever the number of addresses psycopg tries (psycopg bounds
each address's attempt with ``connect_timeout``, whole seconds, at least 2, and the total not at
all); ``with conn:`` ends the transaction as psycopg's does but keeps the connection open
(it is iamdb's, reused by the next call and invocation); and a statement the server refused
for being read-only (SQLSTATE 25006: the writer moved) marks the connection
(``iamdb_refused_write``), so the next ``get_pg()`` replaces it (:mod:`iamdb._sql.writer`).
Every statement, commit and copy goes through ``wait()``: the mark is set there, and the
error goes on to the caller unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    PgConnection = psycopg.Connection[Any]
    PgAsyncConnection = psycopg.AsyncConnection[Any]
else:
    PgConnection = PgAsyncConnection = Any


# Clock and deadline (clock seconds) of the login in progress, for the connect generator.
LOGIN_DEADLINE: contextvars.ContextVar[tuple[Callable[[], float], float] | None] = (
    contextvars.ContextVar("iamdb_login_deadline", default=None)
)


@functools.cache
def connection_classes() -> tuple[type[PgConnection], type[PgAsyncConnection]]:
    """psycopg's ``Connection`` and ``AsyncConnection`` as iamdb makes them (module docstring)."""
    import psycopg

    refused_write = psycopg.errors.ReadOnlySqlTransaction  # SQLSTATE 25006

    class Connection(psycopg.Connection[Any]):
        """A psycopg ``Connection`` made by iamdb; ``with conn:`` keeps it open."""

        iamdb_refused_write = False
        iamdb_idle_limit: int | None = None  # the server closes it after this long idle

        @classmethod
        def _connect_gen(cls, *args: Any, **kwargs: Any) -> Any:
            return _bounded(super()._connect_gen(*args, **kwargs))

        def wait(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().wait(*args, **kwargs)
            except refused_write:
                self.iamdb_refused_write = True
                raise

        def __exit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
            if self.closed:
                return
            if exc_type is None:
                self.commit()
                return
            with contextlib.suppress(Exception):  # never hides the exception on its way out
                self.rollback()

    class AsyncConnection(psycopg.AsyncConnection[Any]):
        """A psycopg ``AsyncConnection`` made by iamdb; ``async with conn:`` keeps it open."""

        iamdb_refused_write = False
        iamdb_idle_limit: int | None = None

        @classmethod
        def _connect_gen(cls, *args: Any, **kwargs: Any) -> Any:
            return _bounded(super()._connect_gen(*args, **kwargs))

        async def wait(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return await super().wait(*args, **kwargs)
            except refused_write:
                self.iamdb_refused_write = True
                raise

        async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
            if self.closed:
                return
            if exc_type is None:
                await self.commit()
                return
            with contextlib.suppress(Exception):
                await self.rollback()

    Connection.__name__ = Connection.__qualname__ = "Connection"
    AsyncConnection.__name__ = AsyncConnection.__qualname__ = "AsyncConnection"
    return Connection, AsyncConnection


def _bounded(gen: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
    """psycopg's connect generator, ended with ``ConnectionTimeout`` once the login's deadline
    passed: psycopg wakes it at least every 0.1 s, for every address it tries."""
    until = LOGIN_DEADLINE.get()
    if until is None:
        return (yield from gen)
    from psycopg import errors

    clock, deadline = until
    try:
        step = next(gen)
        while clock() < deadline:
            step = gen.send((yield step))
    except StopIteration as done:
        return done.value
    gen.close()
    raise errors.ConnectionTimeout("timeout expired (the login's deadline passed)")
