"""Validate template.yaml and samconfig.toml the way CI must: SAM resources included.

Recent cfn-lint releases skip ``AWS::Serverless::*`` resources, so a bad ``!Ref`` in a function's
``Layers`` or a wrong ``Runtime`` would pass them silently. This script therefore:

1. proves the installed cfn-lint checks SAM resources, by linting a tiny SAM template with a
   bad ``!Ref`` and a bad runtime that must be reported (else it fails, naming the pin to use);
2. lints the template with cfn-lint (errors and warnings fail);
3. checks iamdb's own rules cfn-lint cannot know: one layer per target of
   ``layer/layerbuild/targets.py`` (runtime x architecture) built with ``makefile``, with exactly
   its runtime and architecture, an SSM parameter and an output holding its ARN; under every
   ``PythonRuntime`` the functions run that runtime with the layer built for it; the Serverless
   Application Repository metadata ``sam publish`` needs; and every ``parameter_overrides`` entry
   in samconfig.toml names a template parameter.

Usage: ``python scripts/validate_template.py [--template T] [--samconfig S]``; exit 1 on problems.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "layer")]

import iamdb  # noqa: E402
from devstack.sam.template import Template, TemplateError, load_samconfig  # noqa: E402
from layerbuild.targets import RUNTIMES, TARGETS  # noqa: E402

PARAMETER_PATH = "LayerParameterPath"
_SAR_REQUIRED = ("Name", "Description", "Author", "SemanticVersion")

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


def layer_rules(template: Template) -> list[str]:
    """One layer per target of layerbuild, exactly as built, with its SSM parameter and output."""
    problems: list[str] = []
    wanted = {t.logical_id for t in TARGETS}
    for rid, resource in template.resources.items():
        if resource.get("Type") == "AWS::Serverless::LayerVersion" and rid not in wanted:
            problems.append(
                f"{rid}: a layer layerbuild does not build (layer/layerbuild/targets.py)"
            )
    for t in TARGETS:
        if t.logical_id not in template.resources:
            problems.append(
                f"{t.logical_id}: missing (the layer for {t.runtime.name} {t.arch.name})"
            )
            continue
        layer = template.resource(t.logical_id)
        props, meta = layer.get("Properties") or {}, layer.get("Metadata") or {}
        expected = {
            "Metadata.BuildMethod": (meta.get("BuildMethod"), "makefile"),
            "Metadata.BuildArchitecture": (meta.get("BuildArchitecture"), t.arch.name),
            "LayerName": (template.resolve(props.get("LayerName")), t.name),
            "ContentUri": (props.get("ContentUri"), "layer/"),
            "CompatibleRuntimes": (
                template.resolve(props.get("CompatibleRuntimes")),
                [t.runtime.name],
            ),
            "CompatibleArchitectures": (props.get("CompatibleArchitectures"), [t.arch.name]),
            "RetentionPolicy": (props.get("RetentionPolicy"), "Retain"),
        }
        for name, (found, want) in expected.items():
            if found != want:
                problems.append(f"{t.logical_id}: {name} must be {want!r}, not {found!r}")
        parameter = template.resources.get(f"{t.logical_id}Parameter") or {}
        path = template.resolve({"Fn::Sub": f"${{{PARAMETER_PATH}}}/{t.parameter}"})
        param_props = parameter.get("Properties") or {}
        if (
            parameter.get("Type") != "AWS::SSM::Parameter"
            or param_props.get("Value") != {"Ref": t.logical_id}
            or template.resolve(param_props.get("Name")) != path
        ):
            problems.append(
                f"{t.logical_id}Parameter: an SSM parameter {path} = !Ref {t.logical_id}"
            )
        output = (template.data.get("Outputs") or {}).get(f"{t.logical_id}Arn") or {}
        if output.get("Value") != {"Ref": t.logical_id}:
            problems.append(f"Outputs.{t.logical_id}Arn: must be !Ref {t.logical_id}")
    return problems


def function_rules(path: Path) -> list[str]:
    """Under every allowed PythonRuntime, each function runs it with the layer built for it."""
    problems: list[str] = []
    allowed = (Template.load(path).parameters.get("PythonRuntime") or {}).get("AllowedValues")
    if allowed != [r.name for r in RUNTIMES]:
        problems.append(f"PythonRuntime: AllowedValues must be {[r.name for r in RUNTIMES]}")
    for runtime in allowed or []:
        template = Template.load(path, {"PythonRuntime": runtime})
        for function_id in template.function_ids():
            fn = template.function(function_id)
            if fn.runtime != runtime:
                problems.append(f"{function_id}: Runtime {fn.runtime} with PythonRuntime={runtime}")
            layer = next(
                (
                    t.logical_id
                    for t in TARGETS
                    if (t.runtime.name, t.arch.name) == (runtime, fn.architecture)
                ),
                None,
            )
            if fn.layers != [layer]:
                problems.append(
                    f"{function_id}: with PythonRuntime={runtime} uses {fn.layers}, not {[layer]}"
                )
    return problems


def sar_rules(template: Template) -> list[str]:
    """``AWS::ServerlessRepo::Application`` as ``sam publish`` requires it."""
    app = (template.data.get("Metadata") or {}).get("AWS::ServerlessRepo::Application")
    if not isinstance(app, dict):
        return ["Metadata: no AWS::ServerlessRepo::Application (sam publish needs it)"]
    problems = [f"SAR metadata: {key} is required" for key in _SAR_REQUIRED if not app.get(key)]
    if not re.fullmatch(r"[a-z0-9](?:[a-z0-9]|-(?!-))*[a-z0-9]", str(app.get("Author", ""))):
        problems.append("SAR metadata: Author must be lowercase letters, digits and single hyphens")
    if len(str(app.get("Description", ""))) > 256:
        problems.append("SAR metadata: Description is longer than 256 characters")
    labels = app.get("Labels") or []
    if len(labels) > 10 or not all(re.fullmatch(r"[a-zA-Z0-9+\-_:/@]{1,127}", x) for x in labels):
        problems.append("SAR metadata: at most 10 Labels of [a-zA-Z0-9+-_:/@]")
    if str(app.get("SemanticVersion")) != iamdb.__version__:
        problems.append(f"SAR metadata: SemanticVersion must be iamdb's {iamdb.__version__}")
    for key in ("ReadmeUrl", "LicenseUrl"):
        if key in app and not (template.root / str(app[key])).is_file():
            problems.append(f"SAR metadata: {key} {app[key]} is not a file next to the template")
    return problems


def iamdb_rules(template: Template, samconfig: Path | None) -> list[str]:
    """Rules specific to this project's template."""
    problems = layer_rules(template) + function_rules(template.path) + sar_rules(template)
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
