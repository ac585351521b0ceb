"""``iamdb.lambda_handler``: the context is known while the handler runs, the end of the
invocation is told to every SQL connection (``Registry.end_invocation``) whether the handler
returned or raised, and the handler's own result or exception comes out unchanged. What the end
does to a connection: tests/unit/sql/slots/test_between_invocations.py; with real servers and
processes: tests/integration/test_slots_between.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

import iamdb
from iamdb import _registry


class Context:
    aws_request_id = "r-1"

    def __init__(self) -> None:
        self._ends = time.time() + 30.0

    def get_remaining_time_in_millis(self) -> int:
        return int((self._ends - time.time()) * 1000)


@pytest.fixture
def ended(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str | None]]:
    """The invocation each end_invocation() saw as current."""
    iamdb.reset()
    seen: list[str | None] = []
    registry = _registry.default
    real = registry.end_invocation

    def end() -> None:
        seen.append(registry.invocation.current())
        real()

    monkeypatch.setattr(registry, "end_invocation", end)
    yield seen
    iamdb.reset()


def test_the_handler_runs_in_its_invocation_and_its_end_is_told(ended: list[str | None]) -> None:
    @iamdb.lambda_handler
    def handler(event: Any, context: Any) -> dict[str, Any]:
        """The function's own docstring."""
        return {"event": event, "invocation": _registry.default.invocation.current()}

    assert handler({"n": 1}, Context()) == {"event": {"n": 1}, "invocation": "r-1"}
    assert ended == ["r-1"]
    assert handler.__name__ == "handler" and handler.__doc__ == "The function's own docstring."


def test_a_raising_handler_is_ended_too_and_its_exception_comes_out_unchanged(
    ended: list[str | None],
) -> None:
    failure = KeyError("rawPath")

    @iamdb.lambda_handler
    def handler(event: Any, context: Any) -> None:
        raise failure

    with pytest.raises(KeyError) as raised:
        handler({}, Context())
    assert raised.value is failure and ended == ["r-1"]


def test_only_a_plain_function_can_be_wrapped() -> None:
    async def coroutine(event: Any, context: Any) -> None: ...

    async def generator(event: Any, context: Any) -> Any:
        yield event

    for wrong in (coroutine, generator, "handler"):
        with pytest.raises(iamdb.ConfigError) as raised:
            iamdb.lambda_handler(wrong)  # type: ignore[arg-type]
        assert raised.value.variable == "handler"


def test_a_transaction_rolled_back_at_the_end_is_reported_in_that_invocation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The end's TransactionsRolledBack is flushed with the invocation that left it, not with
    whichever invocation calls get_pg() next."""
    from tests.unit.core.telemetry.test_telemetry import Recording, managed_with

    iamdb.reset()
    telemetry = Recording()
    managed, driver, _ = managed_with(telemetry)
    monkeypatch.setitem(_registry.default._managed, ("pg", None), managed)
    conn = managed.get()
    managed.probe.flush()
    telemetry.emitted.clear()

    @iamdb.lambda_handler
    def handler(event: Any, context: Any) -> None:
        driver.transactions[conn.fileno()] = "INTRANS"  # began, never committed

    try:
        handler({}, Context())
    finally:
        driver.cleanup()
        iamdb.reset()
    assert [values for _, values in telemetry.emitted] == [{"TransactionsRolledBack": [1.0]}]
