"""What makes a layer unfit for its target (layer/layerbuild/checks.py), each case on real files.

A small layer is assembled from this machine's x86_64 wheels (ELF files), its own iamdb and
``.pyc`` compiled by the interpreter running the tests, then broken one way at a time.
"""

from __future__ import annotations

import importlib.util
import py_compile
import shutil
import sys
from pathlib import Path

import pytest

from layerbuild import checks
from layerbuild.targets import Target, target
from tests.paths import ROOT

_SPEC = importlib.util.find_spec("psycopg_binary")
_PACKAGE = Path(_SPEC.origin if _SPEC and _SPEC.origin else "/nonexistent").parent
HERE = f"{sys.version_info[0]}{sys.version_info[1]}"  # the interpreter running the tests
TARGET = target(f"iamdb-python{HERE}-x86_64")


@pytest.mark.parametrize(
    ("tag", "name", "loads"),
    [
        ("cp311-cp311-manylinux2014_x86_64", "iamdb-python311-x86_64", True),
        ("cp311-cp311-manylinux_2_26_x86_64", "iamdb-python311-x86_64", True),
        ("cp311-cp311-manylinux_2_28_x86_64", "iamdb-python311-x86_64", False),  # AL2: 2.26
        ("cp312-cp312-manylinux_2_28_x86_64", "iamdb-python312-x86_64", True),
        ("cp312-cp312-manylinux_2_35_x86_64", "iamdb-python312-x86_64", False),  # AL2023: 2.34
        ("cp312-cp312-manylinux_2_28_aarch64", "iamdb-python312-x86_64", False),
        ("cp312-cp312-manylinux_2_28_aarch64", "iamdb-python312-arm64", True),
        ("cp312-cp312-manylinux1_x86_64", "iamdb-python312-x86_64", True),
        ("cp312-cp312-linux_x86_64", "iamdb-python312-x86_64", False),  # no glibc promise
        ("cp312-cp312-musllinux_1_2_x86_64", "iamdb-python312-x86_64", False),
        ("cp312-cp312-manylinux2014_x86_64", "iamdb-python313-x86_64", False),  # another ABI
        ("cp313-cp313t-manylinux2014_x86_64", "iamdb-python313-x86_64", False),  # free-threaded
        ("cp38-abi3-manylinux2014_x86_64", "iamdb-python314-x86_64", True),
        ("cp315-abi3-manylinux2014_x86_64", "iamdb-python314-x86_64", False),
        ("py3-none-any", "iamdb-python314-arm64", True),
        ("py2-none-any", "iamdb-python314-arm64", False),
    ],
)
def test_wheel_tags(tag: str, name: str, loads: bool) -> None:
    assert checks.tag_loads(tag, target(name)) is loads


def _layer(root: Path, target: Target = TARGET) -> Path:
    python = root / "python"
    shutil.copytree(
        ROOT / "layer" / "iamdb", python / "iamdb", ignore=shutil.ignore_patterns("__pycache__")
    )
    (python / "psycopg_binary").mkdir()
    for so in _PACKAGE.glob("*.so"):  # pq.cpython-3XY-x86_64-linux-gnu.so
        shutil.copy(
            so,
            python
            / "psycopg_binary"
            / so.name.replace(f"cpython-{HERE}", f"cpython-{target.runtime.nodot}"),
        )
    dist = python / "psycopg_binary-3.3.9.dist-info"
    dist.mkdir()
    cp = f"cp{target.runtime.nodot}"
    dist.joinpath("WHEEL").write_text(f"Wheel-Version: 1.0\nTag: {cp}-{cp}-manylinux2014_x86_64\n")
    module = python / "iamdb" / "errors.py"
    py_compile.compile(str(module), invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    return python


def test_a_sound_layer_has_no_problem(tmp_path: Path) -> None:
    assert checks.problems(_layer(tmp_path), TARGET) == []


def test_each_defect_is_named(tmp_path: Path) -> None:
    python = _layer(tmp_path)
    (python / "boto3").mkdir()
    so = next((python / "psycopg_binary").glob("*.so"))
    data = bytearray(so.read_bytes())
    data[18:20] = (183).to_bytes(2, "little")  # now claims to be aarch64
    so.write_bytes(bytes(data))
    other = next(p for p in (python / "psycopg_binary").glob("*.so") if p != so)
    other.rename(other.with_name(other.name.replace(f"cpython-{HERE}", "cpython-39")))
    (python / "iamdb" / "data" / "rds-ca-bundle.pem").unlink()
    stale = python / "iamdb" / "__pycache__" / f"errors.cpython-{HERE}.pyc"
    py_compile.compile(str(python / "iamdb" / "errors.py"), cfile=str(stale))  # timestamp .pyc
    problems = "\n".join(checks.problems(python, TARGET))
    assert "boto3/ is in the layer" in problems
    assert f"{so.name}: built for ELF machine 183, not x86_64" in problems
    assert "extension module for cpython-39-x86_64-linux-gnu" in problems
    assert "rds-ca-bundle.pem (the RDS CA bundle) is missing" in problems
    assert "not an unchecked-hash .pyc" in problems


def test_pyc_of_another_python_and_wheels_of_another_runtime_are_refused(tmp_path: Path) -> None:
    other = target("iamdb-python313-x86_64" if HERE != "313" else "iamdb-python312-x86_64")
    python = _layer(tmp_path)  # built for this interpreter's runtime, checked for another
    problems = "\n".join(checks.problems(python, other))
    assert f"loads {other.runtime.pyc_magic}" in problems
    assert f"expected *.cpython-{other.runtime.nodot}.pyc" in problems
    assert f"do not load on {other.runtime.name} x86_64" in problems
    assert f"not cpython-{other.runtime.nodot}-x86_64-linux-gnu" in problems


def test_a_library_needing_a_newer_glibc_is_refused(tmp_path: Path) -> None:
    python = _layer(tmp_path, target("iamdb-python311-x86_64"))
    libs = python / "psycopg_binary.libs"
    libs.mkdir()
    source = next(
        p
        for p in (_PACKAGE.parent / "psycopg_binary.libs").glob("*.so*")
        if b"GLIBC_2.14" in p.read_bytes()
    )
    (libs / source.name).write_bytes(source.read_bytes().replace(b"GLIBC_2.14", b"GLIBC_2.27"))
    problems = checks.elf_problems(python, target("iamdb-python311-x86_64"))
    assert problems == [
        f"psycopg_binary.libs/{source.name}: needs glibc 2.27, python3.11 has 2.26 (Amazon Linux 2)"
    ]
