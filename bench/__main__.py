"""``python -m bench`` (``make bench``): every benchmark, one table each.

- signing: cold start and warm signing, iamdb against boto3/botocore;
- sql: warm ``get_pg()`` against connect-per-invocation, and first login against a
  hand-written ``psycopg.connect`` with a botocore token (starts its own devstack).
"""

from __future__ import annotations

from bench import signing, sql


def main() -> None:
    signing.main()
    sql.main()


if __name__ == "__main__":
    main()
