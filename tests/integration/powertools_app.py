"""A handler that uses Powertools' Logger, Metrics and Tracer, run as a script by the tests.

``python powertools_app.py ENGINE [ENGINE...]`` invokes the handler once per argument with a
Lambda-like context (``pg``, ``mysql``, ``mongo`` or ``valkey``: one query through iamdb;
``pg!`` expects an AuthError). Everything goes to stdout, as on Lambda: Powertools' JSON log
lines, EMF records, and one ``RESULT <json>`` line per invocation.
"""

from __future__ import annotations

import json
import sys
import uuid
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer

import iamdb

logger = Logger()
metrics = Metrics()
tracer = Tracer()


class Context:
    """What Powertools and iamdb read from Lambda's context object."""

    function_name = "powertools-app"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:powertools-app"

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    iamdb.set_lambda_context(context)
    engine = event["engine"]
    try:
        if engine == "mongo":
            iamdb.get_mongo().admin.command("ping")
        elif engine == "valkey":
            iamdb.get_valkey().ping()
        else:
            conn = iamdb.get_pg() if engine == "pg" else iamdb.get_mysql()
            cursor = conn.cursor()
            cursor.execute("SELECT 1")
    except iamdb.IamDbError as exc:
        return {"request_id": context.aws_request_id, "error": type(exc).__name__}
    return {"request_id": context.aws_request_id, "error": None}


if __name__ == "__main__":
    for engine in sys.argv[1:]:
        result = handler({"engine": engine}, Context())
        print("RESULT " + json.dumps(result), flush=True)
