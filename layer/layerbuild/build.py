"""One layer's build: the target's wheels, iamdb, stripped shared objects, its ``.pyc``, checked.

Wheels are chosen for the target whatever Python runs pip: ``--python-version``, ``--implementation
cp``, ``--only-binary`` and every ``manylinux`` platform tag whose glibc is at most the runtime's
(so python3.11's layers, for Amazon Linux 2, never get a ``manylinux_2_28`` wheel). Shared objects
lose their debug sections (``strip --strip-debug``) when a strip for the target's machine is
found, and only if their loading facts (:class:`layerbuild.elf.ElfInfo`) stay identical. ``.pyc``
files are compiled by the target's own interpreter when the machine has one, else by Pyodide's
CPython of that version when it is installed (:mod:`layerbuild.pyodide`), hash-based and
unchecked (``/opt`` is read-only on Lambda: nothing compiled there is ever cached). Then every
rule of :mod:`layerbuild.checks` must pass, or the build fails and nothing is shipped.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from layerbuild import checks, elf, lock, pyodide
from layerbuild.targets import Target, find_python

SOURCE = Path(__file__).resolve().parent.parent  # layer/: iamdb/ and requirements.txt


class BuildError(Exception):
    """The layer cannot be built, or was built and fails a check: nothing ships."""


@dataclass(frozen=True)
class Report:
    """What a build did (also written to ``layer.json`` beside ``python/``)."""

    layer: str
    runtime: str
    architecture: str
    packages: dict[str, str]
    pyc_by: str | None  # the interpreter that compiled the .pyc, None: no .pyc
    strip_tool: str | None
    stripped_bytes: int
    unzipped_bytes: int


def platforms(target: Target) -> list[str]:
    """Every wheel platform tag the target loads, newest glibc first."""
    machine = target.arch.machine
    major, newest = target.runtime.glibc
    oldest = 17 if machine == "aarch64" else 5  # manylinux's first aarch64 tag is 2_17
    tags = [f"manylinux_{major}_{minor}_{machine}" for minor in range(newest, oldest - 1, -1)]
    legacy = ["manylinux2014"] + (["manylinux2010", "manylinux1"] if machine == "x86_64" else [])
    return tags + [f"{name}_{machine}" for name in legacy]


def strip_tool(target: Target) -> str | None:
    """A ``strip`` that understands the target's machine: binutils' for it, else llvm's."""
    names = [f"{target.arch.machine}-linux-gnu-strip"]
    if platform.machine() == target.arch.machine:
        names.append("strip")
    names.append("llvm-strip")
    return next((found for name in names if (found := shutil.which(name))), None)


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-3000:]
        raise BuildError(f"{what} failed (exit {result.returncode}):\n{output}")


def install_wheels(target: Target, python_dir: Path, python: str, source: Path) -> None:
    pins = lock.for_target(lock.read(source / "requirements.txt"), target)
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(lock.requirements_text(pins))
        command = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        command += ["--no-input", "--target", str(python_dir), "--require-hashes", "--no-deps"]
        command += ["--only-binary=:all:", "--no-compile", "--implementation", "cp"]
        command += ["--python-version", target.runtime.dotted]
        for tag in platforms(target):
            command += ["--platform", tag]
        _run([*command, "-r", str(requirements)], f"{target.name}: pip install")
    shutil.rmtree(python_dir / "bin", ignore_errors=True)


def strip_shared_objects(python_dir: Path, tool: str) -> int:
    """Strip debug sections from every ELF file; bytes saved. A file whose loading facts would
    change is a BuildError (the strip tool broke it)."""
    saved = 0
    for path in sorted(p for p in python_dir.rglob("*") if p.is_file() and not p.is_symlink()):
        if not elf.is_elf(path):
            continue
        stripped = path.with_name(path.name + ".stripped")
        _run([tool, "--strip-debug", "-o", str(stripped), str(path)], f"{tool} {path.name}")
        if elf.read(stripped) != elf.read(path):
            stripped.unlink()
            raise BuildError(f"{tool} changed what {path.name} needs to load: not stripping")
        saved += path.stat().st_size - stripped.stat().st_size
        stripped.chmod(path.stat().st_mode)
        stripped.replace(path)
    return saved


def compile_pyc(python_dir: Path, interpreter: str) -> None:
    """``.pyc`` for every module, by the target's interpreter (a file it cannot compile fails)."""
    _run(
        [
            interpreter,
            "-I",
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            str(python_dir),
        ],
        f"compiling .pyc with {interpreter}",
    )


def _compile(
    target: Target, python_dir: Path, target_python: str | None, pyodide_package: Path | None
) -> str | None:
    """Compile the ``.pyc`` with what this machine has for the target; what did, or None."""
    interpreter = target_python or find_python(target.runtime.dotted)
    if interpreter:
        compile_pyc(python_dir, interpreter)
        return interpreter
    if pyodide_package and pyodide.python_version(pyodide_package) == target.runtime.version:
        try:
            pyodide.compile_pyc(python_dir, pyodide_package)
        except pyodide.PyodideError as exc:
            message = str(exc)
        else:
            return pyodide.describe(pyodide_package)
        raise BuildError(f"{target.name}: {message}")
    return None


def _packages(python_dir: Path) -> dict[str, str]:
    found = {}
    for dist in sorted(python_dir.glob("*.dist-info")):
        name, _, version = dist.name.removesuffix(".dist-info").rpartition("-")
        found[name] = version
    return found


def build(
    target: Target,
    out: Path,
    *,
    python: str = sys.executable,
    target_python: str | None = None,
    pyodide_package: Path | None = None,
    source: Path = SOURCE,
    log: TextIO = sys.stderr,
) -> Report:
    """Build the layer into ``out/python`` (replacing it) and check it; BuildError on failure."""
    python_dir = out / "python"
    shutil.rmtree(python_dir, ignore_errors=True)
    python_dir.mkdir(parents=True)
    install_wheels(target, python_dir, python, source)
    shutil.copytree(
        source / "iamdb",
        python_dir / "iamdb",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    tool = strip_tool(target)
    saved = strip_shared_objects(python_dir, tool) if tool else 0
    if tool is None:
        print(
            f"layer: {target.name}: no strip for {target.arch.machine}: shared objects "
            "keep their debug sections",
            file=log,
        )
    pyc_by = _compile(target, python_dir, target_python, pyodide_package)
    if pyc_by is None:
        print(
            f"layer: {target.name}: no {target.runtime.name} interpreter here, nor Pyodide for "
            "it (make pyodide): no .pyc (the layer works; each cold start compiles what it "
            "imports)",
            file=log,
        )
    problems = checks.problems(python_dir, target)
    if problems:
        raise BuildError(f"{target.name} fails its checks:\n  " + "\n  ".join(problems))
    report = Report(
        layer=target.name,
        runtime=target.runtime.name,
        architecture=target.arch.name,
        packages=_packages(python_dir),
        pyc_by=pyc_by,
        strip_tool=tool,
        stripped_bytes=saved,
        unzipped_bytes=sum(p.stat().st_size for p in python_dir.rglob("*") if p.is_file()),
    )
    (out / "layer.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report
