"""The Lambda invocation running now: which one it is (:class:`Invocation`), and when the waits
iamdb makes for it must end (:class:`Deadline`). Both come from the context given to
:func:`iamdb.set_lambda_context`.

Which invocation: so that nothing one invocation left open reaches the next.

Lambda runs one invocation at a time per environment and freezes it in between; a connection
kept in a module-level singleton crosses that boundary. What a handler left behind (a
transaction begun and never committed because it raised) must be rolled back before the next
invocation sees the connection, and a transaction the current invocation is still using must
never be touched. So iamdb needs to tell "a new invocation" from "a second ``get_pg()`` in the
same one". It knows an invocation by, in this order:

1. the ``aws_request_id`` of the context given to :func:`iamdb.set_lambda_context`, while that
   invocation's time lasts;
2. ``_X_AMZN_TRACE_ID``, which Lambda's runtime sets anew for every invocation;
3. nothing: outside Lambda (scripts, tests, containers) no boundary is known, and iamdb never
   touches a transaction on its own.

:meth:`Invocation.current` costs one clock read and one dictionary lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from iamdb.errors import ConfigError

TRACE_VAR = "_X_AMZN_TRACE_ID"
"""Set by Lambda's runtime for every invocation (the X-Ray trace header)."""


class Invocation:
    """The current invocation's identity (None when unknown) and its :attr:`deadline`; shared
    by a registry's instances."""

    def __init__(self, environ: Mapping[str, str], clock: Callable[[], float]) -> None:
        self._environ = environ
        self._clock = clock
        self._request_id: str | None = None
        self._ends_at = 0.0
        self.deadline = Deadline(clock)

    def set_context(self, context: Any) -> None:
        """The Lambda context of the invocation now starting (anything with
        ``get_remaining_time_in_millis``, and ``aws_request_id``); None forgets it."""
        if context is None:
            self.clear()
            return
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if not callable(remaining):
            raise ConfigError(
                "context", "expected the Lambda context (with get_remaining_time_in_millis)"
            )
        request_id = getattr(context, "aws_request_id", None)
        self._request_id = request_id if isinstance(request_id, str) and request_id else None
        self._ends_at = self._clock() + max(0.0, float(remaining())) / 1000.0
        self.deadline.set_context(remaining)

    def clear(self) -> None:
        self._request_id, self._ends_at = None, 0.0
        self.deadline.set_context(None)

    def current(self) -> str | None:
        """The running invocation's id, or None when no invocation is known."""
        if self._request_id is not None and self._clock() < self._ends_at:
            return self._request_id
        trace = self._environ.get(TRACE_VAR)
        return trace or None


DEADLINE_MARGIN = 0.5
"""Seconds before the invocation's end at which iamdb stops waiting for permits."""


class Deadline:
    """When the waits of a new login must end: plain state shared by a registry's instances.

    With the Lambda context known (:meth:`set_context`), the invocation's end minus
    :data:`DEADLINE_MARGIN`; otherwise twice the instance's connect timeout from now.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._remaining_ms: Callable[[], float] | None = None
        self.longest = 0.0
        """The most time (seconds) an invocation had left when its context was set, 0 before
        any: at most the function's timeout, which Lambda tells a function nowhere else."""

    def set_context(self, remaining_ms: Callable[[], float] | None) -> None:
        """The context's ``get_remaining_time_in_millis`` (None: no invocation known)."""
        self._remaining_ms = remaining_ms
        if remaining_ms is not None:
            self.longest = max(self.longest, float(remaining_ms()) / 1000.0)

    def left(self) -> float | None:
        """Seconds the invocation has left, or None when none is known (a context whose time is
        up belongs to a finished invocation)."""
        if self._remaining_ms is None:
            return None
        left = float(self._remaining_ms()) / 1000.0
        return left if left > 0 else None

    def at(self, timeout: float) -> float:
        """The deadline (clock seconds) for a wait starting now, ``timeout`` the connect timeout."""
        return self.window(timeout)[0]

    def window(self, timeout: float) -> tuple[float, float | None]:
        """:meth:`at`, and the time the invocation has left (:meth:`left`), read once."""
        now, left = self._clock(), self.left()
        if left is not None:
            return now + max(0.0, left - DEADLINE_MARGIN), left
        return now + 2.0 * timeout, None
