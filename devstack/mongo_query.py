"""Just enough of MongoDB's query language for devstack's peer: filters, sorts, projections,
update operators and the aggregation stages ``count_documents`` and iamdb's examples use.

Anything else is refused with the error a real server gives for an unknown operator.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from bson import ObjectId

from devstack.mongo_wire import CommandError

_MISSING = object()


def _get_path(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return _MISSING
        doc = doc[part]
    return doc


def _rank(value: Any) -> tuple[int, Any]:
    """A sort key that orders mixed types the way MongoDB roughly does."""
    if value is _MISSING or value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (5, value)
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    if isinstance(value, ObjectId):
        return (4, str(value))
    if isinstance(value, dt.datetime):
        return (6, value.timestamp())
    return (3, repr(value))


def _compare(op: str, value: Any, arg: Any) -> bool:
    if op == "$eq":
        return value == arg or (arg is None and value is _MISSING)
    if op == "$ne":
        return not _compare("$eq", value, arg)
    if op == "$in":
        return any(_compare("$eq", value, a) for a in arg)
    if op == "$nin":
        return not _compare("$in", value, arg)
    if op == "$exists":
        return (value is not _MISSING) == bool(arg)
    if value is _MISSING or _rank(value)[0] != _rank(arg)[0]:
        return False
    left, right = _rank(value)[1], _rank(arg)[1]
    results = {
        "$gt": left > right,
        "$gte": left >= right,
        "$lt": left < right,
        "$lte": left <= right,
    }
    return bool(results[op])


def matches(doc: dict[str, Any], query: dict[str, Any]) -> bool:
    for key, cond in query.items():
        if key == "$and":
            ok = all(matches(doc, q) for q in cond)
        elif key == "$or":
            ok = any(matches(doc, q) for q in cond)
        elif key.startswith("$"):
            raise CommandError(2, "BadValue", f"unknown top level operator: {key}")
        else:
            value = _get_path(doc, key)
            if isinstance(cond, dict) and cond and all(k.startswith("$") for k in cond):
                ops = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists"}
                unknown = set(cond) - ops
                if unknown:
                    raise CommandError(2, "BadValue", f"unknown operator: {sorted(unknown)[0]}")
                ok = all(_compare(op, value, arg) for op, arg in cond.items())
            else:
                ok = _compare("$eq", value, cond) or (isinstance(value, list) and cond in value)
        if not ok:
            return False
    return True


def sort_docs(docs: list[dict[str, Any]], spec: dict[str, Any] | None) -> list[dict[str, Any]]:
    for key, direction in reversed(list((spec or {}).items())):

        def rank(doc: dict[str, Any], key: str = key) -> tuple[int, Any]:
            return _rank(_get_path(doc, key))

        docs = sorted(docs, key=rank, reverse=direction < 0)
    return docs


def project(doc: dict[str, Any], projection: dict[str, Any] | None) -> dict[str, Any]:
    if not projection:
        return doc
    fields = {k: bool(v) for k, v in projection.items() if k != "_id"}
    keep_id = bool(projection.get("_id", True))
    if any(fields.values()):
        out = {k: doc[k] for k in fields if k in doc}
    else:
        out = {k: v for k, v in doc.items() if k not in fields}
    if keep_id and "_id" in doc:
        out = {"_id": doc["_id"], **out}
    else:
        out.pop("_id", None)
    return out


def apply_update(doc: dict[str, Any], update: dict[str, Any]) -> None:
    if not any(k.startswith("$") for k in update):  # a replacement document
        keep = doc.get("_id")
        doc.clear()
        doc.update(update)
        if keep is not None:
            doc.setdefault("_id", keep)
        return
    for op, fields in update.items():
        for key, value in fields.items():
            if op == "$set":
                doc[key] = value
            elif op == "$unset":
                doc.pop(key, None)
            elif op == "$inc":
                doc[key] = doc.get(key, 0) + value
            else:
                raise CommandError(9, "FailedToParse", f"unknown update operator: {op}")


def run_stage(docs: list[dict[str, Any]], stage: dict[str, Any]) -> list[dict[str, Any]]:
    ((name, arg),) = stage.items()
    if name == "$match":
        return [d for d in docs if matches(d, arg)]
    if name == "$skip":
        return docs[int(arg) :]
    if name == "$limit":
        return docs[: int(arg)]
    if name == "$sort":
        return sort_docs(docs, arg)
    if name == "$project":
        return [project(d, arg) for d in docs]
    if name == "$count":
        return [{arg: len(docs)}] if docs else []
    if (
        name == "$group"
        and all(k == "_id" or v == {"$sum": 1} for k, v in arg.items())
        and not isinstance(arg.get("_id"), (str, dict))
    ):
        if not docs:
            return []
        return [{k: (v if k == "_id" else len(docs)) for k, v in arg.items()}]
    raise CommandError(
        40324, "Location40324", f"the devstack peer does not support the stage {name}"
    )
