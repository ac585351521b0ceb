"""A missing driver or extra is one MissingDependencyError naming the extra, for every getter.

Each case runs in a fresh interpreter whose imports of the driver are refused by a
``sys.meta_path`` finder (as if the package were not installed), with a configuration that
loads without any network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from iamdb._core.env import RDS_CA_BUNDLE
from tests.paths import LAYER

CHILD = """
import asyncio, json, sys

class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == sys.argv[1]:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Hide())
import iamdb

def call():
    exec(sys.argv[2], {"iamdb": iamdb, "asyncio": asyncio})

try:
    call()
except BaseException as exc:
    print(json.dumps({
        "type": type(exc).__name__,
        "iamdb": isinstance(exc, iamdb.IamDbError),
        "config": isinstance(exc, iamdb.ConfigError),
        "import": isinstance(exc, ImportError),
        "extra": getattr(exc, "extra", None),
        "module": getattr(exc, "name", None),
        "variable": getattr(exc, "variable", None),
        "message": str(exc),
    }))
else:
    print(json.dumps({"type": None}))
"""

ENV = {
    "IAMDB_PG_HOST": "db.x.us-east-1.rds.amazonaws.com",
    "IAMDB_PG_USER": "app",
    "IAMDB_MYSQL_HOST": "db.x.us-east-1.rds.amazonaws.com",
    "IAMDB_MYSQL_USER": "app",
    "IAMDB_DSQL_HOST": "abcdefghijklmnopqrstuvwxyz.dsql.eu-central-1.on.aws",
    "IAMDB_DSQL_SSLROOTCERT": RDS_CA_BUNDLE,
    "IAMDB_MONGO_URI": "mongodb://db.example.com/app",
    "AWS_REGION": "us-east-1",
}

CASES = [
    ("psycopg", "iamdb.get_pg()", "pg", "IAMDB_PG_HOST"),
    ("psycopg", "iamdb.get_dsql()", "pg", "IAMDB_DSQL_HOST"),
    ("pymysql", "iamdb.get_mysql()", "mysql", "IAMDB_MYSQL_HOST"),
    ("pymongo", "iamdb.get_mongo()", "mongo", "IAMDB_MONGO_URI"),
    ("psycopg_pool", "iamdb.pg_pool()", "pool", "IAMDB_PG_HOST"),
    ("psycopg", "iamdb.pg_pool()", "pool", "IAMDB_PG_HOST"),
    ("psycopg_pool", "iamdb.pg_async_pool()", "pool", "IAMDB_PG_HOST"),
    ("psycopg", "asyncio.run(iamdb.aio.get_pg())", "pg", "IAMDB_PG_HOST"),
    ("pymongo", "asyncio.run(iamdb.aio.get_mongo())", "mongo", "IAMDB_MONGO_URI"),
    ("sqlalchemy", "import iamdb.sqlalchemy", "sqlalchemy", "iamdb.sqlalchemy"),
    ("psycopg", "import iamdb.sqlalchemy; iamdb.sqlalchemy.create_engine('pg')", "pg", None),
    ("pymysql", "import iamdb.sqlalchemy; iamdb.sqlalchemy.create_engine('mysql')", "mysql", None),
]


@pytest.mark.parametrize(("hidden", "code", "extra", "variable"), CASES)
def test_a_missing_driver_names_the_extra(
    hidden: str, code: str, extra: str, variable: str | None
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "IAMDB_", "PYTHON"))}
    env.update(ENV, PYTHONPATH=str(LAYER))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, hidden, code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    got = json.loads(out.stdout)
    assert got["type"] == "MissingDependencyError", got
    assert got["iamdb"] and got["config"] and got["import"]
    assert got["extra"] == extra and got["module"].split(".")[0] == hidden
    assert f"pip install 'iamdb[{extra}]'" in got["message"]
    assert got["variable"] == (variable or f"IAMDB_{code.split(chr(39))[1].upper()}_HOST")
