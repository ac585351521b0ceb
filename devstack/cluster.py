"""An Aurora-like cluster for devstack: two instances behind a writer and a reader endpoint, and
the moves that take the writer elsewhere.

Each instance is a real server (PostgreSQL or MariaDB) whose IAM logins the verifier checks for
the names it answers to: the cluster's writer and reader endpoints and its own. The endpoints'
names lead somewhere through :class:`~devstack.forwarder.Forwarder` (the writer endpoint on
127.0.0.1, the reader endpoint on 127.0.0.2, one port, as Aurora serves both on 5432), which
stand in for DNS. The reader refuses writes as Aurora's readers do (PostgreSQL
``default_transaction_read_only``, MariaDB ``read_only``).

- :meth:`Cluster.fail_over`: the reader is promoted, the old writer becomes a reader and its
  sessions end; the endpoints follow ``dns_delay`` seconds later (a cluster endpoint's 5 s TTL,
  and the caches after it). Until then the writer endpoint leads to a read-only server.
- :meth:`Cluster.switch_over`: a Blue/Green switchover, after :meth:`Cluster.stage_green` made
  the reader a green instance answering to green names only. Writes stop on both, sessions end,
  green takes blue's names (blue gets ``-old1`` ones, so it refuses tokens signed for the
  production names), writes resume on green, and DNS follows after ``dns_delay``.
- :meth:`Cluster.reset` puts it back as it started.

``events`` records when each step happened (epoch seconds), for tests and benches.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from devstack.forwarder import Forwarder
from devstack.verifier import Verifier

READER_ADDRESS = "127.0.0.2"  # the reader endpoint's address (the writer's is 127.0.0.1)


class Server(Protocol):
    """What the cluster needs of an instance's server (Postgres, MariaDB)."""

    port: int

    def set_read_only(self, on: bool) -> None: ...
    def kill_connections(self, user: str) -> int: ...
    def stop(self) -> None: ...


@dataclass(frozen=True)
class Names:
    """An Aurora cluster's endpoint names: ``<id>.cluster-<hash>.<region>.rds.amazonaws.com``,
    its reader's (``cluster-ro-``) and each instance's."""

    cluster_id: str
    suffix: str  # "c0data000000.us-east-1.rds.amazonaws.com"

    @property
    def writer(self) -> str:
        return f"{self.cluster_id}.cluster-{self.suffix}"

    @property
    def reader(self) -> str:
        return f"{self.cluster_id}.cluster-ro-{self.suffix}"

    def instance(self, number: int) -> str:
        return f"{self.cluster_id}-{number}.{self.suffix}"

    def all(self, instances: int) -> list[str]:
        return [self.writer, self.reader, *(self.instance(i + 1) for i in range(instances))]

    def renamed(self, tail: str) -> Names:
        """The names after a Blue/Green rename: ``<id>-old1`` or ``<id>-green-<random>``."""
        return Names(f"{self.cluster_id}-{tail}", self.suffix)


@dataclass
class Instance:
    server: str  # the verifier's name for it
    number: int  # 1, 2: its instance endpoint is Names.instance(number)
    db: Server


@dataclass
class Cluster:
    """Two instances behind a writer and a reader endpoint (see the module docstring)."""

    names: Names
    port: int  # both endpoints' port (what tokens are signed for)
    instances: tuple[Instance, Instance]
    verifier: Verifier
    users: tuple[str, ...]  # whose sessions a failover ends
    events: list[tuple[str, float]] = field(default_factory=list)
    writer: Instance = field(init=False)
    reader: Instance = field(init=False)
    _forwarders: dict[str, Forwarder] = field(init=False, default_factory=dict)
    _timer: threading.Timer | None = field(init=False, default=None)
    _followed: threading.Event = field(init=False, default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.writer, self.reader = self.instances

    @staticmethod
    def green(names: Names) -> Names:
        return names.renamed("green-x7k2m9")

    def start(self) -> None:
        """Start the endpoints' forwarders; the first instance takes writes, the second not."""
        self._forwarders = {
            "writer": Forwarder("127.0.0.1", self.port, self.writer.db.port),
            "reader": Forwarder(READER_ADDRESS, self.port, self.reader.db.port),
        }
        for forwarder in self._forwarders.values():
            forwarder.start()
        self.reset()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for forwarder in self._forwarders.values():
            forwarder.stop()

    def reset(self) -> None:
        """As started: the first instance the writer, names and endpoints in place."""
        if self._timer is not None:
            self._timer.cancel()
        self.writer, self.reader = self.instances
        for instance in self.instances:
            self.verifier.rename(instance.server, self._names_of(self.names, instance))
        self.reader.db.set_read_only(True)
        self.writer.db.set_read_only(False)
        self._point(self.writer, self.reader)
        self._followed.set()
        self.events.clear()

    def kill_sessions(self, instance: Instance) -> int:
        """End the application's sessions on ``instance``; how many ended."""
        return sum(instance.db.kill_connections(user) for user in self.users)

    def fail_over(self, dns_delay: float = 0.0, *, end_sessions: bool = True) -> None:
        """Promote the reader; the old writer becomes a reader and its sessions end (unless
        ``end_sessions`` is false: they stay, and find it read-only); the endpoints lead to the
        new roles ``dns_delay`` seconds later."""
        old, new = self.writer, self.reader
        self._followed.clear()
        new.db.set_read_only(False)
        old.db.set_read_only(True)
        if end_sessions:
            self.kill_sessions(old)
        self.writer, self.reader = new, old
        self._event("failover")
        self._later(dns_delay, lambda: self._point(new, old))

    def stage_green(self) -> None:
        """Make the reader a Blue/Green deployment's green instance: it answers to green names
        only, until :meth:`switch_over`."""
        green = self.reader
        self.verifier.rename(green.server, self._names_of(self.green(self.names), green))

    def switch_over(self, dns_delay: float = 0.0) -> None:
        """A Blue/Green switchover (after :meth:`stage_green`), as RDS runs it: writes stop and
        sessions end on both; green takes the production names and blue ``-old1`` ones; writes
        resume on green; the endpoints lead to green ``dns_delay`` seconds later."""
        blue, green = self.writer, self.reader
        self._followed.clear()
        blue.db.set_read_only(True)
        for instance in (blue, green):
            self.kill_sessions(instance)
        self.verifier.rename(green.server, self._names_of(self.names, blue))
        self.verifier.rename(blue.server, self._names_of(self.names.renamed("old1"), blue))
        green.db.set_read_only(False)
        self.writer, self.reader = green, blue
        self._event("switchover")
        self._later(dns_delay, lambda: self._point(green, green))

    def wait_followed(self, timeout: float = 30.0) -> bool:
        """Wait until the endpoints lead where the last move says."""
        return self._followed.wait(timeout)

    def at(self, what: str) -> float:
        """When ``what`` (``failover``, ``switchover``, ``dns``) last happened."""
        return max(t for name, t in self.events if name == what)

    def _names_of(self, names: Names, instance: Instance) -> list[str]:
        return [names.writer, names.reader, names.instance(instance.number)]

    def _point(self, writer: Instance, reader: Instance) -> None:
        self._forwarders["writer"].point_to(writer.db.port)
        self._forwarders["reader"].point_to(reader.db.port)
        self._event("dns")
        self._followed.set()

    def _later(self, delay: float, then: Callable[[], None]) -> None:
        if delay <= 0:
            then()
            return
        self._timer = threading.Timer(delay, then)
        self._timer.daemon = True
        self._timer.start()

    def _event(self, what: str) -> None:
        self.events.append((what, time.time()))
