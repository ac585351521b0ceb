"""Compiling a layer's ``.pyc``: by the target's interpreter, or by Pyodide's CPython."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from layerbuild import pyodide
from layerbuild.build import BuildError, compile_pyc


def test_a_module_the_target_cannot_compile_fails_the_build(tmp_path: Path) -> None:
    (tmp_path / "good.py").write_text("x = 1\n")
    (tmp_path / "bad.py").write_text("def f(:\n")  # would fail at import on Lambda too
    with pytest.raises(BuildError, match=r"compiling \.pyc with"):
        compile_pyc(tmp_path, sys.executable)


def test_unchecked_hash_pyc_for_every_module(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "mod.py").write_text("x = 1\n")
    compile_pyc(tmp_path, sys.executable)
    pycs = sorted(tmp_path.rglob("*.pyc"))
    assert len(pycs) == 2
    assert all(int.from_bytes(p.read_bytes()[4:8], "little") == 0b01 for p in pycs)


def test_pyodide_says_which_cpython_it_is(tmp_path: Path) -> None:
    assert pyodide.python_version(tmp_path) is None  # no package there
    (tmp_path / "pyodide-lock.json").write_text(json.dumps({"info": {"python": "3.14.2"}}))
    (tmp_path / "package.json").write_text(json.dumps({"version": "314.0.7"}))
    assert pyodide.python_version(tmp_path) == (3, 14)
    assert pyodide.describe(tmp_path).startswith("Pyodide 314.0.7 (CPython 3.14.2")
    (tmp_path / "pyodide-lock.json").write_text("{}")
    assert pyodide.python_version(tmp_path) is None
