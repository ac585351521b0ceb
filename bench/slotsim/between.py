"""The idle limit between invocations on devstack: a handler wrapped by ``iamdb.lambda_handler``
against the same handler unwrapped, both with this iamdb (part of ``python -m bench.slots``).

The function's timeout is :data:`TIMEOUT` (so sessions close after twice that idle while an
invocation may run) and the limit between invocations is :data:`BETWEEN` (bench-sized, as
``<P>IDLE_BETWEEN_INVOCATIONS``). Two measurements per engine:

1. slots: 20 environments run (five at a time), freeze :data:`FROZEN` seconds (less than the
   timeout), then 10 newcomers arrive: served, how the others failed and after how long, new
   IAM logins; then the 20 are thawed one by one;
2. cost: one environment invoked :data:`ROUNDS` times back to back (thawed at once, so the
   connection is still open): the median first ``get_*()`` of an invocation (wrapped: it sets
   the long limit again) and the median invocation as the runtime sees it (wrapped: the
   limit between invocations set after the handler returned).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from bench.slots import SLOTS, Call, Fleet, Phase, scenario

if TYPE_CHECKING:
    from devstack.stack import Stack

TIMEOUT = 10.0  # while an invocation may run, the server closes sessions idle 20 s
BETWEEN = 2  # between invocations of the wrapped handler, 2 s
FROZEN = 4.0
ROUNDS = 40


def fleet(stack: Stack, engine: str, layer: Path, wrapped: bool, timeout: float = TIMEOUT) -> Fleet:
    """Environments of a function with this timeout and :data:`BETWEEN` s between invocations,
    its handler wrapped by ``iamdb.lambda_handler`` or not."""
    prefix = f"IAMDB_{engine.upper()}_"
    env = {prefix + "IDLE_BETWEEN_INVOCATIONS": str(BETWEEN)}
    if wrapped:
        env["SLOTS_WRAP"] = "1"
    return Fleet(stack, engine, layer, timeout=timeout, env=env)


def slots(stack: Stack, engine: str, layer: Path, wrapped: bool) -> list[Phase]:
    """Measurement 1: :func:`bench.slots.scenario`, the first 20 frozen :data:`FROZEN` s."""
    return scenario(fleet(stack, engine, layer, wrapped), FROZEN, BETWEEN + 1.0)


def cost(stack: Stack, engine: str, layer: Path, wrapped: bool) -> tuple[float, float]:
    """Measurement 2: (first get, whole invocation), medians in milliseconds."""
    envs = fleet(stack, engine, layer, wrapped)
    try:
        (env,) = envs.spawn(1)
        envs.invoke([env])  # the login
        gets, runs = [], []
        for _ in range(ROUNDS):
            env.start(None, TIMEOUT)
            outcome = env.result()
            call = Call(bool(outcome.ok and outcome.value["ok"]), outcome.value or {})
            assert call.ok and call.data["reconnects"] == 0, call.data
            gets.append(call.data["get_ms"])
            runs.append(1000 * outcome.elapsed)
        return statistics.median(gets), statistics.median(runs)
    finally:
        envs.close()


def rows(stack: Stack, engines: tuple[str, ...], layer: Path) -> list[list[str]]:
    """Both measurements for each engine, unwrapped beside wrapped."""
    out = []
    for engine in engines:
        plain, wrapped = (slots(stack, engine, layer, w) for w in (False, True))
        for p, w in zip(plain, wrapped, strict=True):
            out.append([
                engine, p.name, f"{p.served} / {len(p.calls)}", f"{w.served} / {len(w.calls)}",
                p.failures, w.failures, _s(p.told), _s(w.told),
                str(p.new_logins), str(w.new_logins),
            ])  # fmt: skip
        (pg, pr), (wg, wr) = (cost(stack, engine, layer, w) for w in (False, True))
        out.append([
            engine, f"{ROUNDS} back to back: first get (ms) / invocation (ms)",
            f"{pg:.2f} / {pr:.2f}", f"{wg:.2f} / {wr:.2f}", "-", "-", "-", "-", "-", "-",
        ])  # fmt: skip
    return out


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_grid(rows: list[list[str]]) -> None:
    from bench import table

    table.print_grid(
        f"Between invocations on devstack: {SLOTS} slots, function timeout {TIMEOUT:g} s (idle "
        f"limit {2 * TIMEOUT:g} s while running), {BETWEEN} s between invocations when wrapped, "
        f"the first 20 frozen {FROZEN:g} s before the newcomers",
        ["engine", "phase", "served: unwrapped", "served: wrapped", "failed: unwrapped",
         "failed: wrapped", "told (s): unwrapped", "told (s): wrapped",
         "new IAM logins: unwrapped", "new IAM logins: wrapped"],
        rows,
    )  # fmt: skip
    print(
        "\nGoal: environments frozen for less than the function's timeout give their slots back "
        "when the handler is\nwrapped by iamdb.lambda_handler; what it costs a warm invocation."
    )
