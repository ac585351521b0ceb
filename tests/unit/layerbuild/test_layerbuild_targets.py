"""The one table of Lambda runtimes and layers (layer/layerbuild/targets.py)."""

from __future__ import annotations

import subprocess

import pytest

from layerbuild.build import platforms
from layerbuild.targets import RUNTIMES, TARGETS, find_python, runtime, target


def test_eight_layers_named_like_powertools() -> None:
    assert [t.name for t in TARGETS] == [
        f"iamdb-python{v}-{a}" for v in ("311", "312", "313", "314") for a in ("x86_64", "arm64")
    ]
    assert len({t.logical_id for t in TARGETS}) == 8
    assert target("IamDbLayerPython313Arm64") == target("iamdb-python313-arm64")
    assert target("iamdb-python313-arm64").parameter == "python3.13/arm64"


def test_python311_is_amazon_linux_2_and_the_rest_2023() -> None:
    assert {r.name: r.glibc for r in RUNTIMES} == {
        "python3.11": (2, 26),
        "python3.12": (2, 34),
        "python3.13": (2, 34),
        "python3.14": (2, 34),
    }
    assert [r.name for r in RUNTIMES if r.snapstart] == ["python3.12", "python3.13", "python3.14"]


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(ValueError, match="iamdb-python311-x86_64"):
        target("iamdb-python310-x86_64")
    with pytest.raises(ValueError, match=r"python3\.14"):
        runtime("python3.10")
    assert runtime("3.13") == runtime("python3.13")


@pytest.mark.parametrize("name", [r.name for r in RUNTIMES])
def test_pyc_magic_numbers_are_the_interpreters_own(name: str) -> None:
    """Checked against each interpreter this machine has (3.14's against CPython's table)."""
    chosen = runtime(name)
    python = find_python(chosen.dotted)
    if python is None:
        pytest.skip(f"no {name} here: its magic number ({chosen.pyc_magic}) is CPython's table")
    magic = subprocess.run(
        [
            python,
            "-c",
            "import importlib.util, sys; sys.stdout.write(importlib.util.MAGIC_NUMBER.hex())",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert bytes.fromhex(magic) == chosen.magic_bytes


def test_platform_tags_stop_at_the_runtimes_glibc() -> None:
    old = platforms(target("iamdb-python311-x86_64"))
    assert old[0] == "manylinux_2_26_x86_64" and "manylinux_2_27_x86_64" not in old
    assert {"manylinux2014_x86_64", "manylinux1_x86_64", "manylinux_2_5_x86_64"} <= set(old)
    arm = platforms(target("iamdb-python312-arm64"))
    assert arm[0] == "manylinux_2_34_aarch64" and arm[-1] == "manylinux2014_aarch64"
    assert "manylinux_2_16_aarch64" not in arm and not any("manylinux1" in t for t in arm)
