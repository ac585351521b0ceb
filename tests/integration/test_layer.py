"""The Lambda layer as built by ``layer/Makefile``: contents, target wheels, precompiled ``.pyc``.

The layer is built (incrementally, from PyPI or pip's cache) with ``make layer``'s recipe into
``build/``; the import checks run the target interpreter (python3.12), as Lambda would, with
nothing on ``sys.path`` but the standard library, the layer's ``python/`` and the runtime's
own packages (boto3, as Lambda's ``/var/runtime`` has it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from devstack.sam.invoke import REPO, build_layers, find_python, runtime_paths

pytestmark = pytest.mark.integration

TARGET = "3.12"

# Runs inside the target Python: import everything from the layer, report what loaded.
_PROBE = r"""
import json, os, sys
sys.path[:0] = sys.argv[1:]  # the layer (/opt/python), then the runtime's boto3 (/var/runtime)
before = sum(len(f) for _, _, f in os.walk(sys.argv[1]))
import iamdb, iamdb._registry, iamdb._sql.pg, iamdb._sql.mysql, iamdb._mongo.aws
import psycopg, pymysql, pymongo
import iamdb._pool, psycopg_pool
after = sum(len(f) for _, _, f in os.walk(sys.argv[1]))
print(json.dumps({
    "impl": psycopg.pq.__impl__,
    "psycopg": psycopg.__file__,
    "psycopg_pool": psycopg_pool.__file__,
    "iamdb": iamdb.__file__,
    "ca": iamdb._core.env.RDS_CA_BUNDLE,
    "new_files": after - before,
    "boto3_in_layer": os.path.exists(os.path.join(sys.argv[1], "boto3")),
}))
"""


@pytest.fixture(scope="module")
def layers() -> dict[str, Path]:
    return build_layers()


@pytest.fixture(scope="module")
def python312() -> str:
    found = find_python(TARGET)
    if found is None:
        pytest.skip(f"python{TARGET} is not installed: cannot import the layer as Lambda would")
    return found


def _probe(python: str, layer_python: Path) -> dict[str, object]:
    runtime = runtime_paths(python, TARGET, REPO / "build" / "runtime")
    result = subprocess.run(
        [python, "-I", "-S", "-c", _PROBE, str(layer_python), *runtime],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    probe: dict[str, object] = json.loads(result.stdout)
    return probe


def test_x86_64_layer_imports_with_psycopg_binary(layers: dict[str, Path], python312: str) -> None:
    layer_python = layers["IamDbLayer"] / "python"
    probe = _probe(python312, layer_python)
    assert probe["impl"] == "binary"  # not the pure-Python fallback that needs libpq
    assert str(probe["psycopg"]).startswith(str(layer_python))
    assert str(probe["psycopg_pool"]).startswith(str(layer_python))  # iamdb.pg_pool()
    assert str(probe["iamdb"]).startswith(str(layer_python))
    assert Path(str(probe["ca"])).is_file()
    assert probe["new_files"] == 0  # every .pyc was there already: /opt is read-only on Lambda
    assert probe["boto3_in_layer"] is False


def test_pyc_are_compiled_by_the_target_python_with_unchecked_hashes(
    layers: dict[str, Path], python312: str
) -> None:
    layer_python = layers["IamDbLayer"] / "python"
    pycs = list((layer_python / "iamdb").glob("__pycache__/*.pyc"))
    assert pycs and all(p.name.endswith(".cpython-312.pyc") for p in pycs)
    for pyc in pycs:
        flags = int.from_bytes(pyc.read_bytes()[4:8], "little")
        assert flags == 0b01  # hash-based, source not checked (PEP 552 unchecked-hash)


def test_layers_hold_wheels_for_their_architecture(layers: dict[str, Path]) -> None:
    for logical_id, arch in (("IamDbLayer", "x86_64"), ("IamDbLayerArm64", "aarch64")):
        python = layers[logical_id] / "python"
        extensions = list((python / "psycopg_binary").glob("*.so"))
        assert extensions and all(f"cpython-312-{arch}-linux-gnu" in e.name for e in extensions)
        assert not (python / "boto3").exists() and not (python / "botocore").exists()
        assert (python / "iamdb" / "data" / "rds-ca-bundle.pem").is_file()


def test_zips_contain_python_dir(layers: dict[str, Path]) -> None:
    for arch in ("x86_64", "arm64"):
        with zipfile.ZipFile(REPO / "build" / f"iamdb-layer-python{TARGET}-{arch}.zip") as z:
            names = z.namelist()
        assert "python/iamdb/__init__.py" in names
        assert all(n.startswith("python/") for n in names)


def test_sam_entry_point_builds_into_artifacts_dir(tmp_path: Path) -> None:
    """What ``sam build`` runs for ``BuildMethod: makefile``: make build-<LogicalId>."""
    result = subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(REPO / "layer"),
            "build-IamDbLayer",
            f"ARTIFACTS_DIR={tmp_path}",
            f"PYTHON={sys.executable}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "python" / "iamdb" / "__init__.py").is_file()
    assert (tmp_path / "python" / "psycopg_binary").is_dir()
