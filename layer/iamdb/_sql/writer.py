"""An instance meant to take writes, and a server that no longer does: a writer that moves.

An Aurora cluster (or an RDS Multi-AZ cluster) fails over a few times a year, and a Blue/Green
switchover moves production to the green instances. The cluster endpoint's name then leads to
the new writer, but DNS (5 s TTL, cached longer by resolvers) may still lead to the old one, now
a reader: a login there succeeds and the handler's next ``INSERT`` fails (PostgreSQL SQLSTATE
25006, MySQL 1290 / 1836). So:

- an instance meant to take writes (``<P>WRITER=true``; by default the cluster endpoint
  ``<id>.cluster-<hash>.<region>.rds.amazonaws.com``, whose name says it leads to the writer:
  :mod:`iamdb._sql.config`) asks each new connection once, as a step of the login, whether
  the server takes writes (:data:`PG_QUERY`, :data:`MYSQL_QUERY`); a read-only one is closed
  and the login tried again with backoff until the deadline (:mod:`iamdb._sql.login`), then
  :func:`read_only_failure`;
- a read-only error seen on a live connection marks it (the drivers' connection classes), and
  the next ``get_*()`` replaces it (:mod:`iamdb._sql.managed`). iamdb never runs the
  statement again: the handler decides what a failed write means.

Reader endpoints (``cluster-ro-``), custom endpoints, instance endpoints, proxies, IPs and
CNAMEs get no check unless ``<P>WRITER=true`` says so: their names do not say what the server
is. Aurora DSQL has no read-only servers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from iamdb._sql.refusals import where
from iamdb.errors import ConnectError

if TYPE_CHECKING:
    from iamdb._sql.config import SqlConfig

PG_QUERY = b"SHOW transaction_read_only"
"""``on`` on a hot standby (an Aurora reader) and on a server whose writes were stopped
(``default_transaction_read_only``: a Blue/Green switchover's old blue)."""
MYSQL_QUERY = "SELECT @@global.read_only, @@global.innodb_read_only"
"""``read_only`` is what a switchover or a demoted writer sets; ``innodb_read_only`` is an
Aurora MySQL reader's."""
PG_REFUSED_WRITE = "25006"  # read_only_sql_transaction
_MYSQL_REFUSED_WRITE = frozenset({1290, 1836})  # --read-only; innodb_read_only ("read-only mode")


def pg_read_only(answer: bytes | None) -> str | None:
    """What PostgreSQL's answer to :data:`PG_QUERY` says: None when the server takes writes."""
    if answer == b"off":
        return None
    shown = "no value" if answer is None else answer.decode("ascii", "replace")[:20]
    return f"transaction_read_only = {shown}"


def mysql_read_only(row: tuple[object, ...] | None) -> str | None:
    """What MySQL's answer to :data:`MYSQL_QUERY` says: None when the server takes writes."""
    if row is not None and len(row) == 2 and not row[0] and not row[1]:
        return None
    if row is None or len(row) != 2:
        return "no answer to the read-only check"
    return f"read_only = {row[0]}, innodb_read_only = {row[1]}"


def mysql_refused_write(args: tuple[object, ...]) -> bool:
    """Whether a MySQL error's ``args`` (code, message) say the server is read-only."""
    code = args[0] if args else None
    text = str(args[1]).lower() if len(args) > 1 else ""
    return code in _MYSQL_REFUSED_WRITE and ("read-only" in text or "read only" in text)


MOVED_HINT = (
    "The server refused a token it had accepted before: the endpoint's name now leads to "
    "another server (a failover or a Blue/Green switchover, until DNS follows it), or the "
    "credentials lost their rds-db:connect permission."
)


def read_only_failure(cfg: SqlConfig, answer: str) -> ConnectError:
    """The login reached a server that does not take writes (a later attempt may reach the one
    that does: transient)."""
    failure = ConnectError(
        f"{cfg.label}: the server at {cfg.host}:{cfg.port} does not take writes ({answer}), "
        f"and this instance is meant to ({cfg.prefix}WRITER, true by default for a cluster "
        "endpoint): the endpoint still leads to a reader, as during an Aurora failover or a "
        "Blue/Green switchover until DNS follows the new writer. iamdb closed that connection "
        "and tries again until the invocation's deadline; a longer one (or "
        "iamdb.set_lambda_context(context)) rides the move out.",
        **where(cfg),
    )
    failure._transient = True
    return failure
