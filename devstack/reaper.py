"""Aurora DSQL closes every connection after at most 60 minutes; devstack's DSQL endpoint too.

A :class:`Reaper` thread sweeps the DSQL cluster's TCP client backends about ten times per
``max_age`` (at most once a second) and terminates (``pg_terminate_backend``) those whose
``backend_start`` lies more than ``max_age`` seconds back, so a client's rule "replace a
connection before DSQL drops it" meets a server that really drops them. Every kill is
recorded as a :class:`Reaped` event, as the verifier records logins. Administration
connections over the Unix socket are never reaped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("devstack.reaper")

DSQL_MAX_AGE = 3600.0  # seconds: DSQL's documented limit on a connection's life
_CLIENTS = (
    "SELECT pid, usename, extract(epoch FROM backend_start)::float8 FROM pg_stat_activity"
    " WHERE backend_type = 'client backend' AND client_addr IS NOT NULL"
    " AND pid <> pg_backend_pid()"
)
_TERMINATE = "SELECT pg_terminate_backend(%s, 2000)"  # waits up to 2 s for the exit


@dataclass(frozen=True)
class Reaped:
    """One connection the reaper terminated (what tests assert on)."""

    server: str
    user: str
    pid: int
    age: float  # seconds since the backend started, when it was terminated


class Reaper:
    """Terminates ``server``'s backends older than :attr:`max_age` seconds.

    ``connect()`` returns an autocommit psycopg connection with the right to terminate
    backends (devstack: :meth:`Postgres.admin`). ``clock`` returns epoch seconds, compared
    with PostgreSQL's ``backend_start``. :attr:`max_age` may be changed while running.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        server: str,
        max_age: float = DSQL_MAX_AGE,
        clock: Callable[[], float] = time.time,
        max_events: int = 10_000,
    ) -> None:
        self._connect = connect
        self.server = server
        self.max_age = max_age
        self._clock = clock
        self.events: deque[Reaped] = deque(maxlen=max_events)
        self._conn: Any = None
        self._lock = threading.Lock()  # one sweep at a time
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="devstack-reaper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (bounded by one sweep) and close the connection. Idempotent."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        with self._lock:
            self._close()

    def sweep(self) -> list[Reaped]:
        """Terminate every client backend older than :attr:`max_age`; return the kills."""
        with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            backends = self._conn.execute(_CLIENTS).fetchall()
            now, max_age = self._clock(), self.max_age
            reaped = []
            for pid, user, started in backends:
                age = now - started
                if age <= max_age:
                    continue
                row = self._conn.execute(_TERMINATE, (pid,)).fetchone()
                if row and row[0]:
                    reaped.append(Reaped(self.server, str(user), int(pid), age))
                    log.info("reaped %s backend %d of %s after %.1f s", self.server, pid, user, age)
            self.events.extend(reaped)
            return reaped

    def _run(self) -> None:
        while not self._stopping.wait(min(1.0, max(0.05, self.max_age / 10))):
            try:
                self.sweep()
            except Exception as exc:  # server restarting or stopped: retry on the next sweep
                log.info("reaper sweep on %s failed: %s", self.server, exc)
                with self._lock:
                    self._close()

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
