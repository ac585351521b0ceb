"""CA files that are no regular file: a FIFO, /dev/zero, a directory, a swapped path.

``IAMDB_*_SSLROOTCERT`` and DSQL's ``SSL_CERT_FILE`` are each read by
:func:`iamdb._core.env.ca_file_problem` before any token is signed. A FIFO used to block the
open for good, and ``/dev/zero`` to be read to the 10 MiB bound (a ``MemoryError`` on a small
function): now each is a ConfigError naming the variable, without waiting or reading.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from iamdb._core import env as _env
from iamdb._core.env import RDS_CA_BUNDLE
from iamdb._sql.config import load_sql_config
from iamdb.errors import ConfigError

RDS = "mydb.c9akciq32.eu-west-1.rds.amazonaws.com"
DSQL = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws"


def _special(tmp_path: Path, kind: str) -> str:
    path = tmp_path / "ca.pem"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink-to-fifo":
        os.mkfifo(tmp_path / "fifo")
        path.symlink_to(tmp_path / "fifo")
    elif kind == "dev-zero":
        return "/dev/zero"
    elif kind == "dev-urandom":
        return "/dev/urandom"
    elif kind == "directory":
        path.mkdir()
    elif kind == "sparse-11-mib":
        with path.open("wb") as file:
            file.truncate(11 * 1024 * 1024)
    elif kind == "missing":
        pass
    return str(path)


KINDS = ["fifo", "symlink-to-fifo", "dev-zero", "dev-urandom", "directory", "sparse-11-mib"]


def _within(seconds: float, call: Callable[[], object]) -> BaseException | None:
    """What ``call`` raised (None: nothing), failing the test if it has not ended in time."""
    raised: list[BaseException | None] = [None]

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            raised[0] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still reading after {seconds} s"
    return raised[0]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("var", ["IAMDB_PG_SSLROOTCERT", "IAMDB_MYSQL_SSLROOTCERT"])
def test_sql_sslrootcert(tmp_path: Path, kind: str, var: str) -> None:
    engine = var.split("_")[1].lower()
    env = {f"IAMDB_{engine.upper()}_HOST": RDS, f"IAMDB_{engine.upper()}_USER": "app"}
    env[var] = _special(tmp_path, kind)
    error = _within(10, lambda: load_sql_config(engine, None, env))
    assert isinstance(error, ConfigError), error
    assert error.variable == var


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("var", ["IAMDB_DSQL_SSLROOTCERT", "SSL_CERT_FILE"])
def test_dsql_ca_files(tmp_path: Path, kind: str, var: str) -> None:
    env = {"IAMDB_DSQL_HOST": DSQL, var: _special(tmp_path, kind)}
    error = _within(10, lambda: load_sql_config("dsql", None, env))
    assert isinstance(error, ConfigError), error
    assert error.variable == var


def test_a_fifo_with_a_writer_is_refused_too(tmp_path: Path) -> None:
    """Even when a writer holds it open (the open would not block): it is no file."""
    path = _special(tmp_path, "fifo")
    writer = os.open(path, os.O_RDWR)  # O_RDWR on a FIFO never blocks (Linux)
    try:
        os.write(writer, Path(RDS_CA_BUNDLE).read_bytes()[:1000])
        assert "not a regular file (a FIFO)" in str(_env.ca_file_problem(path))
    finally:
        os.close(writer)


def test_a_path_swapped_after_it_passed_is_read_again(tmp_path: Path) -> None:
    """The check is of what is open, not of an earlier stat: a good file swapped for a FIFO
    or for other bytes at the same path is refused at the next check."""
    path = tmp_path / "ca.pem"
    path.write_bytes(Path(RDS_CA_BUNDLE).read_bytes())
    assert _env.ca_file_problem(str(path)) is None
    path.unlink()
    os.mkfifo(path)
    assert "FIFO" in str(_within(10, lambda: _check(str(path))))
    path.unlink()
    path.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    assert "no PEM certificate" in str(_env.ca_file_problem(str(path)))


def _check(path: str) -> None:
    problem = _env.ca_file_problem(path)
    if problem is not None:
        raise ConfigError("IAMDB_PG_SSLROOTCERT", problem)


def test_reading_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 101)
    assert _env.read_regular_file(str(path), 101) == b"x" * 101
    assert "larger than 100 bytes" in str(_env.read_regular_file(str(path), 100))
    assert "NUL" in str(_env.read_regular_file("a\0b", 100))
    assert "cannot read" in str(_env.read_regular_file(str(tmp_path / "missing"), 100))
