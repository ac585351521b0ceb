"""Importing iamdb and signing with environment credentials loads neither boto3 nor botocore.

Run in a fresh interpreter: this test process itself has imported botocore.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.paths import LAYER

CHILD = """
import json, sys
import iamdb
from iamdb._aws.tokens import TokenCache
from iamdb._sql.tokens import Target
token = iamdb.generate_db_auth_token("db.example.us-east-1.rds.amazonaws.com", 5432, "app",
                                     "us-east-1")
cached = TokenCache().get(Target("db.example.us-east-1.rds.amazonaws.com", 5432, "app",
                                   "us-east-1"))
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("boto3", "botocore"))
print(json.dumps({"loaded": loaded, "token": token.startswith("db.example"),
                  "cached": cached.value.startswith("db.example")}))
"""


def test_import_and_sign_without_boto3_or_botocore() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHON"))}
    env.update(
        PYTHONPATH=str(LAYER),
        AWS_ACCESS_KEY_ID="AKIDEXAMPLE",
        AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        AWS_SESSION_TOKEN="session-token",
    )
    out = subprocess.run(
        [sys.executable, "-c", CHILD],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout) == {"loaded": [], "token": True, "cached": True}


LAZY_CHILD = """
import json, sys
import iamdb
heavy = ("boto3", "botocore", "psycopg", "psycopg_pool", "pymysql", "pymongo", "sqlalchemy",
         "typing", "dataclasses", "logging")
print(json.dumps({
    "heavy": sorted(m for m in sys.modules if m.split(".")[0] in heavy),
    "iamdb": sorted(m for m in sys.modules if m.startswith("iamdb")),
}))
"""


def test_import_iamdb_loads_only_its_errors() -> None:
    """Drivers, boto3, even typing and logging wait until a get_*() or a signature needs them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(LAYER)
    out = subprocess.run(
        [sys.executable, "-c", LAZY_CHILD], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == {"heavy": [], "iamdb": ["iamdb", "iamdb.errors"]}


MONGO_CHILD = """
import json, sys
heavy = {"pymongo", "bson", "boto3", "botocore", "pymongo_auth_aws"}
import iamdb
from iamdb import get_mongo  # the name resolves without importing pymongo
before = sorted({m.split(".")[0] for m in sys.modules} & heavy)
from iamdb._mongo.config import load_mongo_config
# The URI is checked by pymongo's own parser: pymongo, but not its AWS signer (boto3).
load_mongo_config(None, {"IAMDB_MONGO_URI": "mongodb://localhost/app"})
after = sorted({m.split(".")[0] for m in sys.modules} & heavy)
print(json.dumps({"before": before, "after": after, "callable": callable(get_mongo)}))
"""


def test_import_iamdb_and_get_mongo_load_neither_pymongo_nor_boto3() -> None:
    """Mongo configuration imports pymongo (its URI parser) and still neither boto3 nor botocore."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTHON"))}
    env.update(PYTHONPATH=str(LAYER))
    out = subprocess.run(
        [sys.executable, "-c", MONGO_CHILD],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout) == {
        "before": [],
        "after": ["bson", "pymongo"],
        "callable": True,
    }


POOL_CHILD = """
import json, sys
import iamdb
from iamdb import pg_async_pool, pg_pool  # the names resolve without importing the pool
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules}
                        & {"psycopg", "psycopg_pool", "sqlalchemy"})))
"""


def test_the_pool_getters_resolve_without_importing_psycopg_pool() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(LAYER)
    out = subprocess.run(
        [sys.executable, "-c", POOL_CHILD], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []


AIO_CHILD = """
import json, sys
import iamdb
getter = iamdb.aio.get_pg  # the submodule, through iamdb's lazy attribute
from iamdb.aio import get_mongo
heavy = ("asyncio", "typing", "psycopg", "pymongo", "boto3", "botocore", "logging")
print(json.dumps({
    "heavy": sorted({m.split(".")[0] for m in sys.modules} & set(heavy)),
    "iamdb": sorted(m for m in sys.modules if m.startswith("iamdb")),
    "callable": callable(getter) and callable(get_mongo),
}))
"""


def test_import_iamdb_aio_loads_neither_asyncio_nor_a_driver() -> None:
    """``iamdb.aio`` costs its own small module: asyncio and the drivers load at the first call."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(LAYER)
    out = subprocess.run(
        [sys.executable, "-c", AIO_CHILD], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == {
        "heavy": [],
        "iamdb": ["iamdb", "iamdb.aio", "iamdb.errors"],
        "callable": True,
    }
