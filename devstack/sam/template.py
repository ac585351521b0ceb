"""Read a SAM ``template.yaml`` (and ``samconfig.toml``) the way ``sam local`` does, without Docker.

Enough of CloudFormation to run the functions locally: short-form tags (``!Ref``, ``!Sub``, ...),
``Parameters`` with defaults and ``parameter_overrides``, pseudo parameters, ``Conditions``,
``Globals.Function`` merged into each function, and the intrinsics ``Ref``, ``Fn::Sub``,
``Fn::GetAtt``, ``Fn::Join``, ``Fn::If``, ``Fn::Select``, ``Fn::Split``, ``Fn::Equals``,
``Fn::Not``, ``Fn::And``, ``Fn::Or``. Resources that would only exist once deployed resolve to
plausible local names and ARNs (``arn:aws:lambda:us-east-1:123456789012:layer:...``).
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (tomli is tomllib's original)
    import tomli as tomllib

REGION = "us-east-1"
ACCOUNT = "123456789012"
PARTITION = "aws"
STACK_NAME = "iamdb"

FUNCTION_DEFAULTS: dict[str, Any] = {"MemorySize": 128, "Timeout": 3, "Architectures": ["x86_64"]}


class TemplateError(Exception):
    """The template or samconfig cannot be read or resolved (message says where)."""


class _NoValue:
    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = _NoValue()


# -- YAML with CloudFormation's short tags ------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader turning ``!Ref x`` into ``{"Ref": x}``, ``!Sub s`` into ``{"Fn::Sub": s}``."""


def _tag(loader: _CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        # the composer makes only these three kinds: this node is a MappingNode
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        value = [resource, attribute]
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _tag)


def load_yaml(path: Path) -> dict[str, Any]:
    """Parse a CloudFormation/SAM YAML file (short tags included)."""
    try:
        data = yaml.load(path.read_text(), Loader=_CfnLoader)
    except (OSError, yaml.YAMLError) as exc:
        raise TemplateError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("Resources"), dict):
        raise TemplateError(f"{path}: not a template (no Resources mapping)")
    return data


# -- samconfig.toml -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SamConfig:
    """One command's section of samconfig.toml (``[<env>.<command>.parameters]``)."""

    parameter_overrides: dict[str, str] = field(default_factory=dict)
    env_vars: str | None = None
    values: dict[str, Any] = field(default_factory=dict)


def parse_overrides(value: str | list[str] | None) -> dict[str, str]:
    """``Key=Value Key2="a b"`` (or a list of ``Key=Value``) as a dict, like ``sam`` parses it."""
    if value is None:
        return {}
    items = shlex.split(value) if isinstance(value, str) else list(value)
    parsed: dict[str, str] = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise TemplateError(f"parameter override {item!r:.80} is not Key=Value")
        if key.startswith("ParameterKey="):  # sam's long form is rare; not supported
            raise TemplateError("use Key=Value parameter overrides")
        parsed[key] = val
    return parsed


