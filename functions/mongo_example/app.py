"""Example HTTP API handler: records each request in MongoDB through ``iamdb.get_mongo()``.

MONGODB-AWS with credentials of the role in ``IAMDB_MONGO_ROLE_ARN``, assumed by iamdb and
renewed before they expire. The client is a module-level singleton; the body says whether this
invocation reused the previous one (``iamdb.info``) and how old its credentials are.
"""

from __future__ import annotations

import json
import time
from typing import Any

from iamdb import get_mongo, info, lambda_handler


@lambda_handler  # iamdb's waits end with the invocation's time
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    client = get_mongo()
    seen = info("mongo")  # reused client? credentials' age?
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
                "reused_connection": seen.reused,
                "token_age_seconds": None
                if seen.token_age_seconds is None
                else round(seen.token_age_seconds, 3),
                "function": context.function_name,
                "request_id": context.aws_request_id,
            }
        ),
    }
