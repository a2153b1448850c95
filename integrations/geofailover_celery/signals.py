"""geofailover events as Celery signals.

Connect receivers the Celery way::

    from geofailover_celery import signals

    @signals.failover.connect
    def page_oncall(sender, event, **kwargs):
        ...  # sender is the engine name ("celery-broker", "celery-results" or yours)

Every signal is sent with ``sender=<engine name>`` and the keyword
arguments ``event`` (the core's frozen event dataclass), ``engine``,
``from_endpoint``, ``to_endpoint``, ``reason`` and ``detail``;
``health_changed`` also has ``endpoint``, ``old`` and ``new``.

Receivers run on the engine's event dispatcher thread, once per switch and
per process that uses the engine (a prefork child that stores results has
its own engine and sends its own signals). Celery's ``Signal.send`` is
robust: an exception in one receiver is logged and the others still run.
Do no blocking work there; hand it to your own thread or queue.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

from celery.utils.dispatch import Signal  # type: ignore[import-untyped]

from geofailover_core.engine import FailoverEngine
from geofailover_core.events import GeoEvent, HealthChangedEvent

_ARGS = {"event", "engine", "from_endpoint", "to_endpoint", "reason", "detail"}

failover = Signal(name="geofailover_failover", providing_args=_ARGS)
failback = Signal(name="geofailover_failback", providing_args=_ARGS)
health_changed = Signal(name="geofailover_health_changed", providing_args=_ARGS | {"endpoint", "old", "new"})
all_down = Signal(name="geofailover_all_down", providing_args=_ARGS)
recovered = Signal(name="geofailover_recovered", providing_args=_ARGS)

SIGNALS: dict[str, Signal] = {
    "failover": failover,
    "failback": failback,
    "health_changed": health_changed,
    "all_down": all_down,
    "recovered": recovered,
}

_lock = threading.Lock()
_bridged: weakref.WeakSet[FailoverEngine] = weakref.WeakSet()


def bridge(engine: FailoverEngine) -> None:
    """Relay ``engine``'s events to the signals above (once per engine; idempotent).

    Called by the transport and the result backend when they obtain their
    engine, so the signals work whichever of them a process uses. The
    subscription survives ``fork()`` with the engine.
    """
    with _lock:
        if engine in _bridged:
            return
        _bridged.add(engine)
    ref = weakref.ref(engine)

    def relay(event: GeoEvent) -> None:
        signal = SIGNALS.get(event.kind)
        current = ref()
        if signal is None or current is None:
            return
        extra: dict[str, Any] = {}
        if isinstance(event, HealthChangedEvent):
            extra = {"endpoint": event.endpoint, "old": event.old, "new": event.new}
        signal.send(
            sender=current.name, event=event, engine=current, from_endpoint=event.from_endpoint,
            to_endpoint=event.to_endpoint, reason=event.reason, detail=event.detail, **extra,
        )

    engine.on("*", relay)


def _after_fork() -> None:
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)
