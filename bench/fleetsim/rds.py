"""A model of one RDS instance's throttling of new IAM logins, in virtual time.

As devstack's verifier does with ``--iam-rate`` (:mod:`devstack.verifier`, ``_admit``): a login
with a token the server has not accepted before is refused when ``rate`` new logins were
already accepted in the rolling second before it, ``(t - 1, t]``; a refused login is not
counted; a token accepted before (same signature) is reused, never counted and never refused.
Tokens are not checked otherwise (the model trusts the signer) and stay live for the whole run
(runs last less than a token's 15 minutes).

A login takes TCP + TLS + the login packet (:data:`HANDSHAKE`, uniform), at whose end the
server counts it (the auth instant), then the server's answer (:data:`ANSWER`): 10-30 ms in
all. A refusal reaches the caller as the :class:`iamdb.errors.AuthError` that iamdb's drivers
raise for a refused login, so iamdb's retry path runs.
"""

from __future__ import annotations

import random

from bench.fleetsim.sim import RollingSecond, Sim
from iamdb.errors import AuthError

HANDSHAKE = (0.008, 0.024)
"""Seconds from the driver's connect to the instant the server counts the login."""

ANSWER = (0.002, 0.006)
"""Seconds from that instant to the client knowing the answer."""


class Rds:
    """One DB instance accepting at most ``rate`` new IAM logins per rolling second."""

    def __init__(self, sim: Sim, rate: float, *, user: str = "app") -> None:
        self._sim = sim
        self.rate = rate
        self.user = user
        self._live: set[str] = set()  # signatures of the tokens accepted so far
        self.accepted = RollingSecond()
        """New-token logins accepted (``peak`` never exceeds ``rate``)."""
        self.arrivals = RollingSecond()
        """New-token logins that reached the server, refused ones included."""
        self.refused = 0

    def connect(self, token: str, rng: random.Random) -> float:
        """Log in with ``token``; return the auth instant, or raise AuthError when refused."""
        self._sim.sleep(rng.uniform(*HANDSHAKE))
        now = self._sim.now()
        signature = token.rpartition("X-Amz-Signature=")[2]
        refused = False
        if signature not in self._live:
            self.arrivals.add(now)
            if self.accepted.count(now) >= self.rate:
                self.refused += 1
                refused = True
            else:
                self.accepted.add(now)
                self._live.add(signature)
        self._sim.sleep(rng.uniform(*ANSWER))
        if refused:
            raise AuthError(
                f"the server refused the IAM login of user {self.user!r}: PAM authentication "
                f'failed for user "{self.user}"'
            )
        return now
