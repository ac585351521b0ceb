"""A cold start whose first getters are called from several threads at once.

Handlers that open connections from worker threads call ``get_pg()`` & co. concurrently in a
fresh process: every thread must get what a single caller gets (here, the ConfigError of an
unconfigured instance), never a half-imported module's ``AttributeError``. Each process is
fresh, so the import race is real; ten of them, because it was seen in 8 of 10.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.paths import LAYER

CHILD = """
import json, sys, threading
import iamdb
from iamdb import aio

calls = [iamdb.get_pg, iamdb.get_mysql, iamdb.get_dsql, iamdb.get_mongo,
         lambda: iamdb.info("pg"), lambda: iamdb.set_lambda_context(None), iamdb.reset,
         lambda: __import__("asyncio").run(aio.get_pg())]
barrier = threading.Barrier(len(calls) * 2)
seen = []

def run(call):
    barrier.wait()
    try:
        call()
        seen.append("ok")
    except iamdb.IamDbError as exc:
        seen.append(type(exc).__name__)
    except BaseException as exc:
        seen.append("ESCAPED " + type(exc).__name__ + ": " + str(exc)[:200])

threads = [threading.Thread(target=run, args=(c,)) for c in calls * 2]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(sorted(set(seen))))
"""


@pytest.mark.parametrize("run", range(10))
def test_getters_from_many_threads_in_a_fresh_process(run: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IAMDB_", "PYTHON"))}
    env["PYTHONPATH"] = str(LAYER)
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert not [s for s in seen if s.startswith("ESCAPED")], seen
    assert set(seen) <= {"ConfigError", "MissingDependencyError", "ok"}
