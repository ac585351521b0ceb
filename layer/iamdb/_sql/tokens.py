"""What an RDS or Aurora DSQL token is signed for (:class:`Target`); the tokens themselves are
cached by :class:`iamdb._aws.tokens.TokenCache`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from iamdb._aws.credentials import Credentials
from iamdb._aws.signer import (
    TOKEN_LIFETIME_SECONDS,
    generate_db_auth_token,
    generate_dsql_auth_token,
)

if TYPE_CHECKING:
    from iamdb._aws.roles import Role

__all__ = ["Target"]


RDS_CONNECT = "connect"  # rds-db:connect
DSQL_CONNECT = "DbConnect"  # dsql:DbConnect, every role but admin
DSQL_CONNECT_ADMIN = "DbConnectAdmin"  # dsql:DbConnectAdmin, the admin role only


class Target(NamedTuple):
    """What a token is signed for: the endpoint name and port, the database user, the region,
    and the token's ``action`` and lifetime: RDS's ``connect`` (900 s, fixed), or Aurora DSQL's
    ``DbConnect`` / ``DbConnectAdmin`` with the lifetime the signer chooses; and by whom: the
    ``role`` to assume, or None for the execution role."""

    host: str
    port: int
    user: str
    region: str
    action: str = RDS_CONNECT
    lifetime: int = TOKEN_LIFETIME_SECONDS
    role: Role | None = None

    @property
    def dsql(self) -> bool:
        """An Aurora DSQL cluster: it limits every new connection, not only new tokens."""
        return self.action != RDS_CONNECT

    @property
    def key(self) -> str:
        """What the server throttles, so what the limiters pace, in lower case: ``host:port``
        for RDS (the instance), the cluster endpoint name for DSQL (its tokens have no port)."""
        return self.host.lower() if self.dsql else f"{self.host.lower()}:{self.port}"

    def sign(self, credentials: Credentials, now: datetime) -> str:
        """A token for this endpoint, signed at ``now``."""
        if self.dsql:
            return generate_dsql_auth_token(
                self.host,
                self.region,
                admin=self.action == DSQL_CONNECT_ADMIN,
                expires_in=self.lifetime,
                credentials=credentials,
                now=now,
            )
        return generate_db_auth_token(
            self.host, self.port, self.user, self.region, credentials=credentials, now=now
        )
