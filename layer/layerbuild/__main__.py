"""``python -m layerbuild``: what ``layer/Makefile`` runs.

- ``names``: the layers, one per line (``iamdb-python313-arm64``);
- ``build NAME --out DIR``: build layer NAME (or its template logical id) into ``DIR/python``;
- ``check NAME DIR``: run the checks on an already built ``DIR/python``.

Exit 1 with the reasons on stderr when a build fails or a check does not pass.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from layerbuild import checks
from layerbuild.build import BuildError, build
from layerbuild.lock import LockError
from layerbuild.targets import TARGETS, target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m layerbuild", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("names")
    build_parser = commands.add_parser("build")
    build_parser.add_argument("name")
    build_parser.add_argument("--out", type=Path, required=True)
    build_parser.add_argument("--target-python", help="the target's interpreter, for .pyc")
    build_parser.add_argument(
        "--pyodide",
        type=Path,
        help="a Pyodide npm package: compiles the .pyc of a runtime with no interpreter here",
    )
    check_parser = commands.add_parser("check")
    check_parser.add_argument("name")
    check_parser.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "names":
        print("\n".join(t.name for t in TARGETS))
        return 0
    try:
        chosen = target(args.name)
        if args.command == "check":
            found = checks.problems(args.dir / "python", chosen)
            for problem in found:
                print(f"layer: {chosen.name}: {problem}", file=sys.stderr)
            return 1 if found else 0
        report = build(
            chosen, args.out, target_python=args.target_python, pyodide_package=args.pyodide
        )
    except (BuildError, LockError, ValueError) as exc:
        print(f"layer: {exc}", file=sys.stderr)
        return 1
    pyc = f".pyc by {report.pyc_by}" if report.pyc_by else "no .pyc"
    print(
        f"layer: {report.layer}: {report.unzipped_bytes / 1e6:.1f} MB, {pyc}, "
        f"{report.stripped_bytes / 1e6:.1f} MB of debug sections stripped",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
