"""A runner's clients and the steps a call asks of it.

One Mongo instance has one set of credentials (:class:`~iamdb._mongo.handle.MongoHandle`) and
clients per runner (:class:`Clients`): the blocking ``get_mongo()``'s, and one
``AsyncMongoClient`` per event loop for :mod:`iamdb.aio`. What a call does is one generator
(:meth:`MongoHandle.steps <iamdb._mongo.handle.MongoHandle.steps>`) that yields these steps;
each runner does them with its own I/O (:mod:`iamdb._core.steps`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from iamdb._mongo.refusals import login_refused

if TYPE_CHECKING:
    from iamdb._aws.sts import Lease


@dataclass(frozen=True)
class Held:
    """A client, the lease it logged in with, and its refusal listener (see login_refused)."""

    client: Any = field(repr=False)
    lease: Lease
    watch: Any = field(repr=False)

    def refused(self) -> bool:
        return login_refused(self.client, self.watch)


@dataclass
class Clients:
    """One runner's clients (the blocking one's, or one event loop's): the current client, and
    those a swap retired, closed on the next call (a caller may still be reading a cursor)."""

    current: Held | None = None
    retired: list[Held] = field(default_factory=list)
    hold_until: float = 0.0  # a renewal failed: keep the current client until then
    last_used: float = 0.0  # when a call last handed the current client out

    def all(self) -> list[Held]:
        return [*self.retired, *([self.current] if self.current is not None else [])]


class FetchLease(NamedTuple):
    """Step: new credentials (blocking: :meth:`MongoHandle.fresh_lease`) by ``deadline``; send
    back the Lease."""

    deadline: float


class OpenClient(NamedTuple):
    """Step: a client logged in with ``lease`` by ``deadline``; send it back."""

    lease: Lease
    deadline: float


class CheckClient(NamedTuple):
    """Step: ping a client idle too long, by ``deadline``; send back None or why it failed."""

    held: Held
    deadline: float


class CloseClient(NamedTuple):
    """Step: close a retired client (:meth:`MongoHandle.before_close` first)."""

    held: Held


MongoStep = FetchLease | OpenClient | CloseClient | CheckClient
