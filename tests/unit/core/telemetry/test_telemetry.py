"""Metrics counting and EMF output (Powertools' real EphemeralMetrics), and the namespace setting.

Logs, subsegments and metrics of real handlers against real servers are in
tests/integration/test_powertools.py; here the counting rules are pinned down with a fake
clock and the socket-pair driver of test_managed.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from iamdb._core.runtime import Runtime
from iamdb._core.settings import load_settings
from iamdb._core.telemetry import METRICS, Probe, Telemetry
from iamdb._sql.config import load_sql_config
from iamdb._sql.managed import ManagedConnection
from iamdb.errors import AuthError, ConfigError
from tests.fakes import FakeClock, SocketDriver, managed_connection
from tests.paths import ROOT
from tests.unit.sql.managed.test_managed import ENV


class Recording(Telemetry):
    """Telemetry that keeps what it would print."""

    def __init__(self) -> None:
        super().__init__("Test")
        self.emitted: list[tuple[dict[str, str], dict[str, list[float]]]] = []

    def emit(self, dimensions: dict[str, str], values: dict[str, list[float]]) -> None:
        self.emitted.append((dict(dimensions), values))


def test_counts_add_up_waits_stay_apart_and_a_flush_empties() -> None:
    telemetry = Recording()
    probe = telemetry.probe("pg", None)
    probe.count("AuthRetries")
    probe.count("AuthRetries")
    probe.count("ThrottleWaitMs", 12.5)
    probe.count("ThrottleWaitMs", 0.0)
    probe.flush()
    probe.flush()  # nothing new: nothing printed
    assert telemetry.emitted == [
        (
            {"engine": "pg", "instance": "default"},
            {"AuthRetries": [2.0], "ThrottleWaitMs": [12.5, 0.0]},
        )
    ]


def test_without_a_namespace_nothing_is_counted() -> None:
    probe = Telemetry(None).probe("mysql", "reporting")
    probe.count("ConnectionsOpened")
    with probe.span("connect"):  # no Tracer made by the application: a plain block
        pass
    probe.flush()
    assert probe._pending == {}


def test_emf_record_through_powertools(capsys: pytest.CaptureFixture[str]) -> None:
    probe = Telemetry("IamDbUnit").probe("mongo", "analytics")
    probe.count("CredentialRefreshes")
    probe.count("ThrottleWaitMs", 3.0)
    probe.flush()
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    record = json.loads(line)
    (directive,) = record["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "IamDbUnit"
    assert [d for d in directive["Dimensions"][0] if d != "service"] == ["engine", "instance"]
    units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
    assert units == {"CredentialRefreshes": "Count", "ThrottleWaitMs": "Milliseconds"}
    assert (record["engine"], record["instance"]) == ("mongo", "analytics")


def managed_with(
    telemetry: Telemetry,
) -> tuple[ManagedConnection[Any], SocketDriver, FakeClock]:
    clock = FakeClock()
    driver = SocketDriver()
    managed = managed_connection(
        driver,
        load_sql_config("pg", None, ENV),
        Runtime(environ=ENV, clock=clock),
        retries=0,
        probe=telemetry.probe("pg", None),
    )
    return managed, driver, clock


def flushed(managed: ManagedConnection[Any], telemetry: Recording) -> dict[str, list[float]]:
    assert isinstance(managed.probe, Probe)
    managed.probe.flush()
    return telemetry.emitted.pop()[1] if telemetry.emitted else {}


def test_login_reuse_and_reconnect_are_counted() -> None:
    telemetry = Recording()
    managed, driver, clock = managed_with(telemetry)
    first = managed.get()
    assert flushed(managed, telemetry) == {
        "ConnectionsOpened": [1.0],
        "TokensSigned": [1.0],
        "ThrottleWaitMs": [0.0],
    }
    clock.now += 1
    managed.get()
    assert flushed(managed, telemetry) == {}  # reuse: nothing to report
    driver.server(first).close()  # the server hung up while the environment was frozen
    driver.ping_fails = True
    clock.now += 1
    managed.get()
    assert flushed(managed, telemetry) == {"Reconnects": [1.0], "ConnectionsOpened": [1.0]}


def test_refusals_are_counted() -> None:
    telemetry = Recording()
    managed, driver, _ = managed_with(telemetry)
    driver.refusals = [AuthError("refused")]
    with pytest.raises(AuthError):
        managed.get()
    assert flushed(managed, telemetry) == {
        "TokensSigned": [1.0],
        "ThrottleWaitMs": [0.0],
        "AuthFailures": [1.0],
    }


def test_metric_names_are_the_documented_ones() -> None:
    import iamdb._core.telemetry

    reference = (ROOT / "docs" / "configuration.md").read_text()
    assert len(set(METRICS)) == 16 and all(name.isidentifier() for name in METRICS)
    for name in METRICS:
        assert (
            f"``{name}``" in (iamdb._core.telemetry.__doc__ or "") and f"`{name}`" in reference
        ), name


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"POWERTOOLS_METRICS_NAMESPACE": "Shop"}, "Shop"),
        ({"POWERTOOLS_METRICS_NAMESPACE": "Shop", "IAMDB_METRICS_NAMESPACE": "Db/Prod"}, "Db/Prod"),
        ({"IAMDB_METRICS_NAMESPACE": "  "}, None),
    ],
)
def test_metrics_namespace(env: dict[str, str], expected: str | None) -> None:
    assert load_settings(env).metrics_namespace == expected


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("IAMDB_METRICS_NAMESPACE", "AWS/RDS"),
        ("IAMDB_METRICS_NAMESPACE", "x" * 256),
        ("IAMDB_METRICS_NAMESPACE", "naïve"),
        ("POWERTOOLS_METRICS_NAMESPACE", "a\nb"),
    ],
)
def test_bad_namespace_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({variable: value})
    assert info.value.variable == variable
