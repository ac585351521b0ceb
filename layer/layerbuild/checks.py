"""Every rule a built layer must pass before it ships, each failure a sentence naming the file.

- each installed wheel has a tag the target loads: its CPython version (or ``abi3`` at most
  that version, or pure Python) and a platform of the target's machine whose glibc is at most
  the runtime's (``manylinux2014`` = 2.17, ``manylinux_2_28``...; never a bare ``linux_*``);
- each ELF file is built for the target's machine and needs no glibc newer than the runtime's;
- each extension module (``*.cpython-*.so``) carries the target's ABI tag;
- each ``.pyc`` starts with the target's magic number, is named for it, and is hash-based and
  unchecked (``/opt`` is read-only: a timestamp ``.pyc`` would never be rewritten);
- boto3/botocore are not shipped (the runtime has them; a copy would shadow its own);
- iamdb and its RDS CA bundle are there.
"""

from __future__ import annotations

import re
from pathlib import Path

from layerbuild import elf
from layerbuild.targets import Target

_LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_MANYLINUX = re.compile(r"^manylinux_(\d+)_(\d+)_(\w+)$")
_EXTENSION = re.compile(r"\.(cpython-\d+[a-z]*-[\w]+-linux-gnu|abi3|cpython-\d+[a-z]*)\.so$")
_NOT_SHIPPED = ("boto3", "botocore", "s3transfer")


def platform_glibc(platform: str, machine: str) -> tuple[int, int] | None:
    """The glibc a wheel platform tag needs on ``machine``; None when it is not for it."""
    if platform == "any":
        return (0, 0)
    legacy, _, legacy_machine = platform.partition("_")
    if legacy in _LEGACY:
        return _LEGACY[legacy] if legacy_machine == machine else None
    match = _MANYLINUX.match(platform)
    if match and match.group(3) == machine:
        return int(match.group(1)), int(match.group(2))
    return None  # linux_x86_64 (no promise at all), musllinux, macOS, Windows, another machine


def tag_loads(tag: str, target: Target) -> bool:
    """Whether the wheel tag ``python-abi-platform`` loads on the target."""
    python, abi, platform = tag.split("-")
    glibc = platform_glibc(platform, target.arch.machine)
    if glibc is None or glibc > target.runtime.glibc:
        return False
    cp = f"cp{target.runtime.nodot}"
    if abi == "none":
        return python in ("py3", f"py{target.runtime.nodot}", cp)
    if abi == "abi3":
        found = re.fullmatch(r"cp3(\d+)", python)
        return found is not None and (3, int(found.group(1))) <= target.runtime.version
    return python == cp and abi == cp


def wheel_problems(root: Path, target: Target) -> list[str]:
    problems = []
    for wheel in sorted(root.glob("*.dist-info/WHEEL")):
        tags = [
            line.split(":", 1)[1].strip()
            for line in wheel.read_text().splitlines()
            if line.startswith("Tag:")
        ]
        if not any(tag_loads(tag, target) for tag in tags):
            problems.append(
                f"{wheel.parent.name}: wheel tags {', '.join(tags) or 'none'} do not load on "
                f"{target.runtime.name} {target.arch.name} (glibc "
                f"{'.'.join(map(str, target.runtime.glibc))})"
            )
    return problems


def elf_problems(root: Path, target: Target) -> list[str]:
    problems = []
    limit = target.runtime.glibc
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        if not elf.is_elf(path):
            continue
        where = path.relative_to(root)
        try:
            info = elf.read(path)
        except elf.ElfError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if info.machine != target.arch.elf_machine:
            problems.append(
                f"{where}: built for ELF machine {info.machine}, not {target.arch.machine} "
                f"({target.arch.elf_machine})"
            )
        if info.glibc > limit:
            problems.append(
                f"{where}: needs glibc {'.'.join(map(str, info.glibc))}, {target.runtime.name} "
                f"has {'.'.join(map(str, limit))} ({target.runtime.os})"
            )
        found = _EXTENSION.search(path.name)
        wanted = f"cpython-{target.runtime.nodot}-{target.arch.machine}-linux-gnu"
        if found and found.group(1) not in (wanted, "abi3"):
            problems.append(f"{where}: extension module for {found.group(1)}, not {wanted}")
    return problems


def pyc_problems(root: Path, target: Target) -> list[str]:
    problems = []
    magic = target.runtime.magic_bytes
    suffix = f".cpython-{target.runtime.nodot}.pyc"
    for pyc in sorted(root.rglob("*.pyc")):
        where = pyc.relative_to(root)
        head = pyc.read_bytes()[:8]
        if head[:4] != magic:
            problems.append(
                f"{where}: magic {int.from_bytes(head[:2], 'little')}, {target.runtime.name} "
                f"loads {target.runtime.pyc_magic}"
            )
        elif int.from_bytes(head[4:8], "little") != 0b01:
            problems.append(f"{where}: not an unchecked-hash .pyc (flags {head[4:8].hex()})")
        if not pyc.name.endswith(suffix):
            problems.append(f"{where}: named for another interpreter (expected *{suffix})")
    return problems


def content_problems(root: Path) -> list[str]:
    problems = [
        f"{name}/ is in the layer: the runtime provides it (a copy would shadow the runtime's)"
        for name in _NOT_SHIPPED
        if (root / name).exists()
    ]
    if not (root / "iamdb" / "__init__.py").is_file():
        problems.append("iamdb/ is missing")
    if not (root / "iamdb" / "data" / "rds-ca-bundle.pem").is_file():
        problems.append("iamdb/data/rds-ca-bundle.pem (the RDS CA bundle) is missing")
    return problems


def problems(root: Path, target: Target) -> list[str]:
    """Everything wrong with the layer whose ``python/`` is ``root`` (empty: it ships)."""
    return (
        content_problems(root)
        + wheel_problems(root, target)
        + elf_problems(root, target)
        + pyc_problems(root, target)
    )
