"""iamdb's own HTTP/1.1 client (``iamdb._aws.http``) against the same client on ``http.client``.

The decision this measures: keep the raw-socket client, or build ``HttpConnection`` on the
standard library's ``http.client`` over a socket whose timeout is re-armed to the time left
before every operation (the same total-deadline guarantee). That alternative is
:class:`bench.httpclient.StdlibConnection`, written to pass the same tests (run them on it:
``python -m pytest -p bench.httpclient tests/unit/aws/http tests/unit/aws/client``).

1. Cold import: a fresh interpreter imports the transport (``iamdb._aws.http``, or what the
   variant imports beyond ``iamdb._aws.net``, which both need), median of :data:`COLD_RUNS`,
   the two in turns.
2. Per request: the same DynamoDB-sized signed POST to a loopback keep-alive server, median
   of :data:`ROUNDS` single requests, the two in turns.
3. Code: lines that are code in each (:func:`code_lines`).

Run: ``python -m bench.http``.
"""

from __future__ import annotations

import ast
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.httpclient import StdlibConnection

ROOT = Path(__file__).resolve().parent.parent
COLD_RUNS = 21
ROUNDS = 3000

_IMPORT = """
import sys, time
sys.path[:0] = [{layer!r}, {root!r}]
import iamdb.errors, iamdb._aws.net  # both sides need these: not what is compared
t = time.perf_counter()
{statement}
print((time.perf_counter() - t) * 1000)
"""
_OURS = "import iamdb._aws.http"
_STDLIB = "import contextlib, http.client, io, select, threading"  # StdlibConnection's


def cold_import(runs: int = COLD_RUNS) -> tuple[float, float]:
    """Median ms to import each transport in a fresh interpreter (http.client's, ours)."""
    samples: dict[str, list[float]] = {_STDLIB: [], _OURS: []}
    for _ in range(runs + 1):
        for statement, got in samples.items():
            code = _IMPORT.format(layer=str(ROOT / "layer"), root=str(ROOT), statement=statement)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            got.append(float(out.stdout))
    return statistics.median(samples[_STDLIB][1:]), statistics.median(samples[_OURS][1:])


def per_request(rounds: int = ROUNDS) -> tuple[float, float]:
    """Median us per signed POST on a kept-alive loopback connection (http.client's, ours)."""
    from bench.table import interleaved
    from iamdb._aws.http import HttpConnection
    from tests.localserver import LocalServer, answering, response

    answer = response(200, b'{"Attributes":{"n":{"N":"1764547200111111"}}}', _AWS_HEADERS)
    body = b'{"TableName":"iamdb-throttle","Key":{"pk":{"S":"q#db:5432"}}}' + b" " * 600
    with LocalServer(answering(lambda _: answer)) as server:
        ours = HttpConnection("http", server.host, server.port, clock=time.time, environ={})
        theirs = StdlibConnection("http", server.host, server.port, clock=time.time, environ={})
        result = interleaved(
            lambda: theirs.request("POST", "/", _SIGNED, body, time.time() + 5),
            lambda: ours.request("POST", "/", _SIGNED, body, time.time() + 5),
            rounds,
        )
        ours.close()
        theirs.close()
    return result


_SIGNED = {
    "host": "dynamodb.us-east-1.amazonaws.com",
    "content-type": "application/x-amz-json-1.0",
    "x-amz-target": "DynamoDB_20120810.UpdateItem",
    "x-amz-date": "20251201T000000Z",
    "x-amz-security-token": "IQoJb3JpZ2luX2VjE" + "x" * 1000,
    "authorization": "AWS4-HMAC-SHA256 Credential=ASIA/20251201/us-east-1/dynamodb/aws4_request, "
    "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, "
    "Signature=" + "0" * 64,
    "user-agent": "iamdb/0.1",
}
_AWS_HEADERS = [
    ("Server", "Server"),
    ("Date", "Mon, 01 Dec 2025 00:00:00 GMT"),
    ("Content-Type", "application/x-amz-json-1.0"),
    ("Connection", "keep-alive"),
    ("x-amzn-RequestId", "KJ4JBPUFQ3U6O9JB4PV2G8HFQ3VV4KQNSO5AEMVJF66Q9ASUAAJG"),
    ("x-amz-crc32", "1234567890"),
]


def code_lines() -> tuple[int, int]:
    """Lines of code of each client (not blank, comment or docstring): the variant and the
    parts of ``iamdb._aws.http`` it reuses; ``iamdb._aws.http`` and ``iamdb._aws.http_answer``
    but the ``http_date`` both would keep."""
    variant = (ROOT / "bench/httpclient/__init__.py").read_text()
    ours = (ROOT / "layer/iamdb/_aws/http.py").read_text()
    reused = {"TransportError", "Response", "_encode", "_token", "_NOT_TCHAR", "_readable"}
    answer = (ROOT / "layer/iamdb/_aws/http_answer.py").read_text()
    answer_sloc = _sloc(answer) - _sloc(answer, {"_MONTHS", "http_date"})
    plugin = _sloc(variant, {"pytest_configure"})
    return _sloc(variant) - plugin + _sloc(ours, reused), _sloc(ours) + answer_sloc


def _sloc(source: str, only: set[str] | None = None) -> int:
    """Lines of ``source`` (of its top-level definitions named ``only``) that are code."""
    tree = ast.parse(source)
    lines = source.splitlines()
    docstrings = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    wanted = range(1, len(lines) + 1)
    if only is not None:
        wanted = [
            n
            for node in tree.body
            if _name(node) in only
            for n in range(node.lineno, (node.end_lineno or node.lineno) + 1)
        ]
    code = [lines[n - 1].strip() for n in wanted if n not in docstrings]
    return sum(1 for line in code if line and not line.startswith("#"))


def _name(node: ast.stmt) -> str | None:
    if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    return getattr(node, "name", None)


def main() -> None:
    from bench.table import Row, print_table

    cold_theirs, cold_ours = cold_import()
    warm_theirs, warm_ours = per_request()
    lines_theirs, lines_ours = code_lines()
    cold = f"cold import, fresh process, median of {COLD_RUNS} (ms)"
    warm = f"signed POST, kept-alive loopback connection, median of {ROUNDS} (us)"
    print_table(
        "HTTP client: http.client with re-armed timeouts (baseline) against iamdb._aws.http",
        [
            Row(cold, cold_theirs, cold_ours, "<= 1"),
            Row(warm, warm_theirs, warm_ours, "<= 1"),
            Row(
                "lines of code (no blanks, comments, docstrings)", lines_theirs, lines_ours, "<= 1"
            ),
        ],
    )


if __name__ == "__main__":
    main()
