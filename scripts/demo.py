"""``make demo``: the whole thing in one command.

Starts devstack (moto, PostgreSQL and MariaDB that verify IAM tokens like RDS, the Mongo peer and
an Aurora DSQL endpoint), invokes each example function of template.yaml twice in one
environment (cold, then warm) through ``python -m devstack invoke``'s machinery (awslambdaric +
a local Runtime API, no Docker), prints a short report and stops devstack. ``make demo`` builds
the layers first. ``make demo RUNTIME=python3.13`` (``scripts/demo.py --runtime python3.13``)
runs the examples under that Lambda runtime: its interpreter and the layer built for it. Exit
status 1 when an invocation failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from devstack.sam.invoke import InvokeError, Result, environment, find_python, prepare  # noqa: E402
from devstack.sam.template import Template  # noqa: E402
from devstack.stack import Stack  # noqa: E402

EXAMPLES = (
    ("PgExampleFunction", "pg.json"),
    ("MySqlExampleFunction", "mysql.json"),
    ("DsqlExampleFunction", "dsql.json"),
    ("MongoExampleFunction", "mongo.json"),
    ("SqlAlchemyExampleFunction", "sqlalchemy.json"),
    ("ValkeyExampleFunction", "valkey.json"),
)


def _row(function: str, call: str, result: Result | None, error: str | None) -> list[str]:
    if result is None:
        return [function, call, "FAILED", "-", "-", "-", "-", (error or "")[:90]]
    body: dict[str, Any] = {}
    if result.ok and isinstance(result.payload, dict):
        try:
            body = json.loads(result.payload.get("body") or "{}")
        except ValueError:
            body = {}
    status = str(result.payload.get("statusCode")) if result.ok else "ERROR"
    age = body.get("token_age_seconds")
    note = "" if result.ok else str(result.payload.get("errorMessage", ""))[:90]
    return [
        function,
        call,
        status,
        str(body.get("reused_connection", "-")),
        "-" if age is None else f"{age:.2f}",
        "-" if result.init_ms is None else f"{result.init_ms:.0f}",
        f"{result.duration_ms:.1f}",
        note,
    ]


def run_examples(env_json: Path, python: str | None, runtime: str | None) -> list[list[str]]:
    rows: list[list[str]] = []
    for function, event_file in EXAMPLES:
        event = (REPO / "events" / event_file).read_bytes()
        try:
            prepared = prepare(function, env_vars=env_json, python=python, runtime=runtime)
        except InvokeError as exc:
            rows.append(_row(function, "cold", None, str(exc)))
            continue
        with environment(prepared, log=sys.stderr) as env:
            for call in ("cold", "warm"):
                try:
                    rows.append(_row(function, call, env.invoke(event), None))
                except InvokeError as exc:
                    rows.append(_row(function, call, None, str(exc)))
                    break
    return rows


def print_report(rows: list[list[str]], started: float) -> None:
    head = ["function", "call", "status", "reused", "token age s", "init ms", "ms", "note"]
    print("\n### iamdb demo: the example functions against devstack\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\n(total {time.monotonic() - started:.1f} s; logs of the functions are on stderr)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", help="python3.11 ... python3.14 (default: the template's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    started = time.monotonic()
    python = None
    default = Template.load(REPO / "template.yaml").parameter_value("PythonRuntime")
    wanted = str(args.runtime or default).removeprefix("python")
    if find_python(wanted) is None:
        if args.runtime:
            print(
                f"demo: {args.runtime} is not installed here (pyenv install {wanted})",
                file=sys.stderr,
            )
            return 2
        python = sys.executable
        print(
            f"demo: python{wanted} not found: running with this Python (psycopg falls back to "
            "its pure-Python build)",
            file=sys.stderr,
        )
    print("demo: starting devstack ...", file=sys.stderr)
    stack = Stack(mysql=importlib.util.find_spec("devstack.mariadb") is not None)
    stack.start()
    try:
        with tempfile.TemporaryDirectory(prefix="iamdb-demo-") as tmp:
            env_json, _ = stack.write_env_files(Path(tmp))
            rows = run_examples(env_json, python, args.runtime)
    finally:
        stack.stop()
    print_report(rows, started)
    failed = [r for r in rows if r[2] not in ("200",)]
    if failed:
        print(f"demo: {len(failed)} invocation(s) failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
