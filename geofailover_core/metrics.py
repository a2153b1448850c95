"""Metrics for Prometheus and OpenTelemetry, both optional.

Why optional: most applications already have one metrics stack, and neither
``prometheus_client`` nor ``opentelemetry-api`` should become a dependency of
everyone who only wants failover. Install ``geofailover[prometheus]`` or
``geofailover[otel]`` and call :func:`instrument` once per engine (adapters do
it for you when the library is installed)::

    from geofailover_core import metrics
    metrics.instrument(client.geofailover)             # whatever is installed
    metrics.instrument(engine, prometheus=True, otel=False, registry=my_registry)

Prometheus (labels ``config``, ``endpoint``):

* ``geofailover_active_endpoint`` gauge: 1 for the endpoint serving traffic, 0 for the others
  (all 0: every endpoint is down);
* ``geofailover_endpoint_health`` state set: ``healthy``/``unhealthy``/``inconclusive``/``unknown``;
* ``geofailover_endpoint_breaker`` state set: ``closed``/``open``/``half-open``;
* ``geofailover_probe_latency_seconds`` histogram of successful health probes;
* ``geofailover_failovers_total`` counter, labels ``config``, ``fail_from``, ``fail_to``, ``reason``
  (every switch between two endpoints, failbacks included; reason is geofailover's
  own: ``health_check``, ``circuit_breaker``, ``failback``, ``manual``, ``pin``).

OpenTelemetry: the counter ``redis.client.geofailover.failovers`` with the
attributes redis-py's ``MultiDBClient`` uses, so dashboards carry over:
``db.client.geofailover.fail_from``, ``db.client.geofailover.fail_to`` (endpoint
names) and ``db.client.geofailover.reason`` (``automatic`` or ``manual``, redis-py's
values), plus ``geofailover.config`` and ``geofailover.trigger`` (the detailed reason).
"""

from __future__ import annotations

import importlib.util
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError
from .events import FailbackEvent, FailoverEvent, GeoEvent, Reason

if TYPE_CHECKING:
    from .engine import FailoverEngine

HEALTH_STATES = ["healthy", "unhealthy", "inconclusive", "unknown"]
BREAKER_STATES = ["closed", "open", "half-open"]
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

OTEL_COUNTER = "redis.client.geofailover.failovers"
OTEL_FAIL_FROM = "db.client.geofailover.fail_from"
OTEL_FAIL_TO = "db.client.geofailover.fail_to"
OTEL_REASON = "db.client.geofailover.reason"
_AUTOMATIC = frozenset({Reason.HEALTH_CHECK, Reason.CIRCUIT_BREAKER, Reason.FAILBACK})


def prometheus_available() -> bool:
    return importlib.util.find_spec("prometheus_client") is not None


def otel_available() -> bool:
    return importlib.util.find_spec("opentelemetry") is not None and importlib.util.find_spec("opentelemetry.metrics") is not None


