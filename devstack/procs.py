"""Process plumbing shared by the devstack servers: free ports, waiting, privilege drop."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` every 20 ms until it is true; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"devstack: {what} not ready after {timeout:.0f} s")
        time.sleep(0.02)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class RunAs:
    """The unprivileged account a server runs as (None of this applies when not root)."""

    user: str
    uid: int
    gid: int

    @classmethod
    def for_servers(cls, preferred: str) -> RunAs | None:
        """``preferred`` (e.g. 'postgres') when running as root, else None (run as ourselves).

        Falls back to 'nobody' when the preferred account does not exist.
        """
        if os.geteuid() != 0:
            return None
        for name in (preferred, "nobody"):
            try:
                pw = pwd.getpwnam(name)
            except KeyError:
                continue
            return cls(name, pw.pw_uid, pw.pw_gid)
        raise RuntimeError("devstack: running as root and no unprivileged account to drop to")

    def chown(self, path: Path) -> None:
        """Give ``path`` (recursively) to this account."""
        for p in [path, *path.rglob("*")]:
            os.chown(p, self.uid, self.gid, follow_symlinks=False)

    def preexec(self) -> Callable[[], None]:
        """A ``preexec_fn`` for subprocess that drops to this account."""
        uid, gid, name = self.uid, self.gid, self.user

        def drop() -> None:
            os.setgid(gid)
            os.initgroups(name, gid)
            os.setuid(uid)

        return drop

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        home = pwd.getpwuid(self.uid).pw_dir
        env.update(HOME=home, USER=self.user, LOGNAME=self.user)
        return env


def make_traversable(path: Path) -> None:
    """Let unprivileged server accounts reach files below ``path`` (a temp dir we own)."""
    for p in [path, *path.parents]:
        if p == Path("/"):
            break
        mode = p.stat().st_mode
        if mode & 0o001 == 0:
            os.chmod(p, mode | 0o711)


def which_or_fail(name: str, *extra_dirs: str) -> str:
    """Find an executable on PATH or in ``extra_dirs``; explain what to install otherwise."""
    path = os.pathsep.join([*extra_dirs, os.environ.get("PATH", "")])
    found = shutil.which(name, path=path)
    if not found:
        raise RuntimeError(f"devstack: '{name}' not found (looked in {path}); run `make setup`")
    return found
