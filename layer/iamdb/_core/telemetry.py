"""What iamdb reports about itself: EMF metrics and X-Ray subsegments, through Powertools.

Everything here is optional and costs nothing until it is used:

- **Metrics** are on when a CloudWatch namespace is set (``IAMDB_METRICS_NAMESPACE``, else
  ``POWERTOOLS_METRICS_NAMESPACE``) and ``aws_lambda_powertools`` is installed. Each
  ``get_pg()``/``get_mysql()``/``get_mongo()``/``get_valkey()`` call that did something worth
  counting (a login, a signature, a wait, a refusal) ends by printing one EMF record through
  Powertools' ``EphemeralMetrics``, with ``engine`` and ``instance`` as dimensions. It is
  separate from the application's own ``Metrics`` (whose metric set is shared by every
  instance), so iamdb's dimensions never leak into the application's metrics. Calls that
  reuse a connection record nothing and print nothing.
- **Subsegments** appear when the application made a Powertools ``Tracer`` (iamdb looks for
  one, it never imports or creates the first): logins (``iamdb connect``) and credential
  refreshes (``iamdb credentials``), annotated with ``engine`` and ``instance``. Tracing
  never breaks a connection: a tracer error is logged and ignored.

Names of metrics (all ``Count`` unless said): ``ConnectionsOpened``, ``Reconnects`` (a dead
connection replaced), ``TokensSigned``, ``CredentialRefreshes`` (AssumeRole for Mongo),
``ThrottleWaitMs`` (``Milliseconds`` of waits for IAM login permits iamdb asked for),
``AuthRetries``, ``AuthFailures`` (logins the server refused), ``ConnectRetries`` (connects tried
again after a failure a later attempt may not meet), ``ConnectFailures`` (connects that failed
for good), ``ServerThrottled`` (new connections the server refused for their rate: Aurora DSQL's
SQLSTATE 53400), ``LimiterFailOpen`` (the fleet limiter's DynamoDB failed and the login went
ahead on the process limiter alone), ``TransactionRetries`` (transactions
:func:`iamdb.dsql_transaction` ran again after a 40001 conflict), ``TransactionsRolledBack`` (a
transaction an earlier invocation left open, rolled back by replacing its connection),
``Reauthentications`` (Valkey connections that sent ``AUTH`` with a fresh token before AWS's 12
hours were up), ``SlotWaits`` (logins that found the server without a free connection slot and
waited for one, whether or not one freed), ``SlotWaitMs`` (``Milliseconds`` each of them waited,
from the first refusal to the login's end).

Powertools absent is not an error (not :class:`~iamdb.errors.MissingDependencyError`): metrics
are an extra a connection must never fail for, so a namespace without Powertools warns once and
counts only for :func:`iamdb.info`; tracing needs the application's own Tracer.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from iamdb._core.log import WarnOnce, logger

METRICS = (
    "ConnectionsOpened",
    "Reconnects",
    "TokensSigned",
    "CredentialRefreshes",
    "ThrottleWaitMs",
    "AuthRetries",
    "AuthFailures",
    "ServerThrottled",
    "LimiterFailOpen",
    "TransactionRetries",
    "ConnectRetries",
    "ConnectFailures",
    "TransactionsRolledBack",
    "Reauthentications",
    "SlotWaits",
    "SlotWaitMs",
)
_UNITS = {"ThrottleWaitMs": "Milliseconds", "SlotWaitMs": "Milliseconds"}
_TRACER_MODULE = "aws_lambda_powertools.tracing.tracer"


class Telemetry:
    """One registry's metrics namespace and its instances' :class:`Probe` objects."""

    def __init__(self, namespace: str | None, warn_once: WarnOnce | None = None) -> None:
        self.namespace = namespace
        self._warn_once = warn_once or WarnOnce()
        self._tracer: Any = None  # the application's Powertools Tracer, once seen

    def probe(self, engine: str, name: str | None) -> Probe:
        """The probe of one instance (``engine`` ``pg``/``mysql``/``mongo``, ``name`` or None)."""
        return Probe(self, engine, name or "default")

    def emit(self, dimensions: dict[str, str], values: dict[str, list[float]]) -> None:
        """Print one EMF record of ``values`` (metric -> values) with ``dimensions``."""
        if self.namespace is None:
            return
        try:
            from aws_lambda_powertools.metrics import EphemeralMetrics
        except ImportError:
            self._warn_once(
                "metrics:powertools",
                "iamdb: a metrics namespace is set but aws_lambda_powertools is not installed: "
                "no metrics (add the Powertools layer or package)",
            )
            return
        metrics = EphemeralMetrics(namespace=self.namespace)
        for key, value in dimensions.items():
            metrics.add_dimension(name=key, value=value)
        for metric, points in values.items():
            for point in points:
                metrics.add_metric(name=metric, unit=_UNITS.get(metric, "Count"), value=point)
        metrics.flush_metrics()

    def tracer(self) -> Any:
        """The application's enabled Powertools ``Tracer``, or None (no import, no creation)."""
        if self._tracer is None:
            module = sys.modules.get(_TRACER_MODULE)
            # A Tracer the application made shares its configuration with every later one.
            if module is None or module.Tracer._config.get("provider") is None:
                return None
            self._tracer = module.Tracer(auto_patch=False)  # it patched already, if it wanted
        return None if self._tracer.disabled else self._tracer


