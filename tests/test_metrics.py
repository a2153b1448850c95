"""Prometheus and OpenTelemetry export, on real failovers. Skipped when the optional
libraries are not installed (they are extras, never dependencies)."""

from __future__ import annotations

from typing import Any

import pytest

from geofailover_core import ConfigurationError, metrics
from geofailover_core.testing import wait_until

from .conftest import MakeClient


def sample(registry: Any, name: str, **labels: str) -> float | None:
    value: float | None = registry.get_sample_value(name, labels)
    return value


def test_prometheus_gauges_histogram_and_failover_counter(two, make_client: MakeClient) -> None:
    prom = pytest.importorskip("prometheus_client")
    registry = prom.CollectorRegistry()
    client = make_client(two, failback_grace_period=0.2)
    engine = client.geofailover
    detach = metrics.instrument(engine, prometheus=True, otel=False, registry=registry)
    client.ping()
    name = engine.name
    wait_until(lambda: (sample(registry, "geofailover_probe_latency_seconds_count", config=name, endpoint="b") or 0) >= 2, timeout=3)
    assert sample(registry, "geofailover_active_endpoint", config=name, endpoint="a") == 1
    assert sample(registry, "geofailover_active_endpoint", config=name, endpoint="b") == 0
    assert sample(registry, "geofailover_endpoint_health", config=name, endpoint="a", geofailover_endpoint_health="healthy") == 1
    assert sample(registry, "geofailover_endpoint_breaker", config=name, endpoint="a", geofailover_endpoint_breaker="closed") == 1

    two[0].kill()
    assert client.ping()
    engine.events.flush()
    assert sample(registry, "geofailover_failovers_total", config=name, fail_from="a", fail_to="b", reason="circuit_breaker") == 1
    wait_until(lambda: sample(registry, "geofailover_active_endpoint", config=name, endpoint="b") == 1, timeout=3)
    wait_until(
        lambda: sample(registry, "geofailover_endpoint_health", config=name, endpoint="a", geofailover_endpoint_health="unhealthy") == 1,
        timeout=3,
    )
    assert sample(registry, "geofailover_endpoint_breaker", config=name, endpoint="a", geofailover_endpoint_breaker="closed") == 0
    failed_probes = sample(registry, "geofailover_probe_latency_seconds_count", config=name, endpoint="a")
    rounds = engine.monitor.completed_rounds
    wait_until(lambda: engine.monitor.completed_rounds >= rounds + 3, timeout=3)
    # A failed probe's time to error is not a latency.
    assert sample(registry, "geofailover_probe_latency_seconds_count", config=name, endpoint="a") == failed_probes

    two[0].restart()
    wait_until(lambda: engine.active == "a", timeout=5)
    engine.events.flush()
    assert sample(registry, "geofailover_failovers_total", config=name, fail_from="b", fail_to="a", reason="failback") == 1
    detach()
    assert not any(getattr(hook, "__name__", "") == "update" for hook in engine.round_hooks)


def test_two_engines_share_one_set_of_families(two, make_client: MakeClient) -> None:
    prom = pytest.importorskip("prometheus_client")
    registry = prom.CollectorRegistry()
    first, second = make_client(two), make_client(two)
    metrics.instrument(first.geofailover, prometheus=True, otel=False, registry=registry)
    metrics.instrument(second.geofailover, prometheus=True, otel=False, registry=registry)  # no "duplicated timeseries"
    for engine in (first.geofailover, second.geofailover):
        assert sample(registry, "geofailover_active_endpoint", config=engine.name, endpoint="a") == 1


def test_opentelemetry_counter_uses_redis_py_names(two, make_client: MakeClient) -> None:
    pytest.importorskip("opentelemetry.sdk.metrics")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    client = make_client(two)
    engine = client.geofailover
    metrics.instrument(engine, prometheus=False, otel=True, meter=provider.get_meter("test"))
    client.ping()
    engine.check_now()
    engine.failover_to("b", reason="drill")
    two[1].kill()
    assert client.ping()  # the held endpoint failed: automatic failover back to a
    engine.events.flush()
    points = [
        (dict(point.attributes), point.value)
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == metrics.OTEL_COUNTER
        for point in metric.data.data_points
    ]
    by_trigger = {attrs["geofailover.trigger"]: (attrs, value) for attrs, value in points}
    manual, value = by_trigger["manual"]
    assert value == 1
    assert (manual[metrics.OTEL_FAIL_FROM], manual[metrics.OTEL_FAIL_TO], manual[metrics.OTEL_REASON]) == ("a", "b", "manual")
    automatic, value = by_trigger["circuit_breaker"]
    assert (automatic[metrics.OTEL_FAIL_FROM], automatic[metrics.OTEL_FAIL_TO], automatic[metrics.OTEL_REASON]) == ("b", "a", "automatic")
    assert automatic["geofailover.config"] == engine.name


def test_asking_for_a_missing_exporter_says_which_extra_to_install(two, make_client: MakeClient, monkeypatch) -> None:
    client = make_client(two)
    monkeypatch.setattr(metrics, "prometheus_available", lambda: False)
    monkeypatch.setattr(metrics, "otel_available", lambda: False)
    with pytest.raises(ConfigurationError, match=r"geofailover\[prometheus\]"):
        metrics.instrument(client.geofailover, prometheus=True)
    with pytest.raises(ConfigurationError, match=r"geofailover\[otel\]"):
        metrics.instrument(client.geofailover, otel=True)
    metrics.instrument(client.geofailover)()  # "if installed": nothing installed, nothing to do
