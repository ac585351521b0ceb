"""What iamdb adds to a SQLAlchemy engine for Lambda's lifecycle: bounded checkouts, a bounded
liveness check at checkout, and no transaction carried into another invocation.

- **Checkouts end by the invocation's deadline** (engines iamdb creates: :func:`pool_class`):
  SQLAlchemy's ``pool_timeout`` (30 s by default) waits past a Lambda invocation; iamdb's pool
  waits at most until the deadline, then raises :class:`~iamdb.errors.ConnectError`.
- **A connection is checked at checkout** (every engine, :func:`watch`): as ``get_pg()`` checks
  its own (closed, socket readable while idle, or idle past ``IAMDB_HEALTHCHECK_IDLE_SECONDS``:
  then ``SELECT 1``/ping ended by the deadline); a dead one makes the pool connect anew.
  SQLAlchemy's own ``pool_pre_ping`` pings on every checkout and waits without bound.
- **No transaction crosses an invocation** (every engine): a transaction is marked with the
  invocation it began in (:mod:`iamdb._core.invocation`). A statement that would run in one begun by
  an earlier invocation (a module-level ``Session`` whose handler raised before committing)
  closes the connection, so the server rolls the old transaction back, and raises
  :class:`~iamdb.errors.ConnectError`: the earlier invocation's writes are never committed by
  this one. And a connection an earlier invocation checked out and never gave back while a
  transaction was open on it (a ``Session`` never closed) is taken from its holder and closed
  at the next checkout, so its slot is not lost.
"""

from __future__ import annotations

import contextlib
import sys
import weakref
from typing import TYPE_CHECKING, Any

from iamdb import _registry
from iamdb._core.log import logger
from iamdb._sql.managed import look, ping_deadline, refused_write
from iamdb._sql.managed import watch as poller
from iamdb._sql.refusals import pool_exhausted
from iamdb.errors import ConnectError

_GIVE_BACK = (
    "a Session or Connection not closed keeps one: 'with Session(engine) as session:' closes "
    "it; or raise pool_size"
)

if TYPE_CHECKING:
    from iamdb._sql.config import Engine
    from iamdb._sql.login import Login, Until

_BEGAN = "iamdb.invocation"  # connection info: the invocation its transaction began in
_IDLE = "iamdb.idle"  # connection info: (poller, when it was checked in)


def pool_class(engine: Engine, name: str | None, asynchronous: bool) -> type:
    """SQLAlchemy's queue pool (its asyncio variant for async engines) whose checkouts wait at
    most until the invocation's deadline, and which takes back connections an earlier
    invocation left checked out in a transaction."""
    from sqlalchemy import exc
    from sqlalchemy.pool import AsyncAdaptedQueuePool, QueuePool

    base = AsyncAdaptedQueuePool if asynchronous else QueuePool

    class LambdaPool(base):  # type: ignore[misc, valid-type]
        """A queue pool bounded by the invocation (see :mod:`iamdb._engines`)."""

        def _do_get(self) -> Any:
            login = _login(engine, name)
            registry = _registry.default
            _take_back(login, registry.invocation.current())
            configured: float = getattr(self, "_timeout")  # noqa: B009  # mypy: untyped
            began = registry.runtime.clock()
            left = registry.deadline.at(login.cfg.connect_timeout) - began
            self._timeout = max(0.0, min(configured, left))
            try:
                return super()._do_get()
            except exc.TimeoutError:
                waited = registry.runtime.clock() - began
                failure = pool_exhausted(
                    login.cfg, "the engine's pool", self.size(), waited, _GIVE_BACK
                )
            finally:
                self._timeout = configured  # recreate() copies it
            raise failure

    return LambdaPool


def watch(target: Any, engine: Engine, name: str | None) -> None:
    """Listen to ``target``'s (a sync Engine's) pool and connection events: the checkout check,
    the checkout bookkeeping and the transaction marks (see the module docstring)."""
    from sqlalchemy import event

    def checkout(dbapi: Any, record: Any, fairy: Any) -> None:
        _checked_out(dbapi, record, fairy, _login(engine, name))

    event.listen(target.pool, "checkout", checkout)
    event.listen(target.pool, "checkin", _checked_in)
    event.listen(target, "begin", _began)
    event.listen(target, "before_cursor_execute", _before_statement)


_OUT: weakref.WeakSet[Any] = weakref.WeakSet()  # pool entries checked out now, every engine's
_CHECKOUT = "iamdb.checkout"  # entry info: (the holder, weakly; its invocation; its login)


def _login(engine: Engine, name: str | None) -> Login[Any]:
    return _registry.default.login(engine, name)


def _driver_connection(dbapi: Any) -> Any:
    """The driver's own connection behind SQLAlchemy's (async adapters wrap it)."""
    return getattr(dbapi, "driver_connection", dbapi)


def _is_async(conn: Any) -> bool:
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(conn, psycopg.AsyncConnection)


