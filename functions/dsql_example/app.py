"""Example HTTP API handler: counts requests per path in Aurora DSQL through ``iamdb.get_dsql()``.

The connection is a module-level singleton, as with ``get_pg()``, replaced between invocations
once it nears DSQL's one-hour limit on a session. Concurrent invocations counting the same path
update the same row: DSQL's optimistic concurrency lets one commit and refuses the others with
SQLSTATE 40001, and ``iamdb.dsql_transaction()`` runs their transaction again, a little later.
"""

from __future__ import annotations

import json
from typing import Any

from iamdb import dsql_transaction, get_dsql, info, lambda_handler

# DSQL runs DDL in a transaction of its own (autocommit is on: this statement is one).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS iamdb_example_counts (
    path text PRIMARY KEY,
    hits bigint NOT NULL
)
"""
_COUNT = """
INSERT INTO iamdb_example_counts (path, hits) VALUES (%s, 1)
ON CONFLICT (path) DO UPDATE SET hits = iamdb_example_counts.hits + 1
RETURNING hits
"""
_schema_ready = False  # once per environment, not per invocation


@lambda_handler  # iamdb's waits end with the invocation's time
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _schema_ready
    conn = get_dsql()
    seen = info("dsql")  # before dsql_transaction() asks get_dsql() again
    if not _schema_ready:
        conn.execute(_SCHEMA)
        _schema_ready = True
    path = event.get("rawPath", "/")

    def count(tx: Any) -> int:  # may run more than once: everything it does is in the database
        row = tx.execute(_COUNT, (path,)).fetchone()
        return int(row[0]) if row else 0

    hits = dsql_transaction(count)
    return _response(
        {
            "engine": "aurora-dsql",
            "user": conn.info.user,
            "path": path,
            "hits": hits,
            "reused_connection": seen.reused,
            "token_age_seconds": None
            if seen.token_age_seconds is None
            else round(seen.token_age_seconds, 3),
            "function": context.function_name,
            "request_id": context.aws_request_id,
        }
    )


def _response(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body),
    }
