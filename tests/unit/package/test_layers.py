"""The package's layers, and that its imports go one way only.

``errors`` <- ``_core`` <- ``_aws`` <- the rooms ``_sql``, ``_mongo``, ``_valkey`` (never each
other) <- the registry, ``_info``, ``_pool``, ``_cli``, ``_engines`` <- the public modules
(``iamdb``, ``iamdb.aio``, ``iamdb.sqlalchemy``, ``iamdb.__main__``). Every import counts: at
module level, inside a function, or for the type checker only. And no module imports itself
back through others (no cycle, whatever kind of import closes it). docs/architecture.md explains
the rule.
"""

from __future__ import annotations

from tests.unit.package.imports import Arrow, arrows, cycles, modules

PUBLIC = {"iamdb", "iamdb.aio", "iamdb.sqlalchemy", "iamdb.__main__"}
ABOVE = {"iamdb._registry", "iamdb._info", "iamdb._pool", "iamdb._cli", "iamdb._engines"}
RANKS = {
    "iamdb.errors": 0,
    "iamdb._core": 1,
    "iamdb._aws": 2,
    "iamdb._sql": 3,
    "iamdb._mongo": 3,
    "iamdb._valkey": 3,
}


def layer(module: str) -> tuple[int, str]:
    """(rank, room) of a module: what it may import is below its rank, or in its own room."""
    if module in PUBLIC:
        return 5, "public"
    if module in ABOVE:
        return 4, "above"
    for room, rank in RANKS.items():
        if module == room or module.startswith(room + "."):
            return rank, room
    raise AssertionError(f"{module} is in no layer: add it to one (and to docs/architecture.md)")


def allowed(arrow: Arrow) -> bool:
    (source_rank, source_room), (target_rank, target_room) = (
        layer(arrow.source),
        layer(arrow.target),
    )
    return target_rank < source_rank or source_room == target_room


def test_every_module_is_in_a_layer() -> None:
    for module in modules():
        layer(module)


def test_imports_go_down_only() -> None:
    wrong = [
        f"{a.source} imports {a.target} ({a.kind}, line {a.line})"
        for a in arrows()
        if not allowed(a)
    ]
    assert wrong == []


def test_no_import_cycle() -> None:
    assert cycles(arrows()) == []


def test_the_check_sees_a_sideways_and_an_upward_import() -> None:
    assert not allowed(Arrow("iamdb._sql.pg", "iamdb._mongo.uri", 1, "type"))
    assert not allowed(Arrow("iamdb._core.log", "iamdb._aws.http", 1, "function"))
    assert allowed(Arrow("iamdb._mongo.client", "iamdb._aws.sts", 1, "module"))
    assert cycles([Arrow("a", "b", 1, "module"), Arrow("b", "a", 2, "type")]) == [["a", "b"]]
