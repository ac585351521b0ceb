"""A role to assume, as an instance's settings name it: ``<P>ROLE_ARN``, ``<P>EXTERNAL_ID``,
``<P>SESSION_SECONDS``, read and checked once for every engine (``get_pg``, ``get_mysql``,
``get_dsql`` and ``get_mongo`` mean the same by them).

- ``ROLE_ARN``: the role the execution role assumes (another account's, a tenant's); unset, the
  execution role's own credentials sign.
- ``EXTERNAL_ID``: the ``sts:ExternalId`` the role's trust policy may require (only with a role).
- ``SESSION_SECONDS``: how long the assumed credentials live, 900-43200 (default 3600; at most
  the role's maximum session duration).

The region is needed to call STS, so a role without a valid ``AWS_REGION`` is a ConfigError
too. Reading costs no import beyond :mod:`iamdb._core.env`: the STS call lives in
:mod:`iamdb._aws.sts`, the shared credentials in :mod:`iamdb._aws.leases`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from iamdb._core.env import aws_region, env_number, env_value
from iamdb.errors import ConfigError

ROLE_SUFFIXES = ("ROLE_ARN", "EXTERNAL_ID", "SESSION_SECONDS")
"""What :func:`load_role` reads after an instance's prefix."""

SESSION_SECONDS = 3600
LEASE_MARGIN_SECONDS = 60.0
"""A token is signed only with credentials that stay valid this long after the token expires."""
RENEW_AHEAD_SECONDS = 300.0
"""Assumed credentials are renewed this long before they would be too short for a token."""
_ROLE_ARN = re.compile(
    r"arn:aws(?:-cn|-us-gov|-iso|-iso-b)?:iam::\d{12}:role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}",
    re.ASCII,
)
_EXTERNAL_ID = re.compile(r"[\w+=,.@:/-]{2,1224}", re.ASCII)


@dataclass(frozen=True)
class Role:
    """A role to assume and how. Instances naming the same role the same way share its
    credentials: equality is the ARN, external id and session length, not the variable."""

    arn: str
    external_id: str | None = field(default=None, repr=False)
    session_seconds: int = SESSION_SECONDS
    setting: str = field(default="", compare=False)  # "IAMDB_PG_ROLE_ARN": for messages

    @property
    def account(self) -> str:
        """The 12-digit account the role lives in."""
        return self.arn.split(":")[4]

    @property
    def external_id_setting(self) -> str:
        """The variable holding the external id (``IAMDB_PG_EXTERNAL_ID``)."""
        return self.setting.removesuffix("ROLE_ARN") + "EXTERNAL_ID"


def shortest_session(token_lifetime: float) -> int:
    """The shortest ``SESSION_SECONDS`` for tokens of ``token_lifetime`` seconds: credentials
    must outlive each token they sign (:data:`LEASE_MARGIN_SECONDS`), be renewed ahead of that
    (:data:`RENEW_AHEAD_SECONDS`), and serve at least four minutes between renewals (RDS's
    900 s tokens: 1,500 s)."""
    return int(token_lifetime + LEASE_MARGIN_SECONDS + RENEW_AHEAD_SECONDS + 240)


def session_seconds(env: Mapping[str, str], prefix: str) -> int:
    """``<prefix>SESSION_SECONDS``: 900-43200, default 3600."""
    return int(env_number(env, prefix + "SESSION_SECONDS", SESSION_SECONDS, low=900, high=43200,
                          integer=True))  # fmt: skip


def load_role(env: Mapping[str, str], prefix: str) -> Role | None:
    """The role ``<prefix>ROLE_ARN`` names, or None; ConfigError for a malformed ARN, an external
    id without a role (or with characters STS refuses), or no region to call STS in."""
    arn = env_value(env, prefix + "ROLE_ARN")
    if arn is not None and not _ROLE_ARN.fullmatch(arn):
        raise ConfigError(
            prefix + "ROLE_ARN",
            f"expected a role ARN like arn:aws:iam::123456789012:role/DbAccess, got {arn!r:.120}",
        )
    seconds = session_seconds(env, prefix)
    external_id = env_value(env, prefix + "EXTERNAL_ID")
    if external_id is not None:
        if arn is None:
            raise ConfigError(prefix + "EXTERNAL_ID", f"set but {prefix}ROLE_ARN is not")
        if not _EXTERNAL_ID.fullmatch(external_id):
            why = "expected 2-1224 characters of letters, digits and +=,.@:/-_"
            raise ConfigError(prefix + "EXTERNAL_ID", why)
    if arn is None:
        return None
    aws_region(env, f"needed to call STS for {prefix}ROLE_ARN")
    return Role(arn, external_id, seconds, prefix + "ROLE_ARN")
