"""The Lambda Python runtimes iamdb publishes layers for, and the layers themselves.

One table: adding a runtime is one line here (then the template's layer, its parameter and its
output; ``scripts/validate_template.py`` says what is missing).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Runtime:
    """A Lambda Python runtime: its CPython version and the glibc of its Amazon Linux."""

    version: tuple[int, int]
    glibc: tuple[int, int]
    os: str
    pyc_magic: int  # importlib.util.MAGIC_NUMBER of that CPython release, as a number

    @property
    def name(self) -> str:
        """Lambda's identifier: ``python3.13``."""
        return f"python{self.dotted}"

    @property
    def dotted(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    @property
    def nodot(self) -> str:
        return f"{self.version[0]}{self.version[1]}"

    @property
    def snapstart(self) -> bool:
        return self.version >= (3, 12)

    @property
    def magic_bytes(self) -> bytes:
        """The first four bytes of every ``.pyc`` this runtime loads."""
        return self.pyc_magic.to_bytes(2, "little") + b"\r\n"


@dataclass(frozen=True)
class Architecture:
    """A Lambda architecture and how its binaries are named."""

    name: str  # Lambda's: x86_64, arm64
    machine: str  # uname -m, wheel platform tags and extension suffixes: x86_64, aarch64
    elf_machine: int  # ELF e_machine
    logical: str  # in template logical ids: X86, Arm64


@dataclass(frozen=True)
class Target:
    """One layer: a runtime on an architecture."""

    runtime: Runtime
    arch: Architecture

    @property
    def name(self) -> str:
        """The layer's name, Powertools' style: ``iamdb-python313-arm64``."""
        return f"iamdb-python{self.runtime.nodot}-{self.arch.name}"

    @property
    def logical_id(self) -> str:
        """The template's ``AWS::Serverless::LayerVersion``: ``IamDbLayerPython313Arm64``."""
        return f"IamDbLayerPython{self.runtime.nodot}{self.arch.logical}"

    @property
    def parameter(self) -> str:
        """The SSM parameter holding the ARN, below the template's prefix."""
        return f"{self.runtime.name}/{self.arch.name}"


# AWS documentation, December 2026. Magic numbers: CPython's Lib/importlib/_bootstrap_external.py
# (checked against every local interpreter by tests/unit/layerbuild/test_targets.py).
RUNTIMES = (
    Runtime((3, 11), glibc=(2, 26), os="Amazon Linux 2", pyc_magic=3495),
    Runtime((3, 12), glibc=(2, 34), os="Amazon Linux 2023", pyc_magic=3531),
    Runtime((3, 13), glibc=(2, 34), os="Amazon Linux 2023", pyc_magic=3571),
    Runtime((3, 14), glibc=(2, 34), os="Amazon Linux 2023", pyc_magic=3627),
)
ARCHITECTURES = (
    Architecture("x86_64", "x86_64", elf_machine=62, logical="X86"),
    Architecture("arm64", "aarch64", elf_machine=183, logical="Arm64"),
)
TARGETS = tuple(Target(r, a) for r in RUNTIMES for a in ARCHITECTURES)


def target(name: str) -> Target:
    """The target named ``name`` (layer name or logical id); ValueError lists the known ones."""
    for t in TARGETS:
        if name in (t.name, t.logical_id):
            return t
    raise ValueError(f"no layer {name!r}: known are {', '.join(t.name for t in TARGETS)}")


def runtime(name: str) -> Runtime:
    """``python3.13`` (or ``3.13``) -> its Runtime; ValueError lists the known ones."""
    for r in RUNTIMES:
        if name in (r.name, r.dotted):
            return r
    raise ValueError(f"no Lambda runtime {name!r}: known are {', '.join(r.name for r in RUNTIMES)}")


def find_python(version: str) -> str | None:
    """An interpreter of ``version`` (``3.12``) that really runs: pyenv's, then PATH's.

    A pyenv shim on PATH may exist and fail, so every candidate is run once.
    """
    candidates: list[str] = []
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False)
        for found in sorted(Path(root.stdout.strip() or "/nonexistent").glob("versions/*")):
            if found.name == version or found.name.startswith(version + "."):
                candidates.append(str(found / "bin" / f"python{version}"))
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        candidates.append(sys.executable)
    on_path = shutil.which(f"python{version}")
    if on_path:
        candidates.append(on_path)
    return next((c for c in candidates if version_of(c) == version), None)


def version_of(python: str) -> str | None:
    """The version (``3.12``) of the interpreter at ``python``; None when it does not run."""
    try:
        probe = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return None
    return probe.stdout.strip() if probe.returncode == 0 else None
