"""iamdb.info(): validation and the unused instance, without any server."""

from __future__ import annotations

import pytest

import iamdb
from iamdb._info import describe
from iamdb._registry import Registry
from tests.fakes import runtime


def test_an_unknown_engine_or_a_bad_name_is_a_config_error() -> None:
    with pytest.raises(iamdb.ConfigError) as engine:
        iamdb.info("postgres")
    assert engine.value.variable == "engine"
    with pytest.raises(iamdb.ConfigError) as name:
        iamdb.info("pg", "iam")  # reserved: its HOST would be IAMDB_PG_IAM_HOST
    assert name.value.variable == "name"


@pytest.mark.parametrize("engine", ["pg", "mysql", "dsql", "mongo"])
def test_an_instance_never_used_reads_as_zeros_and_makes_nothing(engine: str) -> None:
    registry = Registry(runtime=runtime({}))
    info = describe(registry, engine, None)
    assert info == iamdb.Info(engine, None, False, False, None, None, 0, 0, 0, 0.0, 0)
    assert registry.known_managed(engine, None) is None and registry.known_mongo(None) is None
