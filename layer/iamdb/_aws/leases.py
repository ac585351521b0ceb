"""Assumed-role credentials shared by every instance that names the same role: one lease each.

A function may sign its database tokens with a role it assumes (another account's, a
tenant's: ``<P>ROLE_ARN``). :class:`Leases`, owned by the registry, holds one
:class:`~iamdb._aws.sts.Lease` per :class:`~iamdb._aws.roles.Role`, so several instances on one
role cost one AssumeRole. Each caller says how long it needs the credentials to stay valid (a
token's lifetime plus :data:`~iamdb._aws.roles.LEASE_MARGIN_SECONDS`): the lease is renewed
:data:`~iamdb._aws.roles.RENEW_AHEAD_SECONDS` before it would be too short, so no token is ever
signed with credentials that expire before it. A renewal STS fails keeps the current lease
while it is still long enough (tried again :data:`RETRY_SECONDS` later); else the caller gets
the failure (AuthError naming the role, CredentialsError, ConnectError).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from iamdb._aws.roles import RENEW_AHEAD_SECONDS
from iamdb._aws.sts import Lease, assume_role
from iamdb._core.log import logger
from iamdb.errors import AuthError, ConnectError, IamDbError, _detached

if TYPE_CHECKING:
    from iamdb._aws.client import AwsClient
    from iamdb._aws.roles import Role
    from iamdb._core.runtime import Runtime

RETRY_SECONDS = 10.0
"""After a failed renewal, the current lease is used this long before STS is asked again."""


@dataclass
class _Held:
    lease: Lease
    retry_at: float = 0.0  # a renewal failed: no AssumeRole before this


class Leases:
    """The current lease of each role, assumed on first use and renewed ahead. Thread-safe: one
    AssumeRole per role at a time, the others waiting for it within their deadline."""

    def __init__(self, aws: Callable[[], AwsClient], runtime: Runtime) -> None:
        """``aws``: the registry's AWS client, made when first needed."""
        self._aws, self._rt = aws, runtime
        self._lock = threading.Lock()
        self._locks: dict[Role, threading.Lock] = {}
        self._held: dict[Role, _Held] = {}

    def get(
        self,
        role: Role,
        *,
        needed: float,
        deadline: float,
        on_assume: Callable[[], None] | None = None,
    ) -> Lease:
        """``role``'s credentials, valid at least ``needed`` more seconds; assumes the role
        (by ``deadline``) when there are none or they are due. ``on_assume`` is called after
        each AssumeRole (the ``CredentialRefreshes`` metric)."""
        clock = self._rt.clock
        held = self._held.get(role)
        if held is not None and held.lease.left(clock()) >= needed + RENEW_AHEAD_SECONDS:
            return held.lease
        lock = self._lock_for(role)
        if not lock.acquire(timeout=max(0.0, deadline - clock())):
            return self._usable(role, needed, clock(), "another thread's AssumeRole")
        try:
            return self._renewed(role, needed, deadline, on_assume)
        finally:
            lock.release()

    def current(self, role: Role) -> Lease | None:
        """The lease held for ``role`` (None: never assumed), for ``iamdb.info()`` and logs."""
        held = self._held.get(role)
        return None if held is None else held.lease

    def clear(self) -> None:
        """Forget every lease (``iamdb.reset()``)."""
        with self._lock:
            self._held.clear()

    def _lock_for(self, role: Role) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(role, threading.Lock())

    def _renewed(
        self, role: Role, needed: float, deadline: float, on_assume: Callable[[], None] | None
    ) -> Lease:
        """Under ``role``'s lock: the held lease if another thread renewed it meanwhile (or a
        failed renewal is not due again), else a new one."""
        now = self._rt.clock()
        held = self._held.get(role)
        if held is not None:
            left = held.lease.left(now)
            if left >= needed + RENEW_AHEAD_SECONDS or (now < held.retry_at and left >= needed):
                return held.lease
        failure: IamDbError | None = None
        try:
            lease = assume_role(
                self._aws(),
                self._rt,
                role.arn,
                duration_seconds=role.session_seconds,
                external_id=role.external_id,
                deadline=deadline,
                external_id_setting=role.external_id_setting,
            )
        except IamDbError as exc:
            failure = _detached(exc)
        if failure is not None:
            if held is None or held.lease.left(now) < needed:
                raise failure
            logger.warning(
                "%s: renewing the credentials of %s failed (%s: %s); signing with the current "
                "ones, %.0f s of validity left",
                role.setting,
                role.arn,
                type(failure).__name__,
                failure,
                held.lease.left(now),
            )
            held.retry_at = now + RETRY_SECONDS
            return held.lease
        if on_assume is not None:
            on_assume()
        left = lease.left(self._rt.clock())
        if left < needed:
            raise AuthError(
                f"STS issued credentials for {role.arn} that expire in {left:.0f} s, too soon "
                f"for tokens that must stay valid {needed:.0f} s: raise the role's maximum "
                f"session duration to {role.setting.removesuffix('ROLE_ARN')}SESSION_SECONDS "
                f"({role.session_seconds}) or more"
            )
        self._held[role] = _Held(lease)
        logger.info(
            "%s: assumed %s as %s (access key %s, expires in %.0f s)",
            role.setting,
            role.arn,
            lease.principal,
            lease.credentials.access_key,
            left,
        )
        return lease

    def _usable(self, role: Role, needed: float, now: float, busy: str) -> Lease:
        """The held lease when it is still long enough, else ConnectError: ``busy`` took the
        whole deadline."""
        held = self._held.get(role)
        if held is not None and held.lease.left(now) >= needed:
            return held.lease
        raise ConnectError(
            f"{role.setting}: {busy} on {role.arn} did not end before the deadline: STS is slow "
            "or unreachable"
        )
