"""A registry of the test's own as iamdb's default one.

``iamdb.sqlalchemy`` and ``iamdb.pg_pool()`` log in through ``iamdb._registry.default``, looked
up at every new connection. The ``own_registry`` fixture installs a :class:`Registry` built
over a given environment (and clock, sleep, telemetry) in its place for one test, and resets
it afterwards. A test module imports ``own_registry_fixture`` to use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

import pytest

import iamdb._registry
from iamdb._core.runtime import Runtime
from iamdb._core.telemetry import Telemetry
from iamdb._registry import Registry

Install = Callable[..., Registry]


@pytest.fixture(name="own_registry")
def own_registry_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """``install(environ, *, clock=None, sleep=None, telemetry=None, **changes)``: a Registry
    over ``environ`` with ``changes`` applied (None removes a variable), as the default."""
    made: list[Registry] = []

    def install(
        environ: Mapping[str, str],
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        telemetry: Telemetry | None = None,
        **changes: str | None,
    ) -> Registry:
        env = {**environ, **changes}
        runtime = Runtime(
            environ={k: v for k, v in env.items() if v is not None}, clock=clock, sleep=sleep
        )
        registry = Registry(runtime=runtime, telemetry=telemetry)
        made.append(registry)
        monkeypatch.setattr(iamdb._registry, "default", registry)
        return registry

    yield install
    for registry in made:
        registry.reset()
