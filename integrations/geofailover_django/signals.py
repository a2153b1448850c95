"""Django signals for failover events ("custom actions").

Each signal is sent with ``sender`` = the cache backend class and two
keyword arguments:

* ``alias``: the ``CACHES`` alias whose engine switched (``None`` for a
  backend built by hand outside ``settings.CACHES``);
* ``event``: the core event, a frozen dataclass with ``from_endpoint``,
  ``to_endpoint``, ``reason``, ``detail``, ``timestamp`` (and ``endpoint``,
  ``old``, ``new`` for ``health_changed``). It holds endpoint *names*, never
  URLs or passwords.

Signals are sent with ``send_robust``: a receiver that raises is logged (logger
``geofailover.django``) and the other receivers still run. They run on the
engine's event thread, never on a request thread and never while the engine
holds a lock, so a slow receiver (a pager call) delays no request. Database
connections a receiver opens are closed after each signal.

Connect receivers with module-level functions (Django keeps weak references by
default, so a lambda or a nested function would be garbage collected)::

    # myapp/receivers.py, imported from MyAppConfig.ready()
    from django.dispatch import receiver
    from geofailover_django import signals

    @receiver(signals.failover)
    def page_on_failover(sender, alias, event, **kwargs):
        notify_oncall(f"cache {alias}: {event.from_endpoint} -> {event.to_endpoint} ({event.reason})")

Each switch sends one signal per alias using the engine.
"""

from __future__ import annotations

from django.dispatch import Signal

#: Traffic moved away from ``event.from_endpoint`` (it failed, or an operator moved it).
failover = Signal()
#: Traffic returned to a higher-priority endpoint (automatic after the grace period, or manual).
failback = Signal()
#: An endpoint's health verdict changed (``event.endpoint``, ``event.old`` -> ``event.new``).
health_changed = Signal()
#: No endpoint can serve; cache commands fail fast until one recovers.
all_down = Signal()
#: An endpoint serves again after every endpoint was down.
recovered = Signal()

BY_KIND: dict[str, Signal] = {
    "failover": failover,
    "failback": failback,
    "health_changed": health_changed,
    "all_down": all_down,
    "recovered": recovered,
}

__all__ = ["BY_KIND", "all_down", "failback", "failover", "health_changed", "recovered"]
