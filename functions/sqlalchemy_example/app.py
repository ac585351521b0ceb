"""Example HTTP API handler: records each request in PostgreSQL with the SQLAlchemy ORM.

The engine is made at init (that connects nothing) by ``iamdb.sqlalchemy.create_engine``: a
pool of one connection, checked with a ping at checkout, whose every new connection is an
iamdb login (a cached, re-signed-when-old IAM token over verified TLS, under iamdb's login
limiters). The first (cold) invocation logs in; warm ones reuse the pooled connection. The
body says which happened and how old the token is.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, String, event, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from iamdb import info, lambda_handler
from iamdb.sqlalchemy import create_engine

engine = create_engine("pg")  # IAMDB_PG_*; no connection yet
_logins = 0  # new physical connections of this environment


@event.listens_for(engine, "connect")
def _count_login(dbapi_connection: Any, record: Any) -> None:
    global _logins
    _logins += 1


class Base(DeclarativeBase):
    pass


class Hit(Base):
    __tablename__ = "iamdb_sqlalchemy_hits"

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(String(2048))
    request_id: Mapped[str | None] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


_schema_ready = False  # once per environment, not per invocation


@lambda_handler  # iamdb's waits end with the invocation's time
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _schema_ready
    logins_before = _logins
    if not _schema_ready:
        Base.metadata.create_all(engine)
        _schema_ready = True
    request_id = event.get("requestContext", {}).get("requestId") or context.aws_request_id
    with Session(engine) as session, session.begin():  # one transaction, committed at the end
        hit = Hit(path=event.get("rawPath", "/"), request_id=request_id)
        session.add(hit)
        session.flush()
        hits = session.scalar(select(func.count()).select_from(Hit))
        inserted_id = hit.id
    seen = info("pg")  # the engine logs in as the pg instance
    return _response(
        {
            "engine": "postgresql",
            "orm": "sqlalchemy",
            "inserted_id": inserted_id,
            "hits": hits,
            "reused_connection": _logins == logins_before,
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
