"""geofailover events as Celery signals, sent with ``sender=<engine name>`` and
``event``, ``engine``, ``from_endpoint``, ``to_endpoint``, ``reason``, ``detail``
(``health_changed`` also ``endpoint``, ``old``, ``new``) on the engine's event
thread, once per switch and process. Receivers must not block.
"""

from __future__ import annotations

import threading
import weakref

from celery.utils.dispatch import Signal  # type: ignore[import-untyped]

from geofailover_core.engine import FailoverEngine
from geofailover_core.events import GeoEvent, HealthChangedEvent
from geofailover_core.forking import after_fork_in_child

_ARGS = {"event", "engine", "from_endpoint", "to_endpoint", "reason", "detail"}

failover = Signal(name="geofailover_failover", providing_args=_ARGS)
failback = Signal(name="geofailover_failback", providing_args=_ARGS)
health_changed = Signal(name="geofailover_health_changed", providing_args=_ARGS | {"endpoint", "old", "new"})
all_down = Signal(name="geofailover_all_down", providing_args=_ARGS)
recovered = Signal(name="geofailover_recovered", providing_args=_ARGS)

#: Event kind -> signal.
SIGNALS: dict[str, Signal] = {
    signal.name.removeprefix("geofailover_"): signal for signal in (failover, failback, health_changed, all_down, recovered)
}

_lock = threading.Lock()
_bridged: weakref.WeakSet[FailoverEngine] = weakref.WeakSet()


def bridge(engine: FailoverEngine) -> None:
    """Relay ``engine``'s events to the signals (once per engine; the subscription
    survives ``fork()``). Both the transport and the backend call it: a process may use either."""
    with _lock:
        if engine in _bridged:
            return
        _bridged.add(engine)
    ref = weakref.ref(engine)

    def relay(event: GeoEvent) -> None:
        signal, current = SIGNALS.get(event.kind), ref()
        if signal is not None and current is not None:
            extra = {"endpoint": event.endpoint, "old": event.old, "new": event.new} if isinstance(event, HealthChangedEvent) else {}
            signal.send(sender=current.name, event=event, engine=current, from_endpoint=event.from_endpoint,
                        to_endpoint=event.to_endpoint, reason=event.reason, detail=event.detail, **extra)

    engine.on("*", relay)


@after_fork_in_child
def _after_fork() -> None:
    global _lock
    _lock = threading.Lock()