def quiet_probe(engine: str, name: str | None) -> Probe:
    """A probe for code built outside a registry (tests): it counts nothing (no namespace)."""
    return Telemetry(None).probe(engine, name)


class Probe:
    """Counts one instance's metrics until :meth:`flush`, and opens its subsegments.

    Thread-safe. Without a metrics namespace :meth:`count` does nothing; without a
    Tracer :meth:`span` does nothing.
    """

    def __init__(self, telemetry: Telemetry, engine: str, instance: str) -> None:
        self._telemetry = telemetry
        self.dimensions = {"engine": engine, "instance": instance}
        self._lock = threading.Lock()
        self._pending: dict[str, list[float]] = {}
        self._totals: dict[str, float] = {}  # since the process started: iamdb.info()

    def count(self, metric: str, value: float = 1.0) -> None:
        """Add ``value`` to ``metric`` (one of :data:`METRICS`) for the next :meth:`flush`."""
        with self._lock:
            self._totals[metric] = self._totals.get(metric, 0.0) + value
            if self._telemetry.namespace is None:
                return
            points = self._pending.setdefault(metric, [])
            if metric in _UNITS or not points:
                points.append(value)  # each wait is its own data point
            else:
                points[0] += value

    def totals(self) -> dict[str, float]:
        """Each metric's sum since this probe was made (what :func:`iamdb.info` reports)."""
        with self._lock:
            return dict(self._totals)

    def flush(self) -> None:
        """Emit what was counted since the last flush (nothing when nothing was counted)."""
        if not self._pending:
            return
        with self._lock:
            pending, self._pending = self._pending, {}
        try:
            self._telemetry.emit(self.dimensions, pending)
        except Exception as exc:  # metrics must never break a connection
            logger.warning("iamdb: emitting metrics failed: %s: %s", type(exc).__name__, exc)

    @contextmanager
    def span(self, what: str) -> Iterator[None]:
        """An X-Ray subsegment ``iamdb <what>`` around the block, when a Tracer is in use."""
        with ExitStack() as stack:
            try:
                tracer = self._telemetry.tracer()
                if tracer is not None:
                    subsegment = stack.enter_context(
                        tracer.provider.in_subsegment(name=f"iamdb {what}")
                    )
                    for key, value in self.dimensions.items():
                        subsegment.put_annotation(key=key, value=value)
            except Exception as exc:  # tracing must never break a connection
                logger.info("iamdb: no X-Ray subsegment (%s: %s)", type(exc).__name__, exc)
            yield
