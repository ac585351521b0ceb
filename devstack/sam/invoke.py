"""``python -m devstack invoke``: run a template's function like Lambda does, without Docker.

The function's handler runs in a child process laid out like a Lambda environment: the
function's code first on ``sys.path``, then each built layer's
``python/lib/pythonX.Y/site-packages`` and ``python/`` (``/opt/python/...`` on Lambda), then the
runtime's own packages (``awslambdaric`` and boto3, installed for that runtime's interpreter:
``/var/runtime`` on Lambda), and nothing else (``python -S``: no site-packages of the machine,
never the repository's venv). ``--runtime python3.13`` runs it under that Lambda runtime: the
template's ``PythonRuntime`` parameter picks the function's ``Runtime`` and the layer built for
it, and the handler runs with python3.13. ``awslambdaric``, the runtime client of Lambda's
Python images, drives the handler against :mod:`devstack.sam.runtime_api`, so the handler gets
a real context (function name, memory, ARN, request id, deadline). The child's environment is
Lambda's reserved variables plus the template's ``Environment`` overridden by ``--env-vars`` (as
``sam local invoke`` does), never the caller's whole environment. A function with ``SnapStart:
ApplyOn: PublishedVersions`` gets no ``AWS_ACCESS_KEY_ID``: as on Lambda, its credentials come
from a container credentials endpoint (:mod:`devstack.sam.container_credentials`).

``--repeat N`` sends N events to the same warm process, as Lambda reuses an environment. A
handler that raises, or runs past the function's ``Timeout`` (the process is then killed and
the next event gets a fresh one), makes the command exit 1; a handler that cannot be imported
is reported at once with the runtime's message. Responses go to stdout, one JSON line each; the
function's own output and ``REPORT`` lines go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from devstack.sam.container_credentials import CredentialsServer, serve_instead_of_keys
from devstack.sam.runtime_api import Invocation, RuntimeApi
from devstack.sam.template import FunctionSpec, Template, TemplateError, load_samconfig, load_yaml
from devstack.sam.xray import XRayDaemon
from layerbuild.targets import TARGETS, find_python, version_of
from layerbuild.targets import runtime as lambda_runtime

REPO = Path(__file__).resolve().parents[2]
INIT_TIMEOUT_S = 10.0  # Lambda's limit for the init phase
RUNTIME_PARAMETER = "PythonRuntime"  # the template parameter choosing runtime and layer
# The runtime's own packages, as on Lambda's python images (/var/runtime), installed for each
# runtime's interpreter apart from the repository's venv. AWS updates a runtime's boto3 in place;
# one pin for all runtimes keeps local runs reproducible.
RUNTIME_PACKAGES = ("awslambdaric==4.2.2", "boto3==1.44.8", "botocore==1.44.8")
# From --env-vars, these reach the function even when the template does not declare them:
# Lambda sets the credentials and region itself; the endpoints point boto3 at devstack.
_PASSED_THROUGH = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)
_MACHINE_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}


class InvokeError(Exception):
    """Set-up problem (bad template, missing layer or Python): nothing was invoked."""


@dataclass(frozen=True)
class Result:
    """What one invocation returned."""

    request_id: str
    ok: bool
    payload: Any  # the handler's response (parsed JSON), or Lambda's error document
    duration_ms: float
    init_ms: float | None  # set on the invocation that started the environment (cold)
    timed_out: bool = False


# -- interpreters, runtime packages, layers ---------------------------------------------------


def runtime_paths(python: str, version: str, cache: Path) -> list[str]:
    """Where ``python`` finds awslambdaric and boto3 (Lambda's ``/var/runtime``): a directory of
    that runtime's own under ``cache``, filled once with ``pip install --target`` by ``python``
    itself, never the repository's virtual environment (whose boto3 a function must not see)."""
    return [str(pip_target(python, list(RUNTIME_PACKAGES), cache / f"python{version}"))]


def function_paths(spec: FunctionSpec, python: str, cache: Path) -> list[str]:
    """The function's own dependencies (``requirements.txt`` beside its code), as sam build
    installs them into the function's artifact; none when it has no requirements file."""
    requirements = spec.code_uri / "requirements.txt"
    if not requirements.exists():
        return []
    target = cache / spec.runtime / spec.logical_id  # wheels differ per Python version
    return [str(pip_target(python, ["-r", str(requirements)], target))]


def pip_target(python: str, args: list[str], target: Path) -> Path:
    """``target`` filled once with ``pip install --target`` (again when ``args`` change)."""
    stamp = target / ".installed"
    wanted = "\n".join(args + [Path(a).read_text() for a in args if a.endswith(".txt")])
    if not stamp.exists() or stamp.read_text() != wanted:
        shutil.rmtree(target, ignore_errors=True)
        print(f"invoke: installing {' '.join(args)} for {python}", file=sys.stderr)
        result = subprocess.run(
            [
                python,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--target",
                str(target),
                "--only-binary=:all:",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            raise InvokeError(f"cannot install {' '.join(args)} for {python}:\n{result.stderr}")
        stamp.write_text(wanted)
    return target


def build_layers(out: Path | None = None) -> dict[str, Path]:
    """Build (or keep, when up to date) every layer with ``layer/Makefile``; name -> its dir
    (``iamdb-python313-x86_64`` -> ``build/layers/iamdb-python313-x86_64``, holding python/)."""
    out = out or REPO / "build"
    result = subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(REPO / "layer"),
            "layer",
            f"PYTHON={sys.executable}",
            f"OUT={out}",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if result.returncode != 0:
        raise InvokeError(f"layer build failed:\n{result.stderr[-4000:]}")
    return {t.name: out / "layers" / t.name for t in TARGETS}


def layer_dir(logical_id: str, overrides: Mapping[str, Path], template: Template) -> Path:
    """The built layer's ``python/``: ``--layer-dir``, else make layer's, else sam build's."""
    candidates = [overrides[logical_id]] if logical_id in overrides else []
    candidates += [
        REPO / "build" / "layers" / template.layer_name(logical_id),
        template.root / ".aws-sam" / "build" / logical_id,
    ]
    for candidate in candidates:
        python = candidate / "python"
        if python.is_dir():
            _warn_if_stale(candidate, template.layer_content(logical_id))
            return python
    raise InvokeError(
        f"layer {logical_id} is not built (looked in {', '.join(map(str, candidates))}): "
        "run `make layer` (or `sam build`)"
    )


def _warn_if_stale(built: Path, source: Path) -> None:
    stamp = built / ".built"
    if not stamp.exists() or not source.is_dir():
        return
    built_at = stamp.stat().st_mtime
    newer = [p for p in source.rglob("*.py") if p.stat().st_mtime > built_at]
    if newer:
        print(
            f"invoke: warning: {built} is older than {newer[0]}: run `make layer`",
            file=sys.stderr,
        )


# -- environment --------------------------------------------------------------------------------


def read_env_vars(path: Path | None, logical_id: str) -> dict[str, str]:
    """``sam local invoke --env-vars`` format: ``{"Parameters": {...}, "<LogicalId>": {...}}``."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvokeError(f"cannot read --env-vars {path}: {exc}") from None
    if not isinstance(data, dict):
        raise InvokeError(f"--env-vars {path}: expected a JSON object")
    merged: dict[str, str] = {}
    for section in ("Parameters", logical_id):
        values = data.get(section) or {}
        if not isinstance(values, dict):
            raise InvokeError(f"--env-vars {path}: {section} must be an object")
        merged.update({str(k): str(v) for k, v in values.items()})
    return merged


def function_environment(
    spec: FunctionSpec,
    overrides: Mapping[str, str],
    *,
    code_dir: Path,
    python_path: Sequence[str],
    runtime_api: str,
    caller_env: Mapping[str, str],
) -> dict[str, str]:
    """The child's whole environment: Lambda's reserved variables + the function's own."""
    env = dict(spec.environment)
    for name in env:  # as sam local: the file overrides the template's variables
        if name in overrides:
            env[name] = overrides[name]
    for name, value in overrides.items():
        if name in _PASSED_THROUGH or name.startswith("AWS_ENDPOINT_URL"):
            env[name] = value
    for name in _PASSED_THROUGH:  # as sam local: else the caller's credentials
        if name not in env and caller_env.get(name):
            env[name] = caller_env[name]
    env.setdefault("AWS_REGION", env.get("AWS_DEFAULT_REGION", "us-east-1"))
    env.setdefault("AWS_DEFAULT_REGION", env["AWS_REGION"])
    env.update(
        {
            "PATH": caller_env.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "PYTHONPATH": os.pathsep.join([str(code_dir), *python_path]),
            "PYTHONUNBUFFERED": "1",
            "LAMBDA_TASK_ROOT": str(code_dir),
            "LAMBDA_RUNTIME_DIR": python_path[-1] if python_path else "",
            "_HANDLER": spec.handler,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime}",
            "AWS_LAMBDA_RUNTIME_API": runtime_api,
            "AWS_LAMBDA_FUNCTION_NAME": spec.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.function_name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": time.strftime("%Y/%m/%d/[$LATEST]")
            + os.urandom(16).hex(),
            "LAMBDA_DISABLE_PREVIEW_WARN": "1",
        }
    )
    return env


# -- the environment process ---------------------------------------------------------------------


class Environment:
    """One warm Lambda environment: a child process running awslambdaric, and its Runtime API."""

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        python: str,
        python_path: Sequence[str],
        env_overrides: Mapping[str, str],
        log: IO[str] | None = None,
        init_timeout_s: float = INIT_TIMEOUT_S,
    ) -> None:
        self.spec = spec
        self._python = python
        self._python_path = list(python_path)
        self._overrides = dict(env_overrides)
        self._log = log or sys.stderr
        self._init_timeout_s = init_timeout_s
        self._api: RuntimeApi | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pump: threading.Thread | None = None
        self._output_tail: list[str] = []
        self._credentials: CredentialsServer | None = None  # SnapStart: the role's credentials
        # Tracing: Active: the function's X-Ray SDK sends its segments here (kept across restarts)
        self.xray = XRayDaemon() if spec.tracing else None

    def invoke(self, event: bytes) -> Result:
        """Send one event; start the process first when there is none (a cold start)."""
        init_ms = None
        if self._proc is None or self._proc.poll() is not None:
            init_ms = self._start()
        assert self._api is not None
        inv = self._api.submit(event, timeout_s=self.spec.timeout_s, function_arn=self.spec.arn)
        return self._wait(inv, init_ms)

    def close(self) -> None:
        """Stop the process, the Runtime API and the X-Ray daemon (its documents stay readable)."""
        self._stop()
        if self.xray is not None:
            self.xray.close()

    def _stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and the Runtime API."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._pump is not None:
            self._pump.join(timeout=2)
        if self._api is not None:
            self._api.stop()
            self._api = None
        if self._credentials is not None:
            self._credentials.stop()
            self._credentials = None

    def __enter__(self) -> Environment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> float:
        self._stop()
        self._api = RuntimeApi(sampled=self.spec.tracing)
        self._api.start()
        code_dir = self.spec.code_uri
        env = function_environment(
            self.spec,
            self._overrides,
            code_dir=code_dir,
            python_path=self._python_path,
            runtime_api=self._api.address,
            caller_env=os.environ,
        )
        if self.xray is not None:  # Lambda's reserved variables of a traced function
            env["AWS_XRAY_DAEMON_ADDRESS"] = self.xray.address
            env["AWS_XRAY_CONTEXT_MISSING"] = "LOG_ERROR"
        if self.spec.snapstart:  # Lambda serves a SnapStart function's keys over HTTP
            settings = {**os.environ, **self._overrides}
            self._credentials = serve_instead_of_keys(env, settings, self.spec.function_name)
            env["AWS_LAMBDA_INITIALIZATION_TYPE"] = "snap-start"
        started = time.monotonic()
        self._output_tail = []
        self._proc = subprocess.Popen(
            [self._python, "-S", "-m", "awslambdaric", self.spec.handler],
            cwd=code_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._pump = threading.Thread(target=self._copy_output, args=(self._proc,), daemon=True)
        self._pump.start()
        deadline = started + self._init_timeout_s
        while not self._api.polled.wait(0.01):
            if self._api.init_error_event.is_set() or self._proc.poll() is not None:
                break
            if time.monotonic() > deadline:
                self._stop()
                raise _init_failure(
                    "Runtime.InitTimeout",
                    f"init did not finish within {self._init_timeout_s:g} s",
                )
        if not self._api.polled.is_set():
            error = self._init_error()
            self._stop()
            raise _init_failure(str(error["errorType"]), str(error["errorMessage"]))
        return (time.monotonic() - started) * 1000

    def _init_error(self) -> dict[str, Any]:
        assert self._api is not None and self._proc is not None
        self._api.init_error_event.wait(0.5)
        if self._api.init_error is not None:
            return self._api.init_error
        try:
            code = self._proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        if self._pump is not None:
            self._pump.join(timeout=2)
        tail = "".join(self._output_tail[-20:]).strip()
        return {
            "errorType": "Runtime.ExitError",
            "errorMessage": f"the runtime process exited (status {code}) before init "
            f"finished: {tail[-2000:] or 'no output'}",
        }

    def _wait(self, inv: Invocation, init_ms: float | None) -> Result:
        assert self._proc is not None
        submitted = time.monotonic()
        limit = self.spec.timeout_s + 1.0  # pickup is immediate for a warm process
        while not inv.done.wait(0.01):
            if self._proc.poll() is not None:
                self._stop()
                return self._failed(inv, init_ms, "Runtime.ExitError", "the runtime exited")
            started = inv.started or submitted
            if time.monotonic() - started > (self.spec.timeout_s if inv.started else limit):
                self._stop()  # Lambda discards an environment whose invocation timed out
                message = f"Task timed out after {self.spec.timeout_s:.2f} seconds"
                return self._failed(inv, init_ms, "Sandbox.Timedout", message, timed_out=True)
        duration = ((inv.finished or time.monotonic()) - (inv.started or submitted)) * 1000
        try:
            payload = json.loads(inv.body) if inv.body else None
        except ValueError:
            payload = inv.body.decode(errors="replace")
        ok = inv.outcome == "response"
        print(
            f"REPORT RequestId: {inv.request_id}\tDuration: {duration:.2f} ms\t"
            f"Memory Size: {self.spec.memory_mb} MB"
            + (f"\tInit Duration: {init_ms:.2f} ms" if init_ms is not None else ""),
            file=self._log,
            flush=True,
        )
        return Result(inv.request_id, ok, payload, duration, init_ms)

    def _failed(
        self,
        inv: Invocation,
        init_ms: float | None,
        error_type: str,
        message: str,
        *,
        timed_out: bool = False,
    ) -> Result:
        duration = (time.monotonic() - (inv.started or time.monotonic())) * 1000
        print(f"{inv.request_id} {error_type}: {message}", file=self._log, flush=True)
        payload = {"errorType": error_type, "errorMessage": message}
        return Result(inv.request_id, False, payload, duration, init_ms, timed_out)

    def _copy_output(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace")
            self._output_tail = [*self._output_tail[-50:], line]
            self._log.write(line)
            self._log.flush()


class InitFailed(InvokeError):
    """The handler's environment could not start (import error, init timeout, crash)."""

    def __init__(self, error: dict[str, str]) -> None:
        super().__init__(f"{error['errorType']}: {error['errorMessage']}")
        self.error = error


def _init_failure(error_type: str, message: str) -> InitFailed:
    return InitFailed({"errorType": error_type, "errorMessage": message})


# -- putting it together ------------------------------------------------------------------------


@dataclass
class Prepared:
    spec: FunctionSpec
    python: str
    python_path: list[str]
    env_overrides: dict[str, str]


def prepare(
    logical_id: str,
    *,
    template_path: Path = REPO / "template.yaml",
    samconfig_path: Path | None = REPO / "samconfig.toml",
    env_vars: Path | None = None,
    parameter_overrides: Mapping[str, str] | None = None,
    layer_dirs: Mapping[str, Path] | None = None,
    python: str | None = None,
    runtime: str | None = None,
) -> Prepared:
    """Resolve everything an invocation needs (raises :class:`InvokeError`, nothing started).

    ``runtime`` (``python3.13``) runs the function under that Lambda runtime: the template's
    ``PythonRuntime`` parameter picks the function's ``Runtime`` and its layer, and the handler
    runs with that version's interpreter and runtime packages.
    """
    overrides: dict[str, str] = {}
    if samconfig_path is not None and samconfig_path.exists():
        config = load_samconfig(samconfig_path, "local_invoke")
        overrides.update(config.parameter_overrides)
        if env_vars is None and config.env_vars:
            env_vars = (samconfig_path.parent / config.env_vars).resolve()
    overrides.update(parameter_overrides or {})
    try:
        data = load_yaml(template_path)
        if runtime is not None:
            runtime = lambda_runtime(runtime).name
            if RUNTIME_PARAMETER in (data.get("Parameters") or {}):
                overrides[RUNTIME_PARAMETER] = runtime
        template = Template(data, template_path, overrides)
        spec = template.function(logical_id)
    except (TemplateError, ValueError) as exc:
        raise InvokeError(str(exc)) from None
    if not spec.runtime.startswith("python3."):
        raise InvokeError(f"{logical_id}: runtime {spec.runtime} is not a Python runtime")
    if runtime is not None and spec.runtime != runtime:
        raise InvokeError(
            f"{logical_id}: its Runtime is {spec.runtime}, not {runtime}: --runtime sets the "
            f"template's {RUNTIME_PARAMETER} parameter, which this function does not use"
        )
    if spec.external_layers:
        raise InvokeError(f"{logical_id}: layers from outside the template: {spec.external_layers}")
    machine = _MACHINE_ARCH.get(platform.machine().lower(), platform.machine())
    if spec.architecture != machine:
        raise InvokeError(f"{logical_id} is {spec.architecture}; this machine is {machine}")
    if not (spec.code_uri / (spec.handler.rsplit(".", 1)[0].replace(".", "/") + ".py")).exists():
        print(
            f"invoke: warning: no module for handler {spec.handler} in {spec.code_uri}",
            file=sys.stderr,
        )
    version = spec.runtime.removeprefix("python")
    chosen = python or find_python(version)
    if chosen is None:
        raise InvokeError(
            f"{spec.runtime} is not installed (the layer's wheels are built for it): "
            f"install it (e.g. `pyenv install {version}`) or pass --python"
        )
    if python is not None:
        found = version_of(python)
        if found is None:
            raise InvokeError(f"cannot run {python} (--python)")
        version = found
        if f"python{version}" != spec.runtime:
            print(
                f"invoke: warning: running {spec.runtime} code with python{version}",
                file=sys.stderr,
            )
    layers = [layer_dir(lid, dict(layer_dirs or {}), template) for lid in spec.layers]
    paths = [
        *function_paths(spec, chosen, REPO / "build" / "functions"),
        *lambda_layer_paths(layers, version),
        *runtime_paths(chosen, version, REPO / "build" / "runtime"),
    ]
    if env_vars is not None and not env_vars.exists():
        raise InvokeError(f"--env-vars file {env_vars} does not exist (is devstack up?)")
    return Prepared(spec, chosen, paths, read_env_vars(env_vars, logical_id))


def lambda_layer_paths(layers: Sequence[Path], version: str) -> list[str]:
    """Lambda's ``sys.path`` entries for layers (each a ``python/`` dir, ``/opt/python`` on
    Lambda, where all layers are merged): ``/opt/python/lib/pythonX.Y/site-packages`` first,
    then ``/opt/python``."""
    site = [layer / "lib" / f"python{version}" / "site-packages" for layer in layers]
    return [str(path) for path in [*site, *layers]]


def environment(prepared: Prepared, log: IO[str] | None = None) -> Environment:
    return Environment(
        prepared.spec,
        python=prepared.python,
        python_path=prepared.python_path,
        env_overrides=prepared.env_overrides,
        log=log,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("function", metavar="LogicalId", help="a function in the template")
    parser.add_argument("-e", "--event", type=Path, help="event JSON file (default: {})")
    parser.add_argument("-t", "--template", type=Path, default=REPO / "template.yaml")
    parser.add_argument(
        "--config-file",
        type=Path,
        help="samconfig.toml whose [default.local_invoke.parameters] apply "
        "(default: the one next to the template)",
    )
    parser.add_argument("-n", "--env-vars", type=Path, help="sam's env-vars JSON file")
    parser.add_argument("--parameter-overrides", nargs="+", default=[], metavar="KEY=VALUE")
    parser.add_argument("--repeat", type=int, default=1, help="events sent to one environment")
    parser.add_argument(
        "--layer-dir",
        action="append",
        default=[],
        metavar="LogicalId=DIR",
        help="a built layer (contains python/)",
    )
    parser.add_argument("--python", help="interpreter to run the handler with")
    parser.add_argument(
        "--runtime",
        help="run under this Lambda runtime (python3.11 ... python3.14): its interpreter, its "
        f"layer and its runtime packages (sets the template's {RUNTIME_PARAMETER})",
    )


def run(args: argparse.Namespace) -> int:
    """The ``invoke`` command: exit 0 when every invocation succeeded, 1 otherwise, 2 on set-up."""
    from devstack.sam.template import parse_overrides

    try:
        if args.repeat < 1:
            raise InvokeError("--repeat must be at least 1")
        event = args.event.read_bytes() if args.event else b"{}"
        json.loads(event)
        layer_dirs = {}
        for item in args.layer_dir:
            name, sep, directory = item.partition("=")
            if not sep:
                raise InvokeError(f"--layer-dir {item!r}: expected LogicalId=DIR")
            layer_dirs[name] = Path(directory)
        prepared = prepare(
            args.function,
            template_path=args.template,
            samconfig_path=args.config_file or args.template.parent / "samconfig.toml",
            env_vars=args.env_vars,
            parameter_overrides=parse_overrides(args.parameter_overrides),
            layer_dirs=layer_dirs,
            python=args.python,
            runtime=args.runtime,
        )
    except (InvokeError, TemplateError, OSError, ValueError) as exc:
        print(f"invoke: {exc}", file=sys.stderr)
        return 2
    failures = 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with environment(prepared) as env:
        for _ in range(args.repeat):
            try:
                result = env.invoke(event)
            except InitFailed as exc:
                print(json.dumps(exc.error), flush=True)
                print(f"invoke: the handler could not start: {exc}", file=sys.stderr)
                return 1
            print(json.dumps(result.payload), flush=True)
            failures += not result.ok
    return 1 if failures else 0
