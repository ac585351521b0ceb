"""The HTTP server of devstack's endpoints (the Lambda Runtime API, container credentials).

``http.server`` prints a traceback for every request whose client went away mid-answer: a
Lambda runtime or an SDK closing its kept-alive connection does that in a run where everything
succeeded, and a newcomer's first run should show no traceback that is not a failure.
"""

from __future__ import annotations

import sys
from http.server import ThreadingHTTPServer
from typing import Any

_GONE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class Server(ThreadingHTTPServer):
    """A threading HTTP server, daemon threads, quiet about clients that went away."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], _GONE):
            return
        super().handle_error(request, client_address)
