"""What a shared object needs in order to load: read from its ELF headers, nothing executed.

Lambda loads a layer's ``.so`` files with the runtime's dynamic linker, so the facts that
decide whether it can are in the file: the machine it was built for (``e_machine``), the
libraries it needs (``DT_NEEDED``, found through ``DT_RPATH``/``DT_RUNPATH``) and the newest
symbol version it needs from each (``GLIBC_2.28`` in ``.gnu.version_r``): a library built
against a newer glibc than the runtime's fails to load whatever its wheel's tag claims.
Only 64-bit little-endian ELF is read fully (both Lambda architectures); other classes are
reported as such and refused by the checks.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"\x7fELF"
_SHT_DYNAMIC = 6
_SHT_GNU_VERNEED = 0x6FFFFFFE
_DT_NEEDED, _DT_SONAME, _DT_RPATH, _DT_RUNPATH = 1, 14, 15, 29
_GLIBC = re.compile(r"^GLIBC_(\d+)\.(\d+)(?:\.\d+)?$")


class ElfError(ValueError):
    """Not an ELF file this reader understands (truncated, 32-bit, big-endian)."""


@dataclass(frozen=True)
class ElfInfo:
    """The loading facts of one ELF file (``strip`` must leave them all unchanged)."""

    machine: int
    needed: tuple[str, ...]
    soname: str | None
    rpath: tuple[str, ...]
    versions: frozenset[str]  # every symbol version required: GLIBC_2.17, GLIBCXX_3.4, ...

    @property
    def glibc(self) -> tuple[int, int]:
        """The newest glibc it needs (``(2, 2)`` when it names none)."""
        found = [(int(m[1]), int(m[2])) for v in self.versions if (m := _GLIBC.match(v))]
        return max(found, default=(2, 2))


def is_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == MAGIC


def read(path: Path) -> ElfInfo:
    """The loading facts of ``path``; ElfError when it is not a 64-bit little-endian ELF."""
    data = path.read_bytes()
    if data[:4] != MAGIC:
        raise ElfError(f"{path.name}: not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise ElfError(
            f"{path.name}: not 64-bit little-endian ELF (class {data[4]}, data {data[5]})"
        )
    try:
        return _read64(data)
    except (struct.error, IndexError) as exc:
        raise ElfError(f"{path.name}: truncated or malformed ELF ({exc})") from None


def _read64(data: bytes) -> ElfInfo:
    machine = struct.unpack_from("<H", data, 18)[0]
    shoff, shentsize, shnum = (
        struct.unpack_from("<Q", data, 40)[0],
        *struct.unpack_from("<HH", data, 58),
    )
    sections = [
        struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)
    ]
    # (name, type, flags, addr, offset, size, link, info, addralign, entsize)

    def string(table: int, offset: int) -> str:
        start = sections[table][4] + offset
        return data[start : data.index(b"\0", start)].decode("utf-8", "replace")

    needed: list[str] = []
    soname: str | None = None
    rpath: list[str] = []
    versions: set[str] = set()
    for _, kind, _, _, offset, size, link, info, _, _ in sections:
        if kind == _SHT_DYNAMIC:
            for pos in range(offset, offset + size, 16):
                tag, value = struct.unpack_from("<qQ", data, pos)
                if tag == _DT_NEEDED:
                    needed.append(string(link, value))
                elif tag == _DT_SONAME:
                    soname = string(link, value)
                elif tag in (_DT_RPATH, _DT_RUNPATH):
                    rpath.append(string(link, value))
        elif kind == _SHT_GNU_VERNEED:
            pos = offset
            for _ in range(info):  # Elf64_Verneed: version, cnt, file, aux, next
                _, count, _, aux, following = struct.unpack_from("<HHIII", data, pos)
                entry = pos + aux
                for _ in range(count):  # Elf64_Vernaux: hash, flags, other, name, next
                    _, _, _, name, step = struct.unpack_from("<IHHII", data, entry)
                    versions.add(string(link, name))
                    entry += step
                pos += following
    return ElfInfo(machine, tuple(needed), soname, tuple(rpath), frozenset(versions))
