"""ELF loading facts (layer/layerbuild/elf.py) against binutils' readelf, the oracle; and strip."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from layerbuild import elf
from layerbuild.build import BuildError, strip_shared_objects

_SPEC = importlib.util.find_spec("psycopg_binary")  # real wheels' ELF files, never imported
_PACKAGE = Path(_SPEC.origin if _SPEC and _SPEC.origin else "/nonexistent").parent
BINARIES = sorted(
    [*_PACKAGE.glob("*.so*"), *(_PACKAGE.parent / "psycopg_binary.libs").glob("*.so*")]
)


def _readelf(path: Path) -> tuple[set[str], list[str]]:
    out = subprocess.run(["readelf", "-V", "-d", str(path)], capture_output=True, text=True).stdout
    return set(re.findall(r"Name: (\S+)\s+Flags", out)), re.findall(r"\(NEEDED\).*\[(.*)\]", out)


@pytest.mark.skipif(shutil.which("readelf") is None, reason="binutils' readelf is the oracle")
def test_versions_and_needed_libraries_match_readelf() -> None:
    assert len(BINARIES) >= 5
    for path in BINARIES:
        info = elf.read(path)
        assert (set(info.versions), list(info.needed)) == _readelf(path), path.name
        assert info.machine == 62  # this machine's wheels: x86_64


def _patched(tmp_path: Path, old: bytes, new: bytes, offset: int | None = None) -> Path:
    source = next(p for p in BINARIES if b"GLIBC_2.14" in p.read_bytes())
    data = bytearray(source.read_bytes())
    if offset is not None:
        data[offset : offset + len(new)] = new
    else:
        data = bytearray(bytes(data).replace(old, new))
    path = tmp_path / source.name
    path.write_bytes(bytes(data))
    return path


def test_machine_and_newest_glibc_are_read_from_the_file(tmp_path: Path) -> None:
    arm = _patched(tmp_path, b"", (183).to_bytes(2, "little"), offset=18)
    assert elf.read(arm).machine == 183
    newer = _patched(tmp_path, b"GLIBC_2.14", b"GLIBC_2.99")
    assert elf.read(newer).glibc == (2, 99)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"#!/bin/sh\n", "not an ELF file"),
        (b"\x7fELF\x01\x01" + b"\0" * 58, "not 64-bit little-endian"),
        (b"\x7fELF\x02\x01" + b"\0" * 30, "truncated or malformed"),
    ],
    ids=["script", "32-bit", "truncated"],
)
def test_what_is_not_a_64_bit_elf_is_an_error(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "x.so"
    path.write_bytes(data)
    with pytest.raises(elf.ElfError, match=message):
        elf.read(path)


@pytest.mark.skipif(shutil.which("strip") is None, reason="needs binutils' strip")
def test_stripping_keeps_every_loading_fact(tmp_path: Path) -> None:
    for path in BINARIES:
        shutil.copy(path, tmp_path / path.name)
    before = {p.name: (elf.read(p), p.stat().st_size) for p in tmp_path.iterdir()}
    saved = strip_shared_objects(tmp_path, shutil.which("strip") or "strip")
    after = {p.name: (elf.read(p), p.stat().st_size) for p in tmp_path.iterdir()}
    assert {n: i for n, (i, _) in after.items()} == {n: i for n, (i, _) in before.items()}
    assert saved == sum(before[n][1] - after[n][1] for n in before) >= 0


def test_a_strip_that_changes_loading_facts_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "fake-strip"
    # copies its input but renames the GLIBC version it needs: what a broken tool could do
    broken.write_text(
        "#!/bin/sh\n"
        'python3 -c \'import sys; d=open(sys.argv[2],"rb").read();'
        ' open(sys.argv[1],"wb").write(d.replace(b"GLIBC_2.14", b"GLIBC_2.99"))\' "$3" "$4"\n'
    )
    broken.chmod(0o755)
    layer = tmp_path / "python"
    layer.mkdir()
    source = next(p for p in BINARIES if b"GLIBC_2.14" in p.read_bytes())
    shutil.copy(source, layer / source.name)
    with pytest.raises(BuildError, match="changed what"):
        strip_shared_objects(layer, str(broken))
    assert (layer / source.name).read_bytes() == source.read_bytes()  # the original stays
