"""A throwaway redis-server (Debian's Redis OSS 7.0) behind a front that checks IAM logins as
ElastiCache does.

ElastiCache cannot run here, so devstack runs the real server on loopback, plaintext, its
``default`` user off and one ACL user per cache user (with a password only devstack knows), and
puts :class:`ValkeyFront` before it: TLS with devstack's CA, then the RESP stream relayed both
ways. The front reads every command the client sends and rewrites the password of ``AUTH <user>
<token>`` and ``HELLO <v> AUTH <user> <token>``: a token the verifier accepts (SigV4 with the
secret devstack's STS issued, expiry, service ``elasticache``, region, ``User``, the cache name,
and ``elasticache:Connect`` on the cache and the user from template.yaml's policy for the
example function's role) becomes that user's real password; any other becomes one that fails,
so the server itself answers ``WRONGPASS``, in order with the client's other replies. As on
ElastiCache, ``AUTH`` inside ``MULTI`` is refused, and a connection is closed once its last
login is older than :attr:`ValkeyFront.max_age` (12 hours; seconds in tests): a fresh
``AUTH``/``HELLO`` restarts that clock. Events (logins, closes) are recorded without secrets.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from devstack.procs import RunAs, free_port, port_open, wait_until, which_or_fail
from devstack.tls import TlsFiles

log = logging.getLogger("devstack.valkey")

MAX_AGE = 43_200.0  # ElastiCache closes IAM connections 12 hours after their last login
_REFUSED_PASSWORD = "devstack-refused-token"  # no ACL user has it: the server says WRONGPASS


class RedisServer:
    """``redis-server`` on 127.0.0.1:``port``, no persistence, ``users`` -> their passwords.

    With ``announce`` (the port its front listens on), a one-shard cluster: cluster mode on, every
    slot its own, and ``CLUSTER SLOTS``/``SHARDS`` and ``MOVED`` naming the front, as a
    configuration endpoint (or a serverless cache) answers cluster clients."""

    def __init__(
        self, workdir: Path, users: list[str], run_as: RunAs | None, announce: int | None = None
    ) -> None:
        self.workdir, self.run_as, self.announce = workdir, run_as, announce
        self.port = free_port()
        self.passwords = {user: secrets.token_hex(16) for user in users}
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            f"dir {self.workdir}",
            'save ""',
            "appendonly no",
            "daemonize no",
            "user default off",
            *(f"user {u} on >{p} ~* &* +@all" for u, p in self.passwords.items()),
        ]
        if self.announce is not None:
            lines += [
                "cluster-enabled yes",
                f"cluster-port {free_port()}",
                "cluster-announce-ip 127.0.0.1",
                f"cluster-announce-port {self.announce}",
            ]
        config = self.workdir / "redis.conf"
        config.write_text("\n".join(lines) + "\n")
        config.chmod(0o600)
        if self.run_as is not None:
            self.run_as.chown(self.workdir)
        self._proc = subprocess.Popen(
            [which_or_fail("redis-server", "/usr/bin"), str(config)],
            stdout=(self.workdir / "redis.log").open("wb"),
            stderr=subprocess.STDOUT,
            preexec_fn=self.run_as.preexec() if self.run_as else None,
        )
        wait_until(lambda: port_open(self.port), 10, "redis-server")
        if self.announce is not None:
            self._cli("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
            wait_until(lambda: "cluster_state:ok" in self._cli("CLUSTER", "INFO"), 10, "cluster")

    def _cli(self, *command: str) -> str:
        """``command`` through redis-cli as the first user (the server's own port, plaintext)."""
        user, password = next(iter(self.passwords.items()))
        out = subprocess.run(
            [which_or_fail("redis-cli", "/usr/bin"), "-p", str(self.port), "--user", user,
             "--pass", password, "--no-auth-warning", *command],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        return out.stdout

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@dataclass(frozen=True)
class FrontEvent:
    """A login the front saw (``ok``: the token passed) or a connection it closed."""

    kind: str  # "auth", "hello", "auth in multi", "closed for age"
    user: str
    ok: bool
    reason: str
    at: float


@dataclass(eq=False)
class _Client:
    writer: asyncio.StreamWriter
    backend: asyncio.StreamWriter | None = None
    since: float = field(default_factory=time.time)  # the last login (or the connect)
    in_multi: bool = False


class ValkeyFront:
    """TLS on 127.0.0.1:``port`` before ``server``; ``verify(user, token) -> (ok, reason)``."""

    def __init__(
        self,
        server: RedisServer,
        tls: TlsFiles,
        verify: Callable[[str, str], tuple[bool, str]],
        *,
        max_age: float = MAX_AGE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.server, self.tls, self.max_age = server, tls, max_age
        self._verify, self._clock = verify, clock
        self.port = server.announce or free_port()
        self.events: deque[FrontEvent] = deque(maxlen=10_000)
        self._clients: set[_Client] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        ready = threading.Event()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.tls.cert), str(self.tls.key))

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            server = loop.run_until_complete(
                asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=context)
            )
            reaper = loop.create_task(self._reap())
            ready.set()
            loop.run_forever()
            server.close()
            reaper.cancel()
            self._close_all()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name="devstack-valkey", daemon=True)
        self._thread.start()
        ready.wait(10)

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        self._loop = self._thread = None

    def open_connections(self) -> int:
        return len(self._clients)

    def close_all(self) -> None:
        """Drop every client connection (a failover, a node replaced)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._close_all)

    def _close_all(self) -> None:
        for client in list(self._clients):
            self._close(client)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, max(0.05, self.max_age / 10)))
            now = self._clock()
            for client in list(self._clients):
                if now - client.since >= self.max_age:
                    self._record("closed for age", "", True, f"{now - client.since:.1f} s")
                    self._close(client)

    def _close(self, client: _Client) -> None:
        self._clients.discard(client)
        for writer in (client.writer, client.backend):
            if writer is not None:
                writer.close()

    def _record(self, kind: str, user: str, ok: bool, reason: str) -> None:
        self.events.append(FrontEvent(kind, user, ok, reason, self._clock()))
        if not ok:
            log.info("refused IAM login: %s user=%s reason=%s", kind, user, reason)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _Client(writer, since=self._clock())
        self._clients.add(client)
        try:
            back_reader, client.backend = await asyncio.open_connection(
                "127.0.0.1", self.server.port
            )
            relay = asyncio.ensure_future(self._relay(back_reader, writer))
            try:
                while True:
                    command = await _read_command(reader)
                    if command is None:
                        break
                    if not command:
                        continue
                    client.backend.write(_encode(await self._rewrite(client, command)))
                    await client.backend.drain()
            finally:
                relay.cancel()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, ValueError):
            pass
        except asyncio.CancelledError:  # the front stops: end quietly
            pass
        finally:
            self._close(client)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def _rewrite(self, client: _Client, command: list[bytes]) -> list[bytes]:
        name = command[0].upper() if command else b""
        if name == b"MULTI":
            client.in_multi = True
        elif name in (b"EXEC", b"DISCARD"):
            client.in_multi = False
        login = _login_args(command)
        if login is None:
            return command
        index, user = login
        kind = name.decode().lower()
        if client.in_multi:
            self._record("auth in multi", user, False, "AUTH is not allowed inside MULTI")
            return [*command[:index], _REFUSED_PASSWORD.encode(), *command[index + 1 :]]
        token = command[index].decode("utf-8", "replace")
        ok, reason = await asyncio.to_thread(self._verify, user, token)
        password = self.server.passwords.get(user) if ok else None
        self._record(kind, user, ok, reason)
        if password is None:
            return [*command[:index], _REFUSED_PASSWORD.encode(), *command[index + 1 :]]
        client.since = self._clock()
        return [*command[:index], password.encode(), *command[index + 1 :]]


def _login_args(command: list[bytes]) -> tuple[int, str] | None:
    """(index of the password, user) of ``AUTH user pass`` / ``HELLO v AUTH user pass``."""
    name = command[0].upper() if command else b""
    if name == b"AUTH" and len(command) == 3:
        return 2, command[1].decode("utf-8", "replace")
    if name == b"AUTH" and len(command) == 2:
        return 1, "default"
    if name == b"HELLO":
        upper = [arg.upper() for arg in command]
        if b"AUTH" in upper[2:]:
            at = upper.index(b"AUTH", 2)
            if at + 2 < len(command):
                return at + 2, command[at + 1].decode("utf-8", "replace")
    return None


async def _read_command(reader: asyncio.StreamReader) -> list[bytes] | None:
    """One client command: a RESP array of bulk strings, or an inline command; None at EOF."""
    line = await reader.readline()
    if not line:
        return None
    if not line.startswith(b"*"):
        return line.split()  # inline: PING\r\n
    count = int(line[1:].strip())
    args = []
    for _ in range(count):
        header = await reader.readline()
        if not header.startswith(b"$"):
            raise ValueError("expected a bulk string")
        size = int(header[1:].strip())
        args.append((await reader.readexactly(size + 2))[:-2])
    return args


def _encode(command: list[bytes]) -> bytes:
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)
