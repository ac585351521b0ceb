"""The Lambda layers: size per runtime and architecture, cold imports per local interpreter.

- Size of each of the eight layers, unzipped and zipped, against today's python3.12 layer of the
  same architecture (the recipe before per-runtime layers: the same wheels and ``.pyc``, shared
  objects not stripped). Goals: <= 10 MB zipped and <= 30 MB unzipped per layer, leaving >= 220
  MB of Lambda's 250 MB (function and layers, unzipped) to the function.
- Cold import by each runtime's interpreter that this machine has, from its x86_64 layer as
  Lambda lays it out (``/opt/python``, nothing else but the runtime's boto3): ``import iamdb``,
  then the drivers (psycopg, PyMySQL, pymongo, valkey-py), with the layer's ``.pyc`` against a
  copy without (``/opt`` is read-only: without them every cold start compiles), and iamdb +
  drivers against today's python3.12 layer (goal: no runtime's layer imports slower).
- A warm invocation through ``python -m devstack invoke`` (awslambdaric + the local Runtime API)
  against calling the same trivial handler in-process: the local invoke's own overhead.

Run: ``python -m bench.layer`` (builds the layers first when needed).
"""

from __future__ import annotations

import io
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from bench.table import Row, print_table
from devstack.sam.invoke import REPO, build_layers, environment, prepare, runtime_paths
from layerbuild.build import compile_pyc, install_wheels
from layerbuild.targets import RUNTIMES, TARGETS, Target, find_python, target

_MB = 1024 * 1024  # Lambda's MB are MiB: "250 MB" unzipped is 262,144,000 bytes
_IMPORTS = {
    "iamdb": "import iamdb",
    "drivers": "import psycopg, pymysql, pymongo, valkey",
    "iamdb + drivers": (
        "import iamdb, iamdb._registry, iamdb._sql.pg, iamdb._sql.mysql, psycopg, pymysql, "
        "pymongo, valkey"
    ),
}
_REPEAT = 9


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _zipped(python: Path) -> int:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(python.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(python.parent))
    return len(buffer.getvalue())


def todays_layer(arch: str, into: Path) -> Path:
    """The python3.12 layer as built before this change: the same wheels, not stripped, iamdb,
    ``.pyc`` by python3.12 when there is one."""
    baseline = target(f"iamdb-python312-{arch}")
    python = into / baseline.name / "python"
    python.mkdir(parents=True)
    install_wheels(baseline, python, sys.executable, REPO / "layer")
    shutil.copytree(
        REPO / "layer" / "iamdb", python / "iamdb", ignore=shutil.ignore_patterns("__pycache__")
    )
    interpreter = find_python("3.12")
    if interpreter:
        compile_pyc(python, interpreter)
    return python


def size_rows(layers: dict[str, Path], today: dict[str, Path]) -> list[Row]:
    rows = []
    for t in TARGETS:
        python = layers[t.name] / "python"
        base = today[t.arch.name]
        rows.append(
            Row(
                f"{t.name} unzipped, MB (baseline: today's python3.12 {t.arch.name})",
                _size(base) / _MB,
                _size(python) / _MB,
                "<= 30 MB (>= 220 MB of 250 left)",
            )
        )
        zipped = (REPO / "build" / f"{t.name}.zip").stat().st_size
        rows.append(
            Row(
                f"{t.name} zipped, MB (baseline: today's python3.12 {t.arch.name})",
                _zipped(base) / _MB,
                zipped / _MB,
                "<= 10 MB",
            )
        )
    return rows


