"""``python -m devstack up``: run the local AWS + databases until SIGINT/SIGTERM.
``python -m devstack invoke <LogicalId> -e events/x.json``: see :mod:`devstack.sam.invoke`.

Prints exactly one line, ``READY <absolute path of env.sh>``, once every server accepts
logins; ``source`` that file to get the environment a Lambda function using iamdb sees.
Logs (the verifier's refusals among them) go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from devstack.reaper import DSQL_MAX_AGE
from devstack.stack import Stack
from devstack.valkey import MAX_AGE as VALKEY_MAX_AGE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser(
        "up",
        help="start moto, PostgreSQL, MariaDB, the Mongo peer, DSQL and the cache; write env files",
    )
    up.add_argument("--iam-rate", type=float, default=None, help="new IAM logins/s per server")
    up.add_argument("--dir", type=Path, default=Path(".devstack"), help="where env files go")
    up.add_argument("--no-mysql", action="store_true", help="do not start MariaDB")
    up.add_argument("--no-pg", action="store_true", help="do not start PostgreSQL")
    up.add_argument("--no-dsql", action="store_true", help="no Aurora DSQL endpoint")
    up.add_argument(
        "--dsql-max-age",
        type=_seconds,
        default=DSQL_MAX_AGE,
        metavar="SECONDS",
        help=f"the DSQL endpoint drops connections older than this (DSQL: {DSQL_MAX_AGE:g})",
    )
    up.add_argument(
        "--max-connections",
        type=_count,
        default=None,
        metavar="N",
        help="PostgreSQL's and MariaDB's max_connections (PostgreSQL keeps 3 for its superuser)",
    )
    up.add_argument(
        "--user-connections",
        type=_count,
        default=None,
        metavar="N",
        help="at most N sessions per database user (CONNECTION LIMIT, MAX_USER_CONNECTIONS)",
    )
    up.add_argument("--no-valkey", action="store_true", help="no ElastiCache (redis-server)")
    up.add_argument(
        "--valkey-max-age",
        type=_seconds,
        default=VALKEY_MAX_AGE,
        metavar="SECONDS",
        help="the cache closes connections this long after their last login "
        f"(ElastiCache: {VALKEY_MAX_AGE:g})",
    )
    from devstack.sam import invoke

    invoke.add_arguments(
        commands.add_parser("invoke", help="run a template function like Lambda, without Docker")
    )
    return parser


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _count(text: str) -> int:
    value = int(text)
    if not 4 <= value <= 10_000:  # PostgreSQL needs more than its 3 reserved slots
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of connections (4-10000)")
    return value


def up(args: argparse.Namespace) -> int:
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stack = Stack(
        iam_rate=args.iam_rate,
        pg=not args.no_pg,
        mysql=not args.no_mysql,
        dsql=not args.no_dsql,
        dsql_max_age=args.dsql_max_age,
        max_connections=args.max_connections,
        user_connections=args.user_connections,
        valkey=not args.no_valkey,
        valkey_max_age=args.valkey_max_age,
    )
    env_files: tuple[Path, ...] = ()
    try:
        started = time.monotonic()
        stack.start()
        env_files = stack.write_env_files(args.dir)
        logging.getLogger("devstack").info("started in %.2f s", time.monotonic() - started)
        if not stopping.is_set():
            print(f"READY {env_files[1].resolve()}", flush=True)
        while not stopping.wait(0.5):
            pass
    finally:
        stack.stop()
        for path in env_files:  # their credentials and ports die with the stack
            path.unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "invoke":
        from devstack.sam import invoke

        return invoke.run(args)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    return up(args)


if __name__ == "__main__":
    sys.exit(main())