def load_samconfig(path: Path, command: str, env: str = "default") -> SamConfig:
    """The ``parameters`` of ``command`` (``deploy``, ``local_invoke``) over ``global``'s."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TemplateError(f"cannot read {path}: {exc}") from None
    section = data.get(env, {})
    values: dict[str, Any] = {
        **section.get("global", {}).get("parameters", {}),
        **section.get(command, {}).get("parameters", {}),
    }
    env_vars = values.get("env_vars")
    return SamConfig(
        parse_overrides(values.get("parameter_overrides")),
        str(env_vars) if env_vars else None,
        values,
    )


# -- the template -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionSpec:
    """What it takes to run one ``AWS::Serverless::Function`` locally."""

    logical_id: str
    function_name: str
    handler: str
    runtime: str
    code_uri: Path
    layers: list[str]  # logical ids of layers defined in the template
    external_layers: list[str]  # ARNs of layers from elsewhere (cannot run locally)
    environment: dict[str, str]
    memory_mb: int
    timeout_s: int
    architecture: str
    policy_statements: list[dict[str, Any]]
    tracing: bool = False  # Tracing: Active (X-Ray)
    snapstart: bool = False  # SnapStart: ApplyOn: PublishedVersions

    @property
    def arn(self) -> str:
        return f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"


class Template:
    """A parsed template with parameter values fixed (defaults, then overrides)."""

    def __init__(
        self,
        data: dict[str, Any],
        path: Path,
        overrides: Mapping[str, str] | None = None,
        *,
        stack_name: str = STACK_NAME,
    ) -> None:
        self.data = data
        self.path = path
        self.root = path.resolve().parent
        self.parameters: dict[str, dict[str, Any]] = data.get("Parameters") or {}
        self.resources: dict[str, dict[str, Any]] = data["Resources"]
        self.stack_name = stack_name
        self._overrides = dict(overrides or {})
        unknown = sorted(set(self._overrides) - set(self.parameters))
        if unknown:
            raise TemplateError(f"parameter overrides name no template parameter: {unknown}")
        self._values = {name: self._parameter(name) for name in self.parameters}
        self._conditions: dict[str, bool] = {}

    @classmethod
    def load(
        cls, path: Path, overrides: Mapping[str, str] | None = None, **kwargs: Any
    ) -> Template:
        return cls(load_yaml(path), path, overrides, **kwargs)

    # -- parameters and conditions -------------------------------------------------------------

    def _parameter(self, name: str) -> Any:
        spec = self.parameters[name] or {}
        if name in self._overrides:
            raw = self._overrides[name]
        elif "Default" in spec:
            raw = spec["Default"]
        else:
            raise TemplateError(f"parameter {name} has no Default and no override")
        text = str(raw)
        allowed = spec.get("AllowedValues")
        if allowed is not None and text not in [str(a) for a in allowed]:
            raise TemplateError(f"parameter {name}={text!r:.80} is not one of {allowed}")
        pattern = spec.get("AllowedPattern")
        if pattern is not None and not re.fullmatch(str(pattern), text):
            raise TemplateError(f"parameter {name}={text!r:.80} does not match {pattern}")
        if str(spec.get("Type", "String")).startswith(("CommaDelimitedList", "List<")):
            return [part.strip() for part in text.split(",")]
        return text

    def parameter_value(self, name: str) -> Any:
        if name not in self._values:
            raise TemplateError(f"no parameter {name}")
        return self._values[name]

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            spec = (self.data.get("Conditions") or {}).get(name)
            if spec is None:
                raise TemplateError(f"no condition {name}")
            self._conditions[name] = bool(self.resolve(spec))
        return self._conditions[name]

    # -- intrinsic functions -------------------------------------------------------------------

    def resolve(self, value: Any) -> Any:
        """``value`` with every intrinsic function evaluated (``AWS::NoValue`` entries dropped)."""
        if isinstance(value, list):
            items = [self.resolve(v) for v in value]
            return [v for v in items if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            handler = _INTRINSICS.get(key)
            if handler is not None:
                return handler(self, arg)
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": PARTITION,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": f"arn:{PARTITION}:cloudformation:{REGION}:{ACCOUNT}:stack/"
            f"{self.stack_name}/00000000-0000-0000-0000-000000000000",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NotificationARNs": [],
            "AWS::NoValue": NO_VALUE,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self._values:
            return self._values[name]
        if name in self.resources:
            return self._resource_ref(name)
        raise TemplateError(f"!Ref {name}: no such parameter or resource")

    def get_att(self, resource: str, attribute: str) -> str:
        if resource not in self.resources:
            raise TemplateError(f"!GetAtt {resource}.{attribute}: no such resource")
        kind = self.resources[resource].get("Type", "")
        if attribute != "Arn":
            return f"{resource}.{attribute}"
        name = self._resource_ref(resource)
        if kind == "AWS::DynamoDB::Table":
            return f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
        if kind in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            return f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{name}"
        if kind == "AWS::IAM::Role":
            return f"arn:{PARTITION}:iam::{ACCOUNT}:role/{name}"
        return f"arn:{PARTITION}:local:{REGION}:{ACCOUNT}:{resource}"

    def _resource_ref(self, logical_id: str) -> str:
        resource = self.resources[logical_id]
        kind = resource.get("Type", "")
        props = resource.get("Properties") or {}
        if kind == "AWS::DynamoDB::Table":
            return str(self.resolve(props.get("TableName", logical_id)))
        if kind in ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion"):
            name = self.resolve(props.get("LayerName", logical_id))
            return f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:layer:{name}:1"
        if kind in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            return str(self.resolve(props.get("FunctionName", f"{self.stack_name}-{logical_id}")))
        return logical_id

    def sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            if len(arg) != 2 or not isinstance(arg[1], dict):
                raise TemplateError("!Sub takes a string or [string, {variables}]")
            text, variables = arg[0], {k: self.resolve(v) for k, v in arg[1].items()}
        else:
            text, variables = arg, {}
        if not isinstance(text, str):
            raise TemplateError("!Sub needs a string")

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and name.split(".", 1)[0] in self.resources:
                resource, attribute = name.split(".", 1)
                return self.get_att(resource, attribute)
            value = self.ref(name)
            if isinstance(value, list):
                raise TemplateError(f"!Sub ${{{name}}}: a list cannot be substituted")
            return str(value)

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    # -- resources -----------------------------------------------------------------------------

    def resource(self, logical_id: str) -> dict[str, Any]:
        if logical_id not in self.resources:
            raise TemplateError(f"no resource {logical_id} in {self.path.name}")
        return self.resources[logical_id]

    def function_ids(self) -> list[str]:
        return [
            rid for rid, r in self.resources.items() if r.get("Type") == "AWS::Serverless::Function"
        ]

    def function_properties(self, logical_id: str) -> dict[str, Any]:
        """The function's properties with ``Globals.Function`` merged in, unresolved."""
        resource = self.resource(logical_id)
        if resource.get("Type") != "AWS::Serverless::Function":
            raise TemplateError(f"{logical_id} is a {resource.get('Type')}, not a function")
        globals_ = (self.data.get("Globals") or {}).get("Function") or {}
        return _merge(_merge(FUNCTION_DEFAULTS, globals_), resource.get("Properties") or {})

    def function(self, logical_id: str) -> FunctionSpec:
        """Everything needed to run ``logical_id`` locally, resolved."""
        raw = self.function_properties(logical_id)
        props = self.resolve(raw)
        for required in ("Handler", "Runtime", "CodeUri"):
            if not isinstance(props.get(required), str):
                raise TemplateError(f"{logical_id}: {required} must be set (a string)")
        layers, external = self._layers(logical_id, raw.get("Layers") or [])
        variables = (props.get("Environment") or {}).get("Variables") or {}
        architectures = props.get("Architectures") or ["x86_64"]
        return FunctionSpec(
            logical_id=logical_id,
            function_name=str(props.get("FunctionName") or f"{self.stack_name}-{logical_id}"),
            handler=props["Handler"],
            runtime=props["Runtime"],
            code_uri=(self.root / props["CodeUri"]).resolve(),
            layers=layers,
            external_layers=external,
            environment={k: _env_text(v) for k, v in variables.items()},
            memory_mb=int(props["MemorySize"]),
            timeout_s=int(props["Timeout"]),
            architecture=str(architectures[0]),
            policy_statements=_statements(props.get("Policies")),
            tracing=props.get("Tracing") == "Active",
            snapstart=(props.get("SnapStart") or {}).get("ApplyOn") == "PublishedVersions",
        )

    def _layers(self, logical_id: str, raw: list[Any]) -> tuple[list[str], list[str]]:
        local: list[str] = []
        external: list[str] = []
        for entry in map(self._chosen, raw):
            if isinstance(entry, dict) and set(entry) == {"Ref"} and entry["Ref"] in self.resources:
                kind = self.resources[entry["Ref"]].get("Type")
                if kind not in ("AWS::Serverless::LayerVersion", "AWS::Lambda::LayerVersion"):
                    raise TemplateError(f"{logical_id}: Layers: {entry['Ref']} is a {kind}")
                local.append(entry["Ref"])
            else:
                external.append(str(self.resolve(entry)))
        return local, external

    def _chosen(self, entry: Any) -> Any:
        """``entry`` with its ``Fn::If`` decided (a layer picked by runtime stays a ``Ref``)."""
        while isinstance(entry, dict) and set(entry) == {"Fn::If"}:
            name, when_true, when_false = entry["Fn::If"]
            entry = when_true if self.condition(name) else when_false
        return entry

    def layer_name(self, logical_id: str) -> str:
        """The layer's ``LayerName`` (``make layer`` builds it into ``build/layers/<name>``)."""
        props = self.resource(logical_id).get("Properties") or {}
        return str(self.resolve(props.get("LayerName", logical_id)))

    def layer_content(self, logical_id: str) -> Path:
        """The layer's ``ContentUri`` directory (its source, before the build)."""
        props = self.resource(logical_id).get("Properties") or {}
        return (self.root / str(self.resolve(props.get("ContentUri", ".")))).resolve()


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        raise TemplateError(f"environment value {value!r:.80} is not a scalar")
    return str(value)