def _import_ms(python: str, paths: list[str], code: str) -> float:
    """One fresh process: the import's wall time, from Lambda's path layout only."""
    timed = (
        f"import sys; sys.path[:0] = {paths!r}; import time; t = time.perf_counter(); "
        f"{code}; print((time.perf_counter() - t) * 1000)"
    )
    out = subprocess.run(
        [python, "-I", "-S", "-B", "-c", timed],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return float(out.stdout.strip())


Run = tuple[str, list[str]]  # an interpreter and the sys.path it imports from


def _interleaved_ms(first: Run, second: Run, code: str) -> tuple[float, float]:
    """The fastest of ``_REPEAT`` imports by each run, taken in turns. An import's own cost is
    fixed; other work on a shared machine only ever adds to it, so the least-disturbed run is
    the estimate (medians on a loaded 2-core machine put python3.12 with its own layer 1.5x off
    python3.12 with today's, which differ only in stripped debug sections)."""
    a, b = [], []
    for _ in range(_REPEAT):
        a.append(_import_ms(*first, code))
        b.append(_import_ms(*second, code))
    return min(a), min(b)


def _lambda_path(python_dir: Path, version: str, runtime: list[str]) -> list[str]:
    site = python_dir / "lib" / f"python{version}" / "site-packages"
    return [str(site), str(python_dir), *runtime]


def import_rows(t: Target, layer: Path, today: Path, python: str) -> list[Row]:
    version = t.runtime.dotted
    runtime = runtime_paths(python, version, REPO / "build" / "runtime")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "python"
        shutil.copytree(layer, bare, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for what in ("iamdb", "drivers"):
            without, with_pyc = _interleaved_ms(
                (python, _lambda_path(bare, version, runtime)),
                (python, _lambda_path(layer, version, runtime)),
                _IMPORTS[what],
            )
            rows.append(
                Row(
                    f"{t.runtime.name}: import {what}, ms (baseline: the layer without .pyc)",
                    without,
                    with_pyc,
                    "faster (ratio < 1)",
                )
            )
    python312 = find_python("3.12")
    if python312 is not None:
        runtime312 = runtime_paths(python312, "3.12", REPO / "build" / "runtime")
        baseline, mine = _interleaved_ms(
            (python312, _lambda_path(today, "3.12", runtime312)),
            (python, _lambda_path(layer, version, runtime)),
            _IMPORTS["iamdb + drivers"],
        )
        rows.append(
            Row(
                f"{t.runtime.name}: import iamdb + drivers, ms (baseline: today's 3.12 layer)",
                baseline,
                mine,
                "no slower (ratio <= ~1)",
            )
        )
    return rows


_HANDLER = "def handler(event, context):\n    return {'statusCode': 200}\n"
_TEMPLATE = """\
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties: {{CodeUri: code/, Handler: app.handler, Runtime: {runtime}, Timeout: 30}}
"""


def invoke_rows(repeat: int = 200) -> list[Row]:
    runtime = f"python{sys.version_info.major}.{sys.version_info.minor}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "code").mkdir()
        (root / "code" / "app.py").write_text(_HANDLER)
        (root / "template.yaml").write_text(_TEMPLATE.format(runtime=runtime))
        namespace: dict[str, object] = {}
        exec(_HANDLER, namespace)  # the in-process baseline
        handler = namespace["handler"]
        samples = []
        for _ in range(repeat):
            t = time.perf_counter_ns()
            handler({}, None)  # type: ignore[operator]
            samples.append(time.perf_counter_ns() - t)
        direct = statistics.median(samples) / 1e6
        prepared = prepare("Fn", template_path=root / "template.yaml", samconfig_path=None)
        with environment(prepared, log=io.StringIO()) as env:
            env.invoke(b"{}")  # cold
            walls = []
            for _ in range(repeat):
                t = time.perf_counter_ns()
                env.invoke(b"{}")
                walls.append(time.perf_counter_ns() - t)
    return [
        Row(
            "warm invocation, ms (baseline: in-process call)",
            direct,
            statistics.median(walls) / 1e6,
            "info: local invoke overhead",
        )
    ]


def main() -> None:
    layers = build_layers()
    with tempfile.TemporaryDirectory() as tmp:
        today = {arch: todays_layer(arch, Path(tmp)) for arch in ("x86_64", "arm64")}
        print_table("Lambda layers: size per runtime and architecture", size_rows(layers, today))
        rows: list[Row] = []
        for r in RUNTIMES:
            python = find_python(r.dotted)
            t = target(f"iamdb-python{r.nodot}-x86_64")
            if python is None:
                print(f"bench.layer: no {r.name} here: no import timings for it", file=sys.stderr)
                continue
            rows += import_rows(t, layers[t.name] / "python", today["x86_64"], python)
    rows += invoke_rows()
    print_table("Lambda layers: cold import per runtime (x86_64), local invoke", rows)


if __name__ == "__main__":
    main()
