"""Connection slots benchmark: Lambda environments as processes against a server with few slots,
iamdb today (main, the baseline) against this version; then the same at fleet scale in virtual
time (:mod:`bench.slotsim`).

On devstack, PostgreSQL and MariaDB each leave :data:`SLOTS` connections to the application.
Every environment is a process (:class:`tests.lifecycle.Environment`: frozen with SIGSTOP between
invocations) whose handler calls ``set_lambda_context``, ``get_pg()``/``get_mysql()`` and runs
``SELECT 1``; its context gives it a function timeout of :data:`TIMEOUT` seconds. Phases:

1. 20 environments invoked, five at a time, then left idle longer than their timeout allows
   (:data:`IDLE` seconds: past the idle limit iamdb asks for);
2. 10 newcomers invoked at once;
3. after as long again, the 20 first ones thawed and invoked one by one;
4. 25 and 40 cold environments invoked at once on an empty server;
5. with this iamdb only, the handler wrapped by ``iamdb.lambda_handler`` beside the same
   unwrapped: environments frozen for less than a longer timeout, then newcomers, and what the
   wrapping costs a warm invocation (:mod:`bench.slotsim.between`).

Columns: invocations served / attempted; how the others failed (the error's type, and when, in
seconds from the invocation's start); the median ``get_*()`` time of the phase (a reconnect for a
thawed environment whose session the server closed) against a warm ``get_*()`` in the same
invocation; new IAM logins (logins with a token the server had not accepted before: what RDS
throttles), as devstack's verifier counts them. The baseline is iamdb at :data:`BASELINE_COMMIT`
(main before connection slots), extracted with ``git archive``.

Run: ``python -m bench.slots [--no-devstack] [--no-sim] [--all]`` (starts and stops its own
devstack; the fleet scenarios at 30 s and 900 s timeouts; ``--all`` adds overload: bursts
beyond the slots).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.lifecycle import ROOT, Environment

if TYPE_CHECKING:
    from devstack.stack import Stack

BASELINE_COMMIT = "26779cd669b0d513cce02192e21dbea44eafe7ba"
"""main before connection slots: no idle limit, a full server fails the login at once."""
SLOTS = 20  # connections each server leaves the application
TIMEOUT = 4.0  # the function's timeout (s): iamdb asks the server for an idle limit of 8 s
IDLE = 10.0  # how long environments stay frozen between phases 1, 2 and 3

HANDLER = r"""
import os, time, iamdb
ENGINE = os.environ["SLOTS_ENGINE"]
get = {"pg": iamdb.get_pg, "mysql": iamdb.get_mysql}[ENGINE]
__import__({"pg": "psycopg", "mysql": "pymysql"}[ENGINE])  # at init, as functions do


def query(conn):
    if ENGINE == "pg":
        return conn.execute("SELECT 1").fetchone()[0]
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        return cur.fetchone()[0]


def handler(event, context):
    event = event or {}
    iamdb.set_lambda_context(context)
    started = time.perf_counter()
    try:
        conn = get()
    except iamdb.IamDbError as exc:
        return {"ok": False, "error": type(exc).__name__, "message": str(exc),
                "sqlstate": getattr(exc, "sqlstate", None), "errno": getattr(exc, "errno", None),
                "attempts": exc.attempts, "spent": time.perf_counter() - started}
    got = time.perf_counter() - started
    query(conn)
    if event.get("idle"):
        time.sleep(event["idle"])
        query(conn)
    if event.get("hold"):
        time.sleep(event["hold"])
    warm = time.perf_counter()
    get()
    warm = time.perf_counter() - warm
    info = iamdb.info(ENGINE)
    return {"ok": True, "get_ms": 1000 * got, "warm_us": 1e6 * warm, "reused": info.reused,
            "logins": info.logins, "reconnects": info.reconnects,
            "idle_limit": getattr(info, "idle_limit_seconds", None),
            "server_limit": server_limit(conn), "slot_waits": getattr(info, "slot_waits", 0)}


def server_limit(conn):  # the idle limit the server applies to this session now
    if ENGINE == "pg":
        return conn.execute("SELECT current_setting('idle_session_timeout')").fetchone()[0]
    with conn.cursor() as cur:
        cur.execute("SELECT @@session.wait_timeout")
        return str(cur.fetchone()[0])


if os.environ.get("SLOTS_WRAP"):  # iamdb.lambda_handler: the limit between invocations
    handler = iamdb.lambda_handler(handler)