def _statements(policies: Any) -> list[dict[str, Any]]:
    """Inline policy statements of a function's ``Policies`` (managed/SAM templates skipped)."""
    if isinstance(policies, dict):
        policies = [policies]
    found: list[dict[str, Any]] = []
    for policy in policies or []:
        if isinstance(policy, dict) and "Statement" in policy:
            statements = policy["Statement"]
            found.extend(statements if isinstance(statements, list) else [statements])
    return found


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """SAM's Globals rules: maps merge key by key, lists concatenate, scalars are replaced."""
    merged = dict(base)
    for key, value in override.items():
        if key in merged and isinstance(merged[key], dict) and isinstance(value, dict):
            if _is_intrinsic(merged[key]) or _is_intrinsic(value):
                merged[key] = value
            else:
                merged[key] = _merge(merged[key], value)
        elif key in merged and isinstance(merged[key], list) and isinstance(value, list):
            merged[key] = value if key == "Architectures" else [*merged[key], *value]
        else:
            merged[key] = value
    return merged


def _is_intrinsic(value: dict[str, Any]) -> bool:
    return len(value) == 1 and next(iter(value)) in _INTRINSICS


def _join(t: Template, arg: Any) -> str:
    sep, items = arg
    values = t.resolve(items)
    if not isinstance(values, list):
        raise TemplateError("!Join needs a list")
    return str(sep).join(str(v) for v in values)


