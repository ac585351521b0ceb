"""The peer's documents: in-memory collections, cursors and the CRUD commands over them.

A test double for a database, not one: no indexes but ``_id``'s uniqueness, no durability,
and only the commands iamdb's tests and examples send (``find``, ``insert``, ``update``,
``delete``, ``count``, ``aggregate``, ``getMore``, ``killCursors``, ``drop``,
``listCollections``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import bson
from bson import ObjectId

from devstack.mongo_query import apply_update, matches, project, run_stage, sort_docs
from devstack.mongo_wire import CommandError

Command = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class _Cursor:
    ns: str
    docs: list[dict[str, Any]]


class Store:
    """Collections by namespace (``db.collection``) and the open cursors over them."""

    def __init__(self) -> None:
        self._collections: dict[str, list[dict[str, Any]]] = {}
        self._cursors: dict[int, _Cursor] = {}
        self._cursor_ids = itertools.count(1000)

    def command(self, lname: str) -> Command | None:
        """The handler of a command (lower-case name), None when the store has no such command."""
        handler: Command | None = getattr(self, f"cmd_{lname}", None)
        return handler

    def cmd_killcursors(self, body: dict[str, Any]) -> dict[str, Any]:
        killed: list[Any] = []
        missing: list[Any] = []
        for cid in body.get("cursors", []):
            (killed if self._cursors.pop(int(cid), None) else missing).append(cid)
        return {"cursorsKilled": killed, "cursorsNotFound": missing, "cursorsAlive": []}

    def cmd_insert(self, body: dict[str, Any]) -> dict[str, Any]:
        docs = self._coll(body, "insert")
        errors, n = [], 0
        for index, doc in enumerate(body.get("documents", [])):
            doc = dict(doc)
            doc.setdefault("_id", ObjectId())
            if any(d["_id"] == doc["_id"] for d in docs):
                errors.append({"index": index, "code": 11000, "errmsg": "E11000 duplicate key"})
                if body.get("ordered", True):
                    break
                continue
            docs.append(doc)
            n += 1
        return {"n": n, **({"writeErrors": errors} if errors else {})}

    def cmd_find(self, body: dict[str, Any]) -> dict[str, Any]:
        docs = [d for d in self._coll(body, "find") if matches(d, body.get("filter") or {})]
        docs = sort_docs(docs, body.get("sort"))
        skip, limit = int(body.get("skip", 0)), abs(int(body.get("limit", 0)))
        docs = docs[skip : skip + limit if limit else None]
        projection = body.get("projection")
        docs = [project(d, projection) for d in docs]
        batch = int(body.get("batchSize", 101)) or len(docs)
        single = bool(body.get("singleBatch")) or int(body.get("limit", 0)) < 0
        return self._cursor(_ns(body, "find"), docs, batch, "firstBatch", single)

    def cmd_getmore(self, body: dict[str, Any]) -> dict[str, Any]:
        cid = int(body["getMore"])
        cursor = self._cursors.pop(cid, None)
        if cursor is None:
            raise CommandError(43, "CursorNotFound", f"cursor id {cid} not found")
        batch = int(body.get("batchSize", 0)) or len(cursor.docs)
        first, rest = cursor.docs[:batch], cursor.docs[batch:]
        if rest:
            self._cursors[cid] = _Cursor(cursor.ns, rest)
        return {
            "cursor": {"nextBatch": first, "id": bson.Int64(cid if rest else 0), "ns": cursor.ns}
        }

    def cmd_update(self, body: dict[str, Any]) -> dict[str, Any]:
        docs = self._coll(body, "update")
        n = modified = 0
        upserted = []
        for index, spec in enumerate(body.get("updates", [])):
            hits = [d for d in docs if matches(d, spec.get("q") or {})]
            if not spec.get("multi"):
                hits = hits[:1]
            for doc in hits:
                before = dict(doc)
                apply_update(doc, spec["u"])
                modified += doc != before
            n += len(hits)
            if not hits and spec.get("upsert"):
                doc = {k: v for k, v in (spec.get("q") or {}).items() if not k.startswith("$")}
                apply_update(doc, spec["u"])
                doc.setdefault("_id", ObjectId())
                docs.append(doc)
                upserted.append({"index": index, "_id": doc["_id"]})
                n += 1
        return {"n": n, "nModified": modified, **({"upserted": upserted} if upserted else {})}

    def cmd_delete(self, body: dict[str, Any]) -> dict[str, Any]:
        docs = self._coll(body, "delete")
        n = 0
        for spec in body.get("deletes", []):
            hits = [d for d in docs if matches(d, spec.get("q") or {})]
            if spec.get("limit", 0) == 1:
                hits = hits[:1]
            for doc in hits:
                docs.remove(doc)
            n += len(hits)
        return {"n": n}

    def cmd_count(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"n": sum(matches(d, body.get("query") or {}) for d in self._coll(body, "count"))}

    def cmd_aggregate(self, body: dict[str, Any]) -> dict[str, Any]:
        docs = list(self._coll(body, "aggregate"))
        for stage in body.get("pipeline", []):
            docs = run_stage(docs, stage)
        batch = int(body.get("cursor", {}).get("batchSize", 101)) or len(docs)
        return self._cursor(_ns(body, "aggregate"), docs, batch, "firstBatch", False)

    def cmd_drop(self, body: dict[str, Any]) -> dict[str, Any]:
        ns = _ns(body, "drop")
        if self._collections.pop(ns, None) is None:
            raise CommandError(26, "NamespaceNotFound", "ns not found")
        return {"ns": ns, "nIndexesWas": 1}

    def cmd_listcollections(self, body: dict[str, Any]) -> dict[str, Any]:
        db = body["$db"]
        names = sorted(ns.split(".", 1)[1] for ns in self._collections if ns.split(".", 1)[0] == db)
        infos = [
            {"name": n, "type": "collection", "options": {}, "info": {"readOnly": False}}
            for n in names
        ]
        infos = [i for i in infos if matches(i, body.get("filter") or {})]
        if body.get("nameOnly"):
            infos = [{"name": i["name"], "type": "collection"} for i in infos]
        return self._cursor(
            f"{db}.$cmd.listCollections", infos, len(infos) or 1, "firstBatch", True
        )

    def _coll(self, body: dict[str, Any], command: str) -> list[dict[str, Any]]:
        return self._collections.setdefault(_ns(body, command), [])

    def _cursor(
        self, ns: str, docs: list[dict[str, Any]], batch: int, key: str, single: bool
    ) -> dict[str, Any]:
        first, rest = docs[:batch], docs[batch:]
        cid = 0
        if rest and not single:
            cid = next(self._cursor_ids)
            self._cursors[cid] = _Cursor(ns, rest)
        return {"cursor": {key: first, "id": bson.Int64(cid), "ns": ns}}


def _ns(body: dict[str, Any], command: str) -> str:
    """``db.collection`` of a collection command (``{command: collection, $db: db}``)."""
    collection = body.get(command, body[next(iter(body))])
    if not isinstance(collection, str) or not collection:
        raise CommandError(73, "InvalidNamespace", f"{command} needs a collection name")
    return f"{body['$db']}.{collection}"
