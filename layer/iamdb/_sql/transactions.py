"""Transactions that Aurora DSQL's optimistic concurrency refuses (SQLSTATE 40001), run again.

DSQL checks at commit whether the rows (OC000) or the schema (OC001) a transaction read changed
since it began, and refuses the commit if so; the client is to run the transaction again.
:func:`run_transaction` does, with iamdb's backoff, on a fresh ``get_dsql()`` each time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from iamdb._core.backoff import DecorrelatedJitter
from iamdb._core.log import logger
from iamdb.errors import ConfigError, ConflictError

if TYPE_CHECKING:
    from iamdb._core.runtime import Runtime
    from iamdb._core.telemetry import Probe
    from iamdb._sql.pg_classes import PgConnection

T = TypeVar("T")

_CONFLICT = "40001"


def run_transaction(
    connection: Callable[[], PgConnection],
    fn: Callable[[PgConnection], T],
    *,
    attempts: int,
    runtime: Runtime,
    probe: Probe,
    label: str,
) -> T:
    """``fn(conn)`` in a transaction on ``connection()``, run again after a 40001 conflict, at
    most ``attempts`` times in all.

    Each attempt asks ``connection()`` (``get_dsql()``) anew, so a connection replaced in
    between is picked up, and runs ``with conn.transaction(): fn(conn)``, so a conflict rolls
    back the whole attempt. Between attempts iamdb's backoff waits (``runtime`` sleeps);
    ``probe`` counts ``TransactionRetries``, ``label`` names the instance in logs and errors.
    Anything but a conflict propagates unchanged; after the last conflict,
    :class:`~iamdb.errors.ConflictError` says so with the server's message.
    """
    if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= 20:
        raise ConfigError("attempts", f"expected an integer from 1 to 20, got {attempts!r:.20}")
    backoff = DecorrelatedJitter(0.02, 1.0, uniform=runtime.uniform)
    conflict = ""
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            delay = backoff.next_delay()
            logger.info(
                "%s: transaction conflicted (%s), attempt %d of %d in %.3f s",
                label,
                conflict,
                attempt,
                attempts,
                delay,
            )
            probe.count("TransactionRetries")
            runtime.sleep(delay)
        done, value = _attempt(connection, fn)
        if done:
            result: T = value
            return result
        conflict = value
    raise ConflictError(
        f"{label}: the transaction conflicted with concurrent ones {attempts} times "
        f"(SQLSTATE 40001; last: {conflict}). DSQL's optimistic concurrency refuses a commit "
        "whose rows (OC000) or schema (OC001) changed since the transaction began: retry "
        "later, raise attempts, or make fewer transactions write the same rows."
    )


def _attempt(connection: Callable[[], Any], fn: Callable[[Any], Any]) -> tuple[bool, Any]:
    """(True, result) or (False, the conflict's message). Its own frame, so that the
    connection and the driver's error are gone before :class:`ConflictError` is raised."""
    conn = connection()
    try:
        with conn.transaction():
            return True, fn(conn)
    except Exception as exc:
        if getattr(exc, "sqlstate", None) != _CONFLICT:
            raise
        return False, " ".join(str(exc).split())[:300]