def _checked_out(dbapi: Any, record: Any, fairy: Any, login: Login[Any]) -> None:
    from sqlalchemy import exc

    problem = _problem(login, _driver_connection(dbapi), record)
    if problem is None:
        invocation = _registry.default.invocation.current()
        record.info[_CHECKOUT] = (weakref.ref(fairy), invocation, login)
        _OUT.add(record)
        return
    logger.info("%s: replacing a pooled connection (%s)", login.cfg.label, problem)
    login.probe.count("Reconnects")
    raise exc.DisconnectionError(problem)  # SQLAlchemy invalidates it and connects anew


def _checked_in(dbapi: Any, record: Any) -> None:
    if record is None:
        return
    record.info.pop(_CHECKOUT, None)
    _OUT.discard(record)
    idle = record.info.get(_IDLE)
    if idle is not None:
        record.info[_IDLE] = (idle[0], _registry.default.runtime.clock())


def _problem(login: Login[Any], conn: Any, record: Any) -> str | None:
    """Why a pooled connection is dead, from the cheap checks and, when they say so, a round
    trip ended by the deadline (as :class:`iamdb._sql.managed.ManagedConnection`)."""
    registry = _registry.default
    clock = registry.runtime.clock
    idle = record.info.get(_IDLE)
    if idle is None:  # new: just logged in
        record.info[_IDLE] = (poller(login.driver.fileno(conn)), clock())
        return None
    polled, since = idle
    marked = refused_write(login.driver, conn)  # the writer moved
    if marked is not None:
        return marked
    window, left = registry.deadline.window(login.cfg.connect_timeout)
    limit = login.driver.idle_limit(conn)
    misfit = login.idle.misfit(limit, left)  # checked in: nothing in flight, it may be replaced
    if misfit is not None:
        return misfit
    seen = look(
        login.driver.is_closed(conn),
        polled,
        clock() - since,
        min(registry.settings.healthcheck_idle_seconds, login.idle.quiet(limit, left)),
    )
    if not seen.confirm:
        return seen.dead
    deadline = ping_deadline(clock(), window)
    problem = _ping(login, conn, (clock, deadline))
    return None if problem is None else seen.failed(problem)


def _ping(login: Login[Any], conn: Any, until: Until) -> str | None:
    if not _is_async(conn):
        return login.driver.ping(conn, until)
    import asyncio

    from sqlalchemy.util import await_only

    try:  # an async engine's check runs in SQLAlchemy's greenlet: await the async ping
        left = max(0.0, until[1] - until[0]())
        await_only(asyncio.wait_for(conn.execute("SELECT 1"), left))
    except Exception as exc:
        return f"ping failed: {type(exc).__name__}"
    return None


def _take_back(login: Login[Any], invocation: str | None) -> None:
    """Close connections an earlier invocation left checked out in a transaction (of any
    engine), and give their slots back to their pools."""
    if invocation is None:
        return
    for record in list(_OUT):
        held = record.info.get(_CHECKOUT)
        fairy = None if held is None else held[0]()
        if held is None or held[1] == invocation or fairy is None:
            continue
        owner: Login[Any] = held[2]
        dbapi = fairy.dbapi_connection
        conn = None if dbapi is None else _driver_connection(dbapi)
        state = None if conn is None else owner.driver.transaction(conn)
        if conn is not None and state is None:
            continue  # held without a transaction: its holder's to give back
        if conn is not None:
            logger.warning(
                "%s: a connection an earlier invocation checked out (a Session never closed) "
                "has a transaction open (%s): closing it, so the server rolls it back; its "
                "writes are not committed. Close Sessions before the handler returns: 'with "
                "Session(engine) as session, session.begin():'.",
                owner.cfg.label,
                state,
            )
            owner.probe.count("TransactionsRolledBack")
        _checked_in(dbapi, record)
        fairy.detach()  # its slot goes back to its pool; the holder keeps a dead connection
        if conn is None:
            pass  # already invalidated (closed): only its slot was held
        elif _is_async(conn):
            with contextlib.suppress(Exception):
                conn.pgconn.finish()
        else:
            owner.driver.close(conn)


def _began(conn: Any) -> None:
    conn.info[_BEGAN] = _registry.default.invocation.current()


def _before_statement(conn: Any, *args: Any) -> None:
    began = conn.info.get(_BEGAN)
    if began is None or not conn.in_transaction():
        return
    now = _registry.default.invocation.current()
    if now is None or now == began:
        return
    conn.info[_BEGAN] = None
    conn.invalidate()  # the DBAPI connection is closed: the server rolls the transaction back
    raise ConnectError(
        "the transaction this statement would run in began in an earlier invocation, which "
        "ended without committing it: iamdb closed its connection, so the server rolled it "
        "back and nothing it wrote is committed. Roll the Session back (session.rollback()) "
        "and close Sessions before the handler returns: 'with Session(engine) as session, "
        "session.begin():'."
    )
