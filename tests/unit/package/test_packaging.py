"""Packaging: the version is stated once, and development tools are not a published extra."""

from __future__ import annotations

import importlib.metadata

import tomllib

import iamdb
from tests.paths import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_version_is_stated_once_in_the_package() -> None:
    assert "version" not in PYPROJECT["project"]
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "iamdb.__version__"}
    assert importlib.metadata.version("iamdb") == iamdb.__version__


def test_dev_tools_are_a_dependency_group_not_an_extra() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert "dev" not in extras
    dev = PYPROJECT["dependency-groups"]["dev"]
    assert any(req.startswith("pytest") for req in dev)
    assert not any(req.startswith("iamdb") for req in dev)  # a group cannot name the project
