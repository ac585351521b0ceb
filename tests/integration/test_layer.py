"""The Lambda layers as ``make layer`` builds them: one per runtime and architecture, each usable.

- Every layer, read back from its zip, passes layerbuild's checks again: right wheels for the
  runtime's glibc, ELF machine, CPython ABI tags, ``.pyc`` magic (arm64 and python3.14 cannot be
  run here: this is what proves them).
- For each runtime with an interpreter on this machine, the x86_64 zip is unzipped into a
  throwaway directory laid out like ``/opt``, and a fresh process of that interpreter, with
  Lambda's ``sys.path`` and nothing of this machine's site-packages or of the repository's venv,
  logs in with ``get_pg``, ``get_mysql``, ``get_dsql`` and ``get_mongo`` against devstack, from
  the layer's stripped shared objects and precompiled ``.pyc``.
- ``.pyc`` compiled by Pyodide (how the python3.14 layers get theirs here) load and run on a
  native CPython of the same version, shown with 3.13.
- ``sam build``'s entry point (``make build-<LogicalId>``) builds into ``ARTIFACTS_DIR``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from devstack.sam.invoke import REPO, build_layers, runtime_paths
from devstack.stack import Stack
from layerbuild import checks, pyodide
from layerbuild.targets import RUNTIMES, TARGETS, Target, find_python
from layerbuild.targets import target as layer_target
from tests.conftest import mariadb_available

pytestmark = pytest.mark.integration

LOCAL = [r for r in RUNTIMES if find_python(r.dotted)]
PYODIDE_313 = REPO / "build" / "node" / "node_modules" / "pyodide313"  # make pyodide

# Runs inside the target interpreter as Lambda would start it: /var/task, then the layer at
# /opt/python/lib/pythonX.Y/site-packages and /opt/python, then the runtime's boto3.
_PROBE = r"""
import json, os, sys
task, opt, runtime, version, with_mysql = sys.argv[1:]
layer = os.path.join(opt, "python")
sys.path[:0] = [task, os.path.join(layer, "lib", "python" + version, "site-packages"), layer,
                runtime]
count = lambda: sum(len(files) for _, _, files in os.walk(opt))
before = count()
import iamdb
from iamdb import get_dsql, get_mongo, get_mysql, get_pg
import psycopg, psycopg_pool, pymongo, pymysql
done = {"pg": get_pg().execute("SELECT 1").fetchone()[0]}
if with_mysql == "1":
    with get_mysql().cursor() as cur:
        cur.execute("SELECT 1")
        done["mysql"] = cur.fetchone()[0]
