"""Lambda's lifecycle played for real: an execution environment is a process.

:class:`Environment` starts a Python process that runs a function's module (its ``init``
code, which defines ``handler(event, context)``) once, then one invocation per request, as
Lambda's runtime does: each gets a context whose remaining time counts down on the wall clock
and a new ``_X_AMZN_TRACE_ID``. Between invocations the process is frozen with SIGSTOP (no
thread, timer or socket read runs) and thawed with SIGCONT before the next, exactly as Lambda
freezes environments. An invocation that does not answer by its deadline (plus a grace) is
"Task timed out": the process is killed, as Lambda resets such an environment.

:class:`Relay` is the network path: a loopback TCP forwarder that can stop relaying the flows
it carries without closing them (a NAT gateway that forgot an idle flow: bytes vanish, no reset
comes back, reads just wait), stop relaying new ones too (a server that takes the TCP
connection and never answers), or relay the server's bytes one at a time (a dribbling server).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.forwarder import Forwarder

ROOT = Path(__file__).resolve().parent.parent
GRACE = 5.0  # seconds past an invocation's deadline before it counts as "Task timed out"

_CHILD = r"""
import json, os, sys, time
module = {"__name__": "function"}
exec(compile(sys.argv[1], "<function>", "exec"), module)
handler = module["handler"]


class Context:
    function_name = "iamdb-lifecycle"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:iamdb-lifecycle"
    log_group_name = "/aws/lambda/iamdb-lifecycle"
    log_stream_name = "stream"

    def __init__(self, request_id, deadline):
        self.aws_request_id = request_id
        self._deadline = deadline

    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.time()) * 1000))


print("ready", flush=True)
for line in sys.stdin:
    request = json.loads(line)
    os.environ["_X_AMZN_TRACE_ID"] = "Root=1-" + request["id"][:8] + "-" + request["id"]
    started = time.time()
    try:
        context = Context(request["id"], request["deadline"])
        out = {"ok": True, "value": handler(request["event"], context)}
    except Exception as exc:
        out = {"ok": False, "error": type(exc).__name__, "message": str(exc)[:3000],
               "iamdb": any(c.__module__.startswith("iamdb") for c in type(exc).__mro__)}
    out.update(started=started, ended=time.time())
    print(json.dumps(out, default=repr), flush=True)
"""


@dataclass
class Outcome:
    """What one invocation returned (or raised), and when it ran (epoch seconds)."""

    ok: bool
    value: Any = None
    error: str | None = None
    message: str = ""
    iamdb: bool = False
    started: float = 0.0
    ended: float = 0.0
    deadline: float = 0.0
    timed_out: bool = False

    @property
    def elapsed(self) -> float:
        return self.ended - self.started

    @property
    def within_deadline(self) -> bool:
        """Ended before the invocation's time was up (Lambda would not have cut it off)."""
        return not self.timed_out and self.ended <= self.deadline


@dataclass
class Environment:
    """One Lambda execution environment running ``init`` (see the module docstring)."""

    init: str
    env: Mapping[str, str]
    freeze_between: bool = True
    layer: Path = ROOT / "layer"  # where iamdb is imported from (bench.slots: main's too)
    proc: subprocess.Popen[str] = field(init=False)
    frozen: bool = field(init=False, default=False)
    pending: float | None = field(init=False, default=None)  # deadline of a started invocation

    def __post_init__(self) -> None:
        environ = {**os.environ, **self.env, "PYTHONPATH": f"{self.layer}:{ROOT}"}
        environ.pop("_X_AMZN_TRACE_ID", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, self.init],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environ,
        )
        line = self._read(30.0)
        if line != "ready":
            self.close()
            raise RuntimeError(f"the environment did not start: {line!r} {self._stderr()}")

    def invoke(self, event: Any = None, timeout: float = 6.0) -> Outcome:
        """One invocation with ``timeout`` seconds (the context's remaining time), thawing
        before and freezing after (unless ``freeze_between`` is off)."""
        self.start(event, timeout)
        return self.result()

    def start(self, event: Any = None, timeout: float = 6.0) -> None:
        """Begin an invocation without waiting for it (see :meth:`result`)."""
        self.thaw()
        deadline = time.time() + timeout
        request = {"id": str(uuid.uuid4()), "event": event, "deadline": deadline}
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        self.pending = deadline

    def result(self) -> Outcome:
        """The started invocation's outcome; "Task timed out" (and the process killed) when it
        does not answer by its deadline plus a grace. The environment is frozen afterwards."""
        assert self.pending is not None
        deadline, self.pending = self.pending, None
        line = self._read(max(0.0, deadline + GRACE - time.time()))
        if line is None:
            self.close()
            return Outcome(False, error="Task timed out", deadline=deadline, timed_out=True)
        data = json.loads(line)
        outcome = Outcome(**data, deadline=deadline)
        if self.freeze_between:
            self.freeze()
        return outcome

    def freeze(self) -> None:
        if not self.frozen and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGSTOP)
            self.frozen = True

    def thaw(self) -> None:
        if self.frozen:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.frozen = False

    def close(self) -> None:
        if self.proc.poll() is None:
            self.thaw()
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> Environment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, timeout: float) -> str | None:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return line.strip() if line else None

    def _stderr(self) -> str:
        if self.proc.poll() is None:
            return ""
        assert self.proc.stderr is not None
        return self.proc.stderr.read()[-3000:]


class Relay(Forwarder):
    """A loopback TCP forwarder to ``127.0.0.1:target`` (see the module docstring): devstack's,
    whose flows can be silenced or slowed."""

    def __init__(self, target: int) -> None:
        self._relayed: list[_Flow] = []
        self._silent_new = False
        self._dribble = 0.0
        super().__init__("127.0.0.1", 0, target)
        self.start()

    def silence(self, *, new: bool = False) -> None:
        """Stop relaying every flow carried now (and, with ``new``, those that come)."""
        with self._lock:
            for flow in self._relayed:
                flow.silent = True
            self._silent_new = new

    def dribble(self, every: float) -> None:
        """Relay the server's bytes of new flows one at a time, ``every`` seconds apart."""
        self._dribble = every

    def restore(self) -> None:
        """Relay new flows normally again (silenced ones stay silent)."""
        with self._lock:
            self._silent_new, self._dribble = False, 0.0

    def close(self) -> None:
        self.stop()
        with self._lock:
            flows, self._relayed = self._relayed, []
        for flow in flows:
            flow.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        flow = _Flow(client, upstream, self._silent_new, self._dribble)
        with self._lock:
            self._relayed.append(flow)
        threading.Thread(target=flow.pump, daemon=True).start()


@dataclass
class _Flow:
    client: socket.socket
    upstream: socket.socket
    silent: bool
    dribble: float
    closed: bool = False

    def pump(self) -> None:
        ends = [self.client, self.upstream]
        try:
            while not self.closed:
                readable, _, _ = select.select(ends, [], [], 0.1)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        self.close()
                        return
                    if self.silent:
                        continue  # the bytes vanish: nothing closed, nothing answered
                    other = self.upstream if sock is self.client else self.client
                    if sock is self.upstream and self.dribble:
                        for byte in data:
                            time.sleep(self.dribble)
                            other.sendall(bytes([byte]))
                    else:
                        other.sendall(data)
        except OSError:
            self.close()

    def close(self) -> None:
        self.closed = True
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.close()
