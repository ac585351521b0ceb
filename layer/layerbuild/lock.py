"""``layer/requirements.txt``: one lock, with hashes, for every target; read for one target.

The lock is universal (``uv pip compile --universal``): a package whose version differs between
targets appears once per version, each line with the environment marker that selects it
(psycopg 3.2 for python3.11 on arm64, see requirements.in). pip evaluates markers against the
Python that runs it, not the ``--python-version`` it installs for, so the build evaluates them
itself for the target and hands pip only that target's lines, markers removed, hashes kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from layerbuild.targets import Target

try:  # the build runs under any python3 (sam build): pip always carries packaging
    from packaging.markers import Marker
except ImportError:  # pragma: no cover - depends on the machine
    from pip._vendor.packaging.markers import Marker  # type: ignore[assignment]

_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")
_HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")


class LockError(ValueError):
    """The lock cannot be read, or does not give the target exactly one version of a package."""


@dataclass(frozen=True)
class Pin:
    """One locked distribution: ``name==version ; marker`` and its hashes."""

    name: str
    version: str
    marker: str | None
    hashes: tuple[str, ...]

    def requirement(self) -> str:
        """The line pip gets (no marker: it was evaluated for the target already)."""
        hashes = "".join(f" \\\n    --hash={h}" for h in self.hashes)
        return f"{self.name}=={self.version}{hashes}"


def read(path: Path) -> list[Pin]:
    """Every pin of the lock file, in order."""
    pins: list[Pin] = []
    current: tuple[str, str, str | None] | None = None
    hashes: list[str] = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("--") else raw.strip()
        if not line:
            continue
        found = _HASH.search(line)
        if found:
            if current is None:
                raise LockError(f"{path}:{number}: a hash before any requirement")
            hashes.append(found.group(1))
            continue
        match = _LINE.match(line)
        if not match:
            raise LockError(f"{path}:{number}: not a pinned requirement: {raw.strip()!r}")
        if current is not None:
            pins.append(Pin(*current, tuple(hashes)))
        current, hashes = (match.group(1).lower(), match.group(2), match.group(3)), []
    if current is not None:
        pins.append(Pin(*current, tuple(hashes)))
    for pin in pins:
        if not pin.hashes:
            raise LockError(f"{path}: {pin.name}=={pin.version} has no --hash")
    return pins


def environment(target: Target) -> dict[str, str]:
    """PEP 508 marker variables of the target's interpreter on Lambda."""
    version = target.runtime.dotted
    return {
        "python_version": version,
        "python_full_version": f"{version}.0",
        "implementation_name": "cpython",
        "implementation_version": f"{version}.0",
        "platform_python_implementation": "CPython",
        "platform_machine": target.arch.machine,
        "platform_system": "Linux",
        "sys_platform": "linux",
        "os_name": "posix",
        "platform_release": "",
        "platform_version": "",
    }


def _applies(target: Target) -> Callable[[Pin], bool]:
    env = environment(target)
    return lambda pin: pin.marker is None or Marker(pin.marker).evaluate(env)


def for_target(pins: list[Pin], target: Target) -> list[Pin]:
    """The pins the target installs: exactly one version of each package it needs."""
    chosen = [pin for pin in pins if _applies(target)(pin)]
    seen: dict[str, str] = {}
    for pin in chosen:
        if pin.name in seen:
            raise LockError(
                f"{target.name}: the lock gives {pin.name} twice ({seen[pin.name]} and "
                f"{pin.version}): its markers overlap"
            )
        seen[pin.name] = pin.version
    return chosen


def requirements_text(pins: list[Pin]) -> str:
    """A pip requirements file of ``pins`` (``--require-hashes`` format)."""
    return "".join(pin.requirement() + "\n" for pin in pins)
