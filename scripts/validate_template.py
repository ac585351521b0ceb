"""Validate template.yaml and samconfig.toml the way CI must: SAM resources included.

Recent cfn-lint releases skip ``AWS::Serverless::*`` resources, so a bad ``!Ref`` in a function's
``Layers`` or a wrong ``Runtime`` would pass them silently. This script therefore:

1. proves the installed cfn-lint checks SAM resources, by linting a tiny SAM template with a
   bad ``!Ref`` and a bad runtime that must be reported (else it fails, naming the pin to use);
2. lints the template with cfn-lint (errors and warnings fail);
3. checks iamdb's own rules cfn-lint cannot know: the layers are built with ``makefile`` for
   the runtime parameter only, the functions use the layer and a Python runtime, and every
   ``parameter_overrides`` entry in samconfig.toml names a template parameter.

Usage: ``python scripts/validate_template.py [--template T] [--samconfig S]``; exit 1 on problems.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from devstack.sam.template import Template, TemplateError, load_samconfig  # noqa: E402

_RUN_CFN_LINT = "import sys; from cfnlint.runner import main; sys.exit(main())"
_CANARY = """\
Transform: AWS::Serverless-2016-10-31
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.99
      Handler: app.handler
      CodeUri: .
      Layers: [!Ref NoSuchLayer]
"""


def cfn_lint(path: Path) -> tuple[int, str]:
    """Run cfn-lint on ``path``: (exit code, its report)."""
    result = subprocess.run(
        [sys.executable, "-c", _RUN_CFN_LINT, "--format", "parseable", "--", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return result.returncode, (result.stdout + result.stderr).strip()


def check_cfn_lint_sees_sam() -> list[str]:
    """cfn-lint must report both mistakes of the canary template, else it skips SAM."""
    with tempfile.TemporaryDirectory() as tmp:
        canary = Path(tmp) / "canary.yaml"
        canary.write_text(_CANARY)
        _, report = cfn_lint(canary)
    if "NoSuchLayer" in report and "python3.99" in report:
        return []
    return [
        "the installed cfn-lint does not check SAM resources (a bad !Ref and a bad runtime in "
        "AWS::Serverless::Function passed): install the version pinned in pyproject.toml"
    ]


def iamdb_rules(template: Template, samconfig: Path | None) -> list[str]:
    """Rules specific to this project's template."""
    problems: list[str] = []
    runtime = template.parameter_value("PythonRuntime")
    for layer_id in ("IamDbLayer", "IamDbLayerArm64"):
        layer = template.resource(layer_id)
        if layer.get("Metadata", {}).get("BuildMethod") != "makefile":
            problems.append(f"{layer_id}: Metadata.BuildMethod must be makefile")
        runtimes = template.resolve(layer.get("Properties", {}).get("CompatibleRuntimes"))
        if runtimes != [runtime]:
            problems.append(f"{layer_id}: CompatibleRuntimes must be exactly [{runtime}]")
        if layer.get("Properties", {}).get("RetentionPolicy") != "Retain":
            problems.append(f"{layer_id}: RetentionPolicy must be Retain")
    for function_id in template.function_ids():
        fn = template.function(function_id)
        if fn.runtime != runtime:
            problems.append(f"{function_id}: Runtime {fn.runtime} is not the layer's {runtime}")
        if "IamDbLayer" not in fn.layers and "IamDbLayerArm64" not in fn.layers:
            problems.append(f"{function_id}: does not use the iamdb layer")
    if samconfig is not None:
        for section in ("deploy", "local_invoke"):
            for name in load_samconfig(samconfig, section).parameter_overrides:
                if name not in template.parameters:
                    problems.append(f"samconfig.toml [{section}]: no template parameter {name!r}")
    return problems


def validate(template_path: Path, samconfig: Path | None) -> list[str]:
    """Every problem found (empty: valid)."""
    problems = check_cfn_lint_sees_sam()
    code, report = cfn_lint(template_path)
    if code != 0:
        problems.append(f"cfn-lint {template_path.name} (exit {code}):\n{report}")
    try:
        problems += iamdb_rules(Template.load(template_path), samconfig)
    except TemplateError as exc:
        problems.append(f"{template_path.name}: {exc}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", type=Path, default=REPO / "template.yaml")
    parser.add_argument("--samconfig", type=Path, default=REPO / "samconfig.toml")
    args = parser.parse_args(argv)
    samconfig = args.samconfig if args.samconfig.exists() else None
    problems = validate(args.template, samconfig)
    for problem in problems:
        print(f"INVALID: {problem}", file=sys.stderr)
    if not problems:
        print(f"{args.template.name}: valid (cfn-lint with SAM resources, iamdb rules)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
