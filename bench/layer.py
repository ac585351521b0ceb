"""The Lambda layer: size per architecture, cold import with and without ``.pyc``, invoke overhead.

- Size: the built layer (unzipped and zipped) against the same layer with boto3 and its
  dependencies added (what ``pip install -t`` of the drivers would ship); goal <= 25 MB unzipped.
- Cold import of iamdb + psycopg + PyMySQL + pymongo by the target Python from the layer with
  its precompiled ``.pyc`` against a copy without (on Lambda ``/opt`` is read-only: without
  ``.pyc`` in the layer, every cold start compiles); goal >= 2.5x faster.
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
from devstack.sam.invoke import REPO, build_layers, environment, find_python, prepare, runtime_paths

_IMPORT = (
    "import iamdb, iamdb._registry, iamdb._sql.pg, iamdb._sql.mysql, psycopg, pymysql, pymongo, "
    "valkey"
)
_BOTO = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six.py")
_MB = 1024 * 1024


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _zipped(paths: list[Path], root: Path) -> int:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for base in paths:
            for p in [base] if base.is_file() else sorted(base.rglob("*")):
                if p.is_file():
                    z.write(p, p.relative_to(root))
    return len(buffer.getvalue())


def size_rows(layers: dict[str, Path], runtime: Path | None) -> list[Row]:
    rows = []
    boto = [runtime / name for name in _BOTO if runtime and (runtime / name).exists()]
    boto_size = sum(_size(p) if p.is_dir() else p.stat().st_size for p in boto)
    boto_zip = _zipped(boto, runtime) if runtime else 0
    for logical_id, arch in (("IamDbLayer", "x86_64"), ("IamDbLayerArm64", "arm64")):
        python = layers[logical_id] / "python"
        unzipped = _size(python)
        zip_file = REPO / "build" / f"iamdb-layer-python3.12-{arch}.zip"
        zipped = zip_file.stat().st_size if zip_file.exists() else _zipped([python], python.parent)
        rows.append(
            Row(
                f"{arch} unzipped, MiB (baseline: + boto3)",
                (unzipped + boto_size) / _MB,
                unzipped / _MB,
                "<= 25 MB (files only, MiB)",
            )
        )
        rows.append(
            Row(
                f"{arch} zipped, MiB (baseline: + boto3)",
                (zipped + boto_zip) / _MB,
                zipped / _MB,
                "info",
            )
        )
    return rows


def _import_ms(python: str, paths: list[str], repeat: int) -> float:
    code = (
        f"import sys; sys.path[:0] = {paths!r}; import time; t = time.perf_counter(); "
        f"{_IMPORT}; print((time.perf_counter() - t) * 1000)"
    )
    samples = []
    for _ in range(repeat):
        out = subprocess.run(
            [python, "-I", "-S", "-B", "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        samples.append(float(out.stdout.strip()))
    return statistics.median(samples)


def import_rows(layers: dict[str, Path], python: str, runtime: list[str]) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "python"
        shutil.copytree(
            layers["IamDbLayer"] / "python",
            bare,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        without = _import_ms(python, [str(bare), *runtime], 7)
    with_pyc = _import_ms(python, [str(layers["IamDbLayer"] / "python"), *runtime], 7)
    return [
        Row(
            "cold import from the layer, ms (baseline: no .pyc)",
            without,
            with_pyc,
            ">= 2.5x faster (ratio <= 0.4)",
        )
    ]


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
    python = find_python("3.12")
    runtime = runtime_paths(python, "3.12", REPO / "build" / "runtime") if python else []
    rows = size_rows(layers, Path(runtime[0]) if runtime else None)
    if python:
        rows += import_rows(layers, python, runtime)
    else:
        print("bench.layer: python3.12 not found: no import timings", file=sys.stderr)
    rows += invoke_rows()
    print_table("Lambda layer: size, cold import, local invoke", rows)


if __name__ == "__main__":
    main()
