"""Example HTTP API handler: records each request in MongoDB through ``iamdb.get_mongo()``.

MONGODB-AWS with credentials of the role in ``IAMDB_MONGO_ROLE_ARN``, assumed by iamdb and
renewed before they expire. The client is a module-level singleton; the body says whether this
invocation reused the previous one.
"""

from __future__ import annotations

import json
import time
from typing import Any

from iamdb import get_mongo, set_lambda_context

_last_client_id: int | None = None  # identity of the client the previous invocation used
_client_since = 0.0


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _last_client_id, _client_since
    set_lambda_context(context)  # new-login waits never outlive the invocation
    client = get_mongo()
    reused = id(client) == _last_client_id
    if not reused:
        _last_client_id, _client_since = id(client), time.time()
    hits = client.get_database("iamdb_example").get_collection("hits")
    request_id = event.get("requestContext", {}).get("requestId") or context.aws_request_id
    inserted = hits.insert_one(
        {"path": event.get("rawPath", "/"), "request_id": request_id, "at": time.time()}
    )
    last = hits.find_one({"_id": inserted.inserted_id}, {"_id": 0, "path": 1})
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(
            {
                "engine": "mongodb",
                "inserted_id": str(inserted.inserted_id),
                "read_back": last,
                "hits": hits.estimated_document_count(),
                "reused_connection": reused,
                "client_age_seconds": round(time.time() - _client_since, 3),
                "function": context.function_name,
                "request_id": context.aws_request_id,
            }
        ),
    }
