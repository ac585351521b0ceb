"""What a cold start loads of iamdb, module by module, for each kind of first call.

Each case is a fresh interpreter (a Lambda environment's first invocation) that makes one
real login against devstack and lists the ``iamdb`` modules then loaded. The lists are pinned:
a module added to a cold path is a cold-start cost, so the change that adds it says so here.
The Mongo path loads none of the SQL side and the SQL path none of Mongo's; the Valkey path
neither; the fleet's queue loads only when ``IAMDB_THROTTLE_TABLE`` is set, the AWS client, STS
and the leases only with a role to assume; nothing loads boto3 or botocore.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from devstack.stack import Stack
from tests.conftest import mariadb_available
from tests.paths import LAYER

pytestmark = pytest.mark.integration

CHILD = """
import json, sys
import iamdb
first = sys.argv[1]
if first == "pg":
    iamdb.get_pg().execute("SELECT 1")
elif first == "aurora":  # an instance that assumes a role, behind a cluster endpoint
    iamdb.get_pg("aurora").execute("SELECT 1")
elif first == "mysql":
    iamdb.get_mysql().ping()
elif first == "valkey":
    iamdb.get_valkey().ping()
else:
    iamdb.get_mongo().admin.command("ping")
print(json.dumps({
    "iamdb": sorted(m for m in sys.modules if m.startswith("iamdb")),
    "boto": sorted({m.split(".")[0] for m in sys.modules} & {"boto3", "botocore"}),
}))
"""

CORE = [
    "iamdb",
    "iamdb._aws",
    "iamdb._aws.chain",
    "iamdb._aws.credentials",
    "iamdb._aws.sigv4",
    "iamdb._core",
    "iamdb._core.backoff",
    "iamdb._core.deps",
    "iamdb._core.env",
    "iamdb._core.invocation",
    "iamdb._core.log",
    "iamdb._core.runtime",
    "iamdb._core.settings",
    "iamdb._core.snapstart",
    "iamdb._core.steps",
    "iamdb._core.telemetry",
    "iamdb._registry",
    "iamdb.errors",
]
SQL = [
    "iamdb._aws.roles",
    "iamdb._aws.signer",
    "iamdb._aws.tokens",
    "iamdb._sql",
    "iamdb._sql.config",
    "iamdb._sql.drivers",
    "iamdb._sql.dsql",
    "iamdb._sql.limits",
    "iamdb._sql.login",
    "iamdb._sql.managed",
    "iamdb._sql.pace",
    "iamdb._sql.refusals",
    "iamdb._sql.slots",  # the idle limit each connection asks for, a full server's words
    "iamdb._sql.tokens",
    "iamdb._sql.writer",
]
AWS_CALLS = ["iamdb._aws.client", "iamdb._aws.http", "iamdb._aws.http_answer", "iamdb._aws.net"]
FLEET = ["iamdb._sql.fleet", "iamdb._sql.queue", "iamdb._sql.skew"]
MONGO = [
    "iamdb._aws.roles",
    "iamdb._aws.sts",
    "iamdb._mongo",
    "iamdb._mongo.aws",
    "iamdb._mongo.client",
    "iamdb._mongo.config",
    "iamdb._mongo.documentdb",
    "iamdb._mongo.handle",
    "iamdb._mongo.refusals",
    "iamdb._mongo.runner",
    "iamdb._mongo.uri",
]

VALKEY = [
    "iamdb._aws.signer",
    "iamdb._aws.tokens",
    "iamdb._valkey",
    "iamdb._valkey.client",
    "iamdb._valkey.config",
    "iamdb._valkey.handle",
    "iamdb._valkey.refusals",
]

CASES = {
    "pg": CORE + SQL + ["iamdb._sql.pg", "iamdb._sql.pg_classes"],
    "pg, fleet": CORE + SQL + AWS_CALLS + FLEET + ["iamdb._sql.pg", "iamdb._sql.pg_classes"],
    "mysql": CORE + SQL + ["iamdb._sql.mysql", "iamdb._sql.mysql_classes"],
    "aurora (assumed role)": CORE
    + SQL
    + AWS_CALLS
    + ["iamdb._aws.leases", "iamdb._aws.sts", "iamdb._sql.pg", "iamdb._sql.pg_classes"],
    "mongo (assumed role)": CORE + AWS_CALLS + MONGO,
    "valkey": CORE + VALKEY,
}


@pytest.mark.parametrize("case", CASES)
def test_a_cold_start_loads_these_iamdb_modules_and_no_more(stack: Stack, case: str) -> None:
    first = case.split(",")[0].split(" ")[0]
    if first == "mysql" and not mariadb_available():
        pytest.skip("MariaDB is not installed here")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IAMDB_", "PYTHON"))}
    env.update(stack.env, PYTHONPATH=str(LAYER))
    if "fleet" not in case:
        del env["IAMDB_THROTTLE_TABLE"]
    out = subprocess.run(
        [sys.executable, "-c", CHILD, first],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(out.stdout) == {"iamdb": sorted(CASES[case]), "boto": []}
