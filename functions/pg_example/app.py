"""Example HTTP API handler: records each request in PostgreSQL through ``iamdb.get_pg()``.

The connection is a module-level singleton: created with an IAM token on the first (cold)
invocation, reused by every warm one. The body says which happened and how old the token is.

It also shows iamdb with Powertools for AWS Lambda: iamdb's log lines come out through this
handler's ``Logger`` (JSON, with the Lambda context), its metrics (``ConnectionsOpened``,
``TokensSigned``, ``ThrottleWaitMs``...) go to ``POWERTOOLS_METRICS_NAMESPACE`` as EMF, and
its logins appear in X-Ray as ``iamdb connect`` subsegments of this handler.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from iamdb import get_pg, info, lambda_handler

logger = Logger()
metrics = Metrics()
tracer = Tracer()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS iamdb_example_hits (
    id bigserial PRIMARY KEY,
    path text NOT NULL,
    request_id text,
    at timestamptz NOT NULL DEFAULT now()
)
"""
_schema_ready = False  # once per environment, not per invocation


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
@lambda_handler  # waits end with the invocation's time; its end frees the slot sooner
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _schema_ready
    conn = get_pg()
    seen = info("pg")  # reused connection? token age?
    if not _schema_ready:
        conn.execute(_SCHEMA)
        _schema_ready = True
    request_id = event.get("requestContext", {}).get("requestId") or context.aws_request_id
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO iamdb_example_hits (path, request_id) VALUES (%s, %s) RETURNING id",
            (event.get("rawPath", "/"), request_id),
        ).fetchone()
    count = conn.execute("SELECT count(*) FROM iamdb_example_hits").fetchone()
    metrics.add_metric(name="Hits", unit=MetricUnit.Count, value=1)
    logger.info("recorded a hit", extra={"reused_connection": seen.reused})
    return _response(
        {
            "engine": "postgresql",
            "server_version": conn.info.server_version,
            "inserted_id": row[0] if row else None,
            "hits": count[0] if count else 0,
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
