"""How fast new IAM logins go, and how a login waits for its turn (both limiters share these).

iamdb paces at :data:`PACE` (90 %) of a server's rate: a permit is taken a few milliseconds
before the server counts the login (TCP, TLS, the login packet), and that delay varies, so
logins spaced at exactly the limit could arrive closer together. Every sleep of a login's
permits goes through its :class:`Waits`, which checks the deadline again when the sleep ends:
Lambda freezes an environment between invocations, and one frozen while asleep wakes after its
invocation ended. ``ThrottleWaitMs`` counts the sleeps iamdb asked for, not the freeze.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from iamdb.errors import ThrottleError

if TYPE_CHECKING:
    from iamdb._core.runtime import Runtime


PACE = 0.9
"""Fraction of the configured rate iamdb actually uses (headroom for network jitter)."""


def paced_rate(rate: float) -> float:
    """The rate iamdb paces at for a configured limit of ``rate`` logins per second."""
    return rate * PACE


SUSPENDED_SECONDS = 1.0
"""Wall time beyond the waits asked for that a deadline message calls a suspension."""


class Waits:
    """The sleeps of one new login's permits: none past ``deadline`` (clock seconds), the
    deadline checked again after each, their asked-for total in :attr:`asked`."""

    def __init__(self, runtime: Runtime, server: str, deadline: float) -> None:
        self.server = server
        self.deadline = deadline
        self.asked = 0.0
        """Seconds of sleep asked for so far (``ThrottleWaitMs``)."""
        self.began = runtime.clock()
        self._rt = runtime

    def sleep(self, seconds: float, what: str) -> None:
        """Sleep ``seconds`` waiting for ``what``; ThrottleError when it ended past the deadline."""
        self._rt.sleep(seconds)
        self.asked += seconds
        self.check(what)

    def check(self, what: str) -> None:
        """ThrottleError when the deadline has passed (``what``: what was being waited for)."""
        now = self._rt.clock()
        if now <= self.deadline:
            return
        spent = now - self.began
        frozen = spent - self.asked > SUSPENDED_SECONDS
        raise ThrottleError(
            f"{'the process was suspended' if frozen else 'the deadline passed'} while waiting "
            f"for {what}: a new IAM login to {self.server} reached its permits "
            f"{now - self.deadline:.2f} s past its deadline, {spent:.2f} s after asking for "
            f"them, {self.asked:.2f} s of which were waits iamdb asked for"
            + (" (Lambda freezes an environment between invocations)" if frozen else "")
            + ". No login was attempted; the next one asks anew"
        )