"""


@dataclass(frozen=True)
class Call:
    """One invocation, as the handler (or the harness, on a timeout) reported it."""

    ok: bool
    data: dict[str, Any]

    @property
    def error(self) -> str:
        return str(self.data.get("error") or "")


class Fleet:
    """Environments of one function (``engine``'s singleton, iamdb from ``layer``) on ``stack``."""

    def __init__(
        self, stack: Stack, engine: str, layer: Path, timeout: float = TIMEOUT,
        env: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.stack, self.engine, self.layer, self.timeout = stack, engine, layer, timeout
        base = {k: v for k, v in stack.env.items() if k != "IAMDB_THROTTLE_TABLE"}
        self.env = {**base, "SLOTS_ENGINE": engine, **(env or {})}
        self.envs: list[Environment] = []
        self.server = stack.pg_server if engine == "pg" else stack.mysql_server

    def spawn(self, n: int) -> list[Environment]:
        """``n`` new environments, each with a role session of its own (as on Lambda: their
        tokens differ, so each first login is a new IAM login)."""
        from bench.burst import distinct_credentials

        made = [
            Environment(HANDLER, {**self.env, **creds}, layer=self.layer)
            for creds in distinct_credentials(self.stack, n)
        ]
        self.envs.extend(made)
        return made

    def invoke(self, envs: list[Environment], event: Any = None) -> list[Call]:
        """Invoke ``envs`` at once (each thawed first), wait for every outcome."""
        for env in envs:
            env.start(event, self.timeout)
        return [_call(env) for env in envs]

    def sessions(self) -> int:
        server = self.stack.pg if self.engine == "pg" else self.stack.mysql
        assert server is not None
        return server.sessions("iamdb_app")

    def new_logins(self) -> int:
        return self.stack.verifier.new_tokens.get(self.server, 0)

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs.clear()
        server = self.stack.pg if self.engine == "pg" else self.stack.mysql
        assert server is not None
        server.kill_connections("iamdb_app")


def _call(env: Environment) -> Call:
    outcome = env.result()
    if outcome.timed_out:
        return Call(False, {"error": "Task timed out"})
    if not outcome.ok:
        return Call(False, {"error": outcome.error, "message": outcome.message})
    data: dict[str, Any] = outcome.value
    return Call(bool(data["ok"]), data)


def limit_slots(stack: Stack, slots: int = SLOTS) -> None:
    """Leave ``slots`` connections to the application on both servers: PostgreSQL's
    ``max_connections`` is fixed at start (``Stack(max_connections=slots + 3)``), MariaDB's is
    set here (it admits one more, for root)."""
    if stack.mysql is not None:
        with stack.mysql.admin() as conn, conn.cursor() as cur:
            cur.execute(f"SET GLOBAL max_connections = {int(slots)}")


@dataclass(frozen=True)
class Phase:
    """What one phase produced."""

    name: str
    calls: list[Call]
    new_logins: int

    @property
    def served(self) -> int:
        return sum(c.ok for c in self.calls)

    @property
    def failures(self) -> str:
        errors = Counter(c.error for c in self.calls if not c.ok)
        return ", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "-"

    @property
    def told(self) -> float | None:
        spent = [c.data["spent"] for c in self.calls if "spent" in c.data]
        return statistics.median(spent) if spent else None

    @property
    def get_ms(self) -> float | None:
        times = [c.data["get_ms"] for c in self.calls if c.ok]
        return statistics.median(times) if times else None

    @property
    def warm_us(self) -> float | None:
        times = [c.data["warm_us"] for c in self.calls if c.ok]
        return statistics.median(times) if times else None


def scenario(fleet: Fleet, frozen: float = IDLE, again: float = IDLE) -> list[Phase]:
    """Phases 1-3 of the module docstring with ``fleet``'s environments: the first 20 frozen
    ``frozen`` seconds before the newcomers, thawed ``again`` seconds after them. Closes the
    fleet."""
    phases: list[Phase] = []

    def phase(name: str, run: Callable[[], list[Call]]) -> None:
        before = fleet.new_logins()
        calls = run()
        phases.append(Phase(name, calls, fleet.new_logins() - before))

    try:
        first = fleet.spawn(20)
        phase("20, five at a time", lambda: [c for i in range(0, 20, 5)
                                              for c in fleet.invoke(first[i : i + 5])])  # fmt: skip
        time.sleep(frozen)
        newcomers = fleet.spawn(10)
        phase("then 10 newcomers", lambda: fleet.invoke(newcomers))
        time.sleep(again)
        phase("then the 20 thawed one by one", lambda: [fleet.invoke([e])[0] for e in first])
    finally:
        fleet.close()
    return phases


def burst(stack: Stack, engine: str, layer: Path, n: int) -> Phase:
    """Phase 4: ``n`` cold environments at once on an empty server."""
    fleet = Fleet(stack, engine, layer)
    try:
        before = fleet.new_logins()
        calls = fleet.invoke(fleet.spawn(n))
        return Phase(f"{n} at once", calls, fleet.new_logins() - before)
    finally:
        fleet.close()


def baseline_layer(into: Path) -> Path | None:
    """``layer/`` of :data:`BASELINE_COMMIT` extracted under ``into`` (None: no git history)."""
    archive = into / "baseline.tar"
    done = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "-o", str(archive), BASELINE_COMMIT, "layer/iamdb"],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        return None
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "layer"


def _ms(value: float | None, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:,.1f}"


def print_devstack(results: dict[tuple[str, str], list[Phase]]) -> None:
    from bench.table import print_grid

    rows = []
    for engine in ("pg", "mysql"):
        base, new = results.get((engine, "main")), results.get((engine, "iamdb"))
        if base is None or new is None:
            continue
        for b, n in zip(base, new, strict=True):
            rows.append([
                engine, n.name,
                f"{b.served} / {len(b.calls)}", f"{n.served} / {len(n.calls)}",
                b.failures, n.failures, _ms(b.told), _ms(n.told),
                f"{_ms(b.get_ms)} / {_ms(b.warm_us, 1e-3)}",
                f"{_ms(n.get_ms)} / {_ms(n.warm_us, 1e-3)}",
                str(b.new_logins), str(n.new_logins),
            ])  # fmt: skip
    print_grid(
        f"Connection slots on devstack: {SLOTS} slots for the application, function timeout "
        f"{TIMEOUT:g} s, environments frozen {IDLE:g} s between phases",
        ["engine", "phase", "served: main", "served: iamdb", "failed: main", "failed: iamdb",
         "told (s): main", "told (s): iamdb", "get / warm get (ms): main",
         "get / warm get (ms): iamdb", "new IAM logins: main", "new IAM logins: iamdb"],
        rows,
    )  # fmt: skip
    print(
        "\nGoals: every newcomer and every thawed environment served while the environments "
        "running\nfit the slots; beyond them, the excess told by TooManyConnectionsError within "
        "its deadline;\na thawed environment's reconnect reuses its cached token (no new IAM "
        "login)."
    )


def devstack_rows(
    layers: dict[str, Path | None],
) -> tuple[dict[tuple[str, str], list[Phase]], list[list[str]]]:
    """Phases 1-4 with each layer; then :mod:`bench.slotsim.between`'s rows with this one."""
    from bench.slotsim import between
    from devstack.stack import Stack

    results: dict[tuple[str, str], list[Phase]] = {}
    stack = Stack(max_connections=SLOTS + 3, mongo=False, dsql=False, valkey=False)
    stack.start()
    try:
        limit_slots(stack)
        engines = ("pg", "mysql") if stack.mysql is not None else ("pg",)
        for engine in engines:
            for name, layer in layers.items():
                if layer is not None:
                    phases = scenario(Fleet(stack, engine, layer))
                    phases += [burst(stack, engine, layer, n) for n in (25, 40)]
                    results[(engine, name)] = phases
        wrapped = between.rows(stack, engines, ROOT / "layer")
    finally:
        stack.stop()
    return results, wrapped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.slots", description=__doc__)
    parser.add_argument("--no-devstack", action="store_true", help="only the simulation")
    parser.add_argument("--no-sim", action="store_true", help="only devstack")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--all", action="store_true", help="every fleet scenario (overload too: longer)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="iamdb-slots-") as tmp:
        layers = {"main": baseline_layer(Path(tmp)), "iamdb": ROOT / "layer"}
        if layers["main"] is None:
            print(f"(no baseline: git archive {BASELINE_COMMIT[:7]} failed)")
        if not args.no_devstack:
            from bench.slotsim import between

            results, wrapped = devstack_rows(layers)
            print_devstack(results)
            between.print_grid(wrapped)
        if not args.no_sim:
            from bench.slotsim import report
            from bench.slotsim.fleet import DEFAULT

            report.main(layers, args.seed, None if args.all else DEFAULT)


if __name__ == "__main__":
    main()
