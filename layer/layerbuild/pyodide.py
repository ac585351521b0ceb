"""``.pyc`` for a CPython this machine cannot run natively: Pyodide's CPython, under Node.js.

Pyodide is CPython compiled to WebAssembly, published on npm; 314.x is CPython 3.14. A ``.pyc``
holds the marshalled code objects of one CPython minor version, whatever machine compiled them:
the magic number names the bytecode and marshal format, both fixed within a minor version. So
Pyodide's ``compileall`` writes the same kind of file Lambda's python3.14 would, for a layer
whose python3.14 this machine lacks (here: none). Hash-based and unchecked like the others.
``tests/integration/test_layer.py`` proves the path on a version both have: a layer compiled
by Pyodide's CPython 3.13 imports and logs in on this machine's native python3.13.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

# argv: the Pyodide package directory, then the layer's python/ directory (mounted as /layer)
_COMPILE = """
import { pathToFileURL } from "node:url";
const [pyodideDir, layer] = process.argv.slice(1);
const { loadPyodide } = await import(pathToFileURL(pyodideDir + "/pyodide.mjs").href);
const py = await loadPyodide({ indexURL: pyodideDir + "/" });
py.FS.mkdir("/layer");
py.FS.mount(py.FS.filesystems.NODEFS, { root: layer }, "/layer");
const ok = py.runPython(`
import compileall, py_compile
compileall.compile_dir("/layer", quiet=1,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
`);
process.exit(ok ? 0 : 1);
"""


class PyodideError(Exception):
    """Pyodide could not compile the layer (its output says why)."""


def python_version(package: Path) -> tuple[int, int] | None:
    """The CPython version of the Pyodide npm package at ``package``; None when there is none."""
    try:
        info = json.loads((package / "pyodide-lock.json").read_text())["info"]
        major, minor = str(info["python"]).split(".")[:2]
        return int(major), int(minor)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def describe(package: Path) -> str:
    info = json.loads((package / "pyodide-lock.json").read_text())["info"]
    version = json.loads((package / "package.json").read_text())["version"]
    return f"Pyodide {version} (CPython {info['python']}, WebAssembly, under Node.js)"


def compile_pyc(python_dir: Path, package: Path) -> None:
    """Compile every module of ``python_dir`` with the Pyodide at ``package``."""
    node = shutil.which("node")
    if node is None:
        raise PyodideError("node is not on PATH")
    result = subprocess.run(
        [node, "--input-type=module", "-e", _COMPILE, "--", str(package), str(python_dir)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-3000:]
        raise PyodideError(
            f"Pyodide could not compile {python_dir} (exit {result.returncode}):\n{output}"
        )