class PrometheusMetrics:
    """The Prometheus metric families, created once per collector registry (a family
    registered twice is an error in prometheus_client), shared by all engines."""

    _by_registry: weakref.WeakKeyDictionary[Any, PrometheusMetrics] = weakref.WeakKeyDictionary()
    _lock = threading.Lock()

    def __init__(self, registry: Any = None) -> None:
        import prometheus_client as prom

        kw: dict[str, Any] = {"registry": registry if registry is not None else prom.REGISTRY}
        self.active = prom.Gauge("geofailover_active_endpoint", "1 for the endpoint serving traffic, else 0", ["config", "endpoint"], **kw)
        self.health = prom.Enum("geofailover_endpoint_health", "Health verdict of the last probe round", ["config", "endpoint"],
                                states=HEALTH_STATES, **kw)
        self.breaker = prom.Enum("geofailover_endpoint_breaker", "Circuit breaker state", ["config", "endpoint"], states=BREAKER_STATES, **kw)
        self.latency = prom.Histogram("geofailover_probe_latency_seconds", "Latency of successful health probes", ["config", "endpoint"],
                                      buckets=LATENCY_BUCKETS, **kw)
        self.failovers = prom.Counter("geofailover_failovers", "Switches of the active endpoint",
                                      ["config", "fail_from", "fail_to", "reason"], **kw)

    @classmethod
    def for_registry(cls, registry: Any = None) -> PrometheusMetrics:
        import prometheus_client as prom

        target = registry if registry is not None else prom.REGISTRY
        with cls._lock:
            found = cls._by_registry.get(target)
            if found is None:
                found = cls._by_registry[target] = cls(target)
            return found

    def instrument(self, engine: FailoverEngine) -> Callable[[], None]:
        """Keep this engine's series up to date; returns a function that stops it."""
        seen: dict[str, tuple[int, int, int]] = {}

        def update(eng: FailoverEngine) -> None:
            # Runs on the monitor thread after each round: in-memory reads only.
            status = eng.status()
            for ep_status, ep in zip(status["endpoints"], eng.states(), strict=True):
                labels = (eng.name, ep.name)
                self.active.labels(*labels).set(1 if ep_status["active"] else 0)
                self.health.labels(*labels).state(ep_status["health"] if ep_status["health"] in HEALTH_STATES else "unknown")
                self.breaker.labels(*labels).state(ep_status["breaker"] if ep_status["breaker"] in BREAKER_STATES else "open")
                counters = (ep.counters["probes"], ep.counters["probes_failed"], ep.counters["probes_inconclusive"])
                before = seen.get(ep.name)
                seen[ep.name] = counters
                # Observe only a round whose probe succeeded: a failed probe's "latency" is a timeout.
                if before is not None and counters[0] > before[0] and counters[1:] == before[1:] and ep.latency is not None:
                    self.latency.labels(*labels).observe(ep.latency)

        def on_switch(event: GeoEvent) -> None:
            if event.from_endpoint and event.to_endpoint:
                self.failovers.labels(engine.name, event.from_endpoint, event.to_endpoint, event.reason or "").inc()
            update(engine)

        update(engine)
        remove_hook = engine.add_round_hook(update)
        unsubscribe = [engine.on(kind, on_switch) for kind in ("failover", "failback", "all_down", "recovered")]

        def detach() -> None:
            remove_hook()
            for off in unsubscribe:
                off()

        return detach


class OpenTelemetryMetrics:
    """The OpenTelemetry failover counter, named as redis-py names it."""

    def __init__(self, meter: Any = None) -> None:
        from opentelemetry import metrics as otel

        from . import __version__

        meter = meter if meter is not None else otel.get_meter("geofailover", __version__)
        self.failovers = meter.create_counter(
            name=OTEL_COUNTER, unit="{geofailover}", description="Switches of the active Redis endpoint by geofailover",
        )

    def instrument(self, engine: FailoverEngine) -> Callable[[], None]:
        def on_switch(event: GeoEvent) -> None:
            if not isinstance(event, (FailoverEvent, FailbackEvent)):
                return
            trigger = event.reason or ""
            self.failovers.add(1, {
                OTEL_FAIL_FROM: event.from_endpoint or "",
                OTEL_FAIL_TO: event.to_endpoint or "",
                OTEL_REASON: "automatic" if trigger in _AUTOMATIC else "manual",
                "geofailover.config": engine.name,
                "geofailover.trigger": trigger,
            })

        offs = [engine.on("failover", on_switch), engine.on("failback", on_switch)]

        def detach() -> None:
            for off in offs:
                off()

        return detach


def instrument(
    engine: FailoverEngine,
    *,
    prometheus: bool | None = None,
    otel: bool | None = None,
    registry: Any = None,
    meter: Any = None,
) -> Callable[[], None]:
    """Export ``engine``'s metrics. ``None`` (default) means "if installed"; ``True``
    insists and raises :class:`ConfigurationError` when the library is missing.
    Returns a function that stops the export."""
    detachers: list[Callable[[], None]] = []
    if prometheus or (prometheus is None and prometheus_available()):
        if not prometheus_available():
            raise ConfigurationError("metrics.prometheus", "prometheus_client is not installed", "pip install 'geofailover[prometheus]'")
        detachers.append(PrometheusMetrics.for_registry(registry).instrument(engine))
    if otel or (otel is None and otel_available()):
        if not otel_available():
            raise ConfigurationError("metrics.otel", "opentelemetry-api is not installed", "pip install 'geofailover[otel]'")
        detachers.append(OpenTelemetryMetrics(meter).instrument(engine))

    def detach() -> None:
        for off in detachers:
            off()

    return detach


__all__ = [
    "OTEL_COUNTER",
    "OTEL_FAIL_FROM",
    "OTEL_FAIL_TO",
    "OTEL_REASON",
    "OpenTelemetryMetrics",
    "PrometheusMetrics",
    "instrument",
    "otel_available",
    "prometheus_available",
]
