"""Example HTTP API handler: records each request in MySQL/MariaDB through ``iamdb.get_mysql()``.

The connection is a module-level singleton: created with an IAM token on the first (cold)
invocation, reused by every warm one. The body says which happened and how old the token is.
"""

from __future__ import annotations

import json
from typing import Any

from iamdb import get_mysql, info, lambda_handler

_SCHEMA = """
CREATE TABLE IF NOT EXISTS iamdb_example_hits (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    path VARCHAR(2048) NOT NULL,
    request_id VARCHAR(128),
    at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
)
"""
_schema_ready = False  # once per environment, not per invocation


@lambda_handler  # waits end with the invocation's time; its end frees the slot sooner
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _schema_ready
    conn = get_mysql()
    seen = info("mysql")  # reused connection? token age?
    request_id = event.get("requestContext", {}).get("requestId") or context.aws_request_id
    with conn.cursor() as cur:
        if not _schema_ready:
            cur.execute(_SCHEMA)
            _schema_ready = True
        cur.execute(
            "INSERT INTO iamdb_example_hits (path, request_id) VALUES (%s, %s)",
            (event.get("rawPath", "/"), request_id),
        )
        inserted_id = cur.lastrowid
        cur.execute("SELECT COUNT(*), VERSION() FROM iamdb_example_hits")
        count, version = cur.fetchone()
    return _response(
        {
            "engine": "mysql",
            "server_version": version,
            "inserted_id": inserted_id,
            "hits": count,
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