done["dsql"] = get_dsql().execute("SELECT 1").fetchone()[0]
hits = get_mongo().get_database("iamdb_layer").get_collection("hits")
done["mongo"] = hits.find_one({"_id": hits.insert_one({"v": version}).inserted_id})["v"]
print(json.dumps({
    "done": done,
    "impl": psycopg.pq.__impl__,
    "files": {m.__name__: m.__file__ for m in (iamdb, psycopg, psycopg_pool, pymongo, pymysql)},
    "ca": iamdb._core.env.RDS_CA_BUNDLE,
    "new_files": count() - before,
    "sys_path": sys.path,
    "site_imported": "site" in sys.modules,
}))
"""


@pytest.fixture(scope="module")
def layers() -> dict[str, Path]:
    return build_layers()


def _unzip(target: Target, into: Path) -> Path:
    with zipfile.ZipFile(REPO / "build" / f"{target.name}.zip") as z:
        names = z.namelist()
        assert names and all(n.startswith("python/") for n in names)
        z.extractall(into)
    return into


@pytest.mark.parametrize("name", [t.name for t in TARGETS])
def test_every_zipped_layer_passes_the_checks_for_its_target(
    name: str, layers: dict[str, Path], tmp_path: Path
) -> None:
    target = layer_target(name)
    python = _unzip(target, tmp_path) / "python"
    assert checks.problems(python, target) == []
    report = json.loads((layers[name] / "layer.json").read_text())
    assert report["runtime"] == target.runtime.name and report["architecture"] == target.arch.name
    sources = [p for p in python.rglob("*.py") if "__pycache__" not in p.parts]
    pycs = list(python.rglob("*.pyc"))
    if target.runtime in LOCAL or report["pyc_by"]:  # by the target's CPython: one per module
        assert len(pycs) == len(sources)
    else:
        assert pycs == []
    if report["strip_tool"]:
        assert report["stripped_bytes"] > 0
    packages = report["packages"]
    assert not {"boto3", "botocore"} & set(packages)
    wanted = "3.2.13" if name == "iamdb-python311-arm64" else "3.3.9"  # glibc 2.26 on arm64
    assert packages["psycopg"] == packages["psycopg_binary"] == wanted


def _logs_in_from(opt: Path, python: str, version: str, stack: Stack, tmp_path: Path) -> None:
    """Run the probe with ``python`` from the layer unzipped at ``opt``: every login works from
    the layer's own files, on Lambda's path, with nothing compiled at run time."""
    task = tmp_path / "task"
    task.mkdir()
    runtime_dir = runtime_paths(python, version, REPO / "build" / "runtime")[0]
    with_mysql = mariadb_available()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", **stack.env}
    result = subprocess.run(
        [
            python,
            "-I",
            "-S",
            "-c",
            _PROBE,
            str(task),
            str(opt),
            runtime_dir,
            version,
            "1" if with_mysql else "0",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    probe = json.loads(result.stdout)
    assert probe["done"] == {
        "pg": 1,
        **({"mysql": 1} if with_mysql else {}),
        "dsql": 1,
        "mongo": version,
    }
    assert probe["impl"] == "binary"  # psycopg's libpq build, not the fallback Lambda lacks
    assert all(f.startswith(str(opt / "python")) for f in probe["files"].values()), probe
    assert Path(probe["ca"]).is_file() and probe["ca"].startswith(str(opt))
    assert probe["new_files"] == 0  # every .pyc was there already: /opt is read-only on Lambda
    assert probe["site_imported"] is False
    venv = str(Path(sys.prefix))
    assert not any(p.startswith(venv) for p in probe["sys_path"])  # not the repository's venv
    assert probe["sys_path"][:4] == [
        str(task),
        str(opt / "python" / "lib" / f"python{version}" / "site-packages"),
        str(opt / "python"),
        runtime_dir,
    ]


@pytest.mark.parametrize("runtime", [r.name for r in LOCAL])
def test_the_x86_64_layer_logs_in_to_every_database_from_lambdas_path(
    runtime: str, layers: dict[str, Path], stack: Stack, tmp_path: Path
) -> None:
    target = layer_target(f"iamdb-python{runtime[6:].replace('.', '')}-x86_64")
    python = find_python(target.runtime.dotted)
    assert python is not None
    opt = _unzip(target, tmp_path / "opt")
    _logs_in_from(opt, python, target.runtime.dotted, stack, tmp_path)


def test_pyc_compiled_by_pyodide_load_and_log_in_on_native_cpython(
    layers: dict[str, Path], stack: Stack, tmp_path: Path
) -> None:
    """The python3.14 layers' .pyc come from Pyodide's CPython 3.14 (no python3.14 here); the
    same path, on a version this machine runs: Pyodide's CPython 3.13 compiles the python3.13
    layer, and the native python3.13 imports those .pyc and logs in with them."""
    python = find_python("3.13")
    if python is None or pyodide.python_version(PYODIDE_313) != (3, 13):
        pytest.skip("needs python3.13 and Pyodide's CPython 3.13 (make pyodide)")
    target = layer_target("iamdb-python313-x86_64")
    opt = _unzip(target, tmp_path / "opt")
    for cache in list((opt / "python").rglob("__pycache__")):
        shutil.rmtree(cache)
    pyodide.compile_pyc(opt / "python", PYODIDE_313)
    assert checks.problems(opt / "python", target) == []  # magic 3571, unchecked hash
    sources = [p for p in (opt / "python").rglob("*.py") if "__pycache__" not in p.parts]
    assert len(list((opt / "python").rglob("*.pyc"))) == len(sources)
    _logs_in_from(opt, python, "3.13", stack, tmp_path)


def test_sam_entry_point_builds_into_artifacts_dir(tmp_path: Path) -> None:
    """What ``sam build`` runs for ``BuildMethod: makefile``: make build-<LogicalId>."""
    target = layer_target("iamdb-python311-arm64")
    result = subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(REPO / "layer"),
            f"build-{target.logical_id}",
            f"ARTIFACTS_DIR={tmp_path}",
            f"PYTHON={sys.executable}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert checks.problems(tmp_path / "python", target) == []
    assert (tmp_path / "python" / "psycopg_binary").is_dir()
    assert json.loads((tmp_path / "layer.json").read_text())["packages"]["psycopg"] == "3.2.13"
