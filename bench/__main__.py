"""``python -m bench`` (``make bench``): every benchmark, one table each.

- signing: cold start and warm signing, iamdb against boto3/botocore;
- aio: warm ``aio.get_pg()`` against ``get_pg()``, an ``asyncio.run()`` invocation (new loop,
  new connection) against a module-level loop's, first async login against first blocking
  login (starts its own devstack);
- cold: the first get_pg() of a fresh process, with and without the fleet limiter, against
  boto3 + psycopg and the AWS Advanced Python Wrapper (starts its own devstack);
- sql: warm ``get_pg()`` against connect-per-invocation, and first login against a
  hand-written ``psycopg.connect`` with a botocore token (starts its own devstack);
- sqlalchemy: iamdb.sqlalchemy's and pg_pool()'s first connect against SQLAlchemy's do_connect
  recipe and psycopg_pool's kwargs callable with boto3 tokens, and their warm checkout against
  plain engines and pools (starts its own devstack);
- mongo: cold get_mongo() by phase, warm get_mongo(), new-socket login against pymongo's
  boto3-session-per-socket path (starts its own devstack);
- layer: the eight layers' sizes against today's python3.12 layer, cold import per local
  interpreter with/without ``.pyc`` and against today's layer, local invoke overhead;
- observability: cold and warm cost of logging, metrics and tracing through Powertools;
- burst: 60 cold environments logging in at once to a server limiting new IAM logins to
  10/s: naive, retry-only and iamdb's limiters (starts its own devstack);
- fleet: the fleet limiter's code at 60-3,000 environments against modelled DynamoDB and RDS,
  in virtual time (no devstack);
- slots: environments as processes against a server with 20 connection slots (frozen ones, then
  newcomers, then the frozen thawed), main's iamdb against this one (starts its own devstack);
  then 4 functions sharing 80 slots at fleet scale, iamdb's real login code in virtual time;
- valkey: cold first get_valkey() against boto3 presign + redis-py with a credential provider,
  warm get_valkey(), the re-authentication against a new connection (starts its own devstack);
- http: iamdb's HTTP client against the same on ``http.client`` (cold import, per request,
  lines of code; no devstack);
- topology: cold get_pg() with a role to assume against without, the writer check's cost at
  login, and failover recovery against a plain psycopg reconnect loop (starts its own devstack).
"""

from __future__ import annotations

import os

from bench import (
    aio,
    burst,
    cold,
    fleet,
    http,
    layer,
    mongo,
    observability,
    signing,
    slots,
    sql,
    sqlalchemy,
    topology,
    valkey,
)

BENCHMARKS = (
    signing, sql, sqlalchemy, aio, cold, mongo, valkey, layer, observability, burst, fleet,
    slots, http, topology,
)  # fmt: skip


def main() -> None:
    for bench in BENCHMARKS:
        saved = dict(os.environ)  # each starts from the environment make bench was given
        try:
            bench.main()
        finally:
            os.environ.clear()
            os.environ.update(saved)


if __name__ == "__main__":
    main()
