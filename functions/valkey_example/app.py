"""Example HTTP API handler: counts requests per path in ElastiCache through ``iamdb.get_valkey()``.

The client is the process's singleton, logged in with an IAM token over verified TLS; every new
connection presents a current token, and between invocations connections that died while the
environment was frozen are dropped and those nearing AWS's 12 hours re-authenticate. The
MULTI/EXEC pipeline shows a transaction iamdb never interrupts: it only touches idle connections.
"""

from __future__ import annotations

import json
from typing import Any

from iamdb import get_valkey, info, lambda_handler


@lambda_handler  # iamdb's waits end with the invocation's time
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    cache = get_valkey()
    seen = info("valkey")
    path = event.get("rawPath", "/")
    with cache.pipeline(transaction=True) as pipe:  # MULTI ... EXEC on one connection
        pipe.incr(f"iamdb-example:hits:{path}")
        pipe.expire(f"iamdb-example:hits:{path}", 86_400)
        hits, _ = pipe.execute()
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(
            {
                "engine": "valkey",
                "user": cache.acl_whoami(),
                "path": path,
                "hits": hits,
                "reused_connection": seen.reused,
                "token_age_seconds": None
                if seen.token_age_seconds is None
                else round(seen.token_age_seconds, 3),
                "function": context.function_name,
                "request_id": context.aws_request_id,
            }
        ),
    }