def _if(t: Template, arg: Any) -> Any:
    name, when_true, when_false = arg
    return t.resolve(when_true if t.condition(name) else when_false)


def _select(t: Template, arg: Any) -> Any:
    index, items = arg
    values = t.resolve(items)
    return values[int(t.resolve(index))]


def _split(t: Template, arg: Any) -> list[str]:
    sep, text = arg
    return str(t.resolve(text)).split(str(sep))


def _get_att(t: Template, arg: Any) -> str:
    resource, attribute = arg if isinstance(arg, list) else str(arg).split(".", 1)
    return t.get_att(str(resource), str(attribute))


_INTRINSICS: dict[str, Any] = {
    "Ref": lambda t, arg: t.ref(str(arg)),
    "Condition": lambda t, arg: t.condition(str(arg)),
    "Fn::Sub": lambda t, arg: t.sub(arg),
    "Fn::GetAtt": _get_att,
    "Fn::Join": _join,
    "Fn::If": _if,
    "Fn::Select": _select,
    "Fn::Split": _split,
    "Fn::Equals": lambda t, arg: t.resolve(arg[0]) == t.resolve(arg[1]),
    "Fn::Not": lambda t, arg: not t.resolve(arg[0]),
    "Fn::And": lambda t, arg: all(t.resolve(a) for a in arg),
    "Fn::Or": lambda t, arg: any(t.resolve(a) for a in arg),
}


# -- what the template's policies allow (devstack enforces rds-db:connect with this) -------------


def dbuser_arn(dbi_resource_id: str, user: str, region: str = REGION) -> str:
    """The resource an ``rds-db:connect`` statement must allow for ``user`` on that instance."""
    return f"arn:{PARTITION}:rds-db:{region}:{ACCOUNT}:dbuser:{dbi_resource_id}/{user}"


def iam_match(pattern: str, value: str, *, ignore_case: bool) -> bool:
    """IAM wildcard matching: ``*`` any run of characters, ``?`` one character."""
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


def _as_list(value: Any) -> list[str]:
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def policy_allows(statements: list[dict[str, Any]], action: str, resource: str) -> bool:
    """Whether identity-policy ``statements`` allow ``action`` on ``resource`` (explicit Deny
    wins; ``NotAction``/``NotResource``/``Condition`` are treated as not matching)."""
    allowed = False
    for statement in statements:
        if any(k in statement for k in ("NotAction", "NotResource", "Condition")):
            continue
        actions = _as_list(statement.get("Action", []))
        resources = _as_list(statement.get("Resource", []))
        if not any(iam_match(a, action, ignore_case=True) for a in actions):
            continue
        if not any(iam_match(r, resource, ignore_case=False) for r in resources):
            continue
        if statement.get("Effect") == "Deny":
            return False
        allowed = allowed or statement.get("Effect") == "Allow"
    return allowed


def function_statements(template: Template) -> dict[str, list[dict[str, Any]]]:
    """Each function's inline policy statements, resolved with the template's parameter values."""
    return {fid: template.function(fid).policy_statements for fid in template.function_ids()}
