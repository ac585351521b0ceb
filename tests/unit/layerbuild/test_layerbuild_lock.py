"""One lock for every layer (layer/requirements.txt), read for each target."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from layerbuild import lock
from layerbuild.targets import TARGETS, target
from tests.paths import ROOT

LOCK = ROOT / "layer" / "requirements.txt"
NEEDED = {
    "dnspython",
    "psycopg",
    "psycopg-binary",
    "psycopg-pool",
    "pymongo",
    "pymysql",
    "typing-extensions",
    "valkey",
}


@pytest.mark.parametrize("name", [t.name for t in TARGETS])
def test_each_target_gets_one_version_of_each_package(name: str) -> None:
    pins = lock.for_target(lock.read(LOCK), target(name))
    # tzdata is for Windows only; valkey needs async-timeout before CPython 3.11.3, and the lock
    # reads python3.11 as 3.11.0 (Lambda does not promise a patch release): 10 kB, never imported
    # on a newer 3.11
    extra = {"async-timeout"} if name.startswith("iamdb-python311-") else set()
    assert {p.name for p in pins} == NEEDED | extra
    versions = {p.name: p.version for p in pins}
    psycopg = "3.2.13" if name == "iamdb-python311-arm64" else "3.3.9"
    assert versions["psycopg"] == versions["psycopg-binary"] == psycopg
    assert all(p.hashes for p in pins)


def test_the_lock_holds_what_requirements_in_pins() -> None:
    pinned = re.findall(
        r"^([A-Za-z][\w.-]*)(?:\[\w+\])?==([\w.]+)",
        (ROOT / "layer" / "requirements.in").read_text(),
        re.M,
    )
    locked = {(p.name, p.version) for p in lock.read(LOCK)}
    for name, version in pinned:
        assert (name.lower(), version) in locked


def test_what_pip_gets_has_hashes_and_no_markers() -> None:
    pins = lock.for_target(lock.read(LOCK), target("iamdb-python311-arm64"))
    text = lock.requirements_text(pins)
    assert ";" not in text and "psycopg==3.2.13 \\\n    --hash=sha256:" in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "a==1 ; python_version >= '3.11' \\\n    --hash=sha256:" + "0" * 64 + "\n"
            "a==2 ; python_version >= '3.12' \\\n    --hash=sha256:" + "1" * 64 + "\n",
            "twice",
        ),
        ("a==1\n", "has no --hash"),
        ("a>=1 \\\n    --hash=sha256:" + "0" * 64 + "\n", "not a pinned requirement"),
        ("    --hash=sha256:" + "0" * 64 + "\n", "a hash before any requirement"),
    ],
    ids=["overlapping-markers", "no-hash", "unpinned", "orphan-hash"],
)
def test_a_broken_lock_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text(text)
    with pytest.raises(lock.LockError, match=message):
        lock.for_target(lock.read(path), target("iamdb-python313-x86_64"))
