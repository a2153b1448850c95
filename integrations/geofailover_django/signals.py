"""Django signals for failover events ("custom actions"; examples in docs/django.md).

Each signal is sent with ``sender`` = the cache backend class and the keyword
arguments ``alias`` (the ``CACHES`` alias whose engine switched; ``None`` for
a backend built by hand) and ``event`` (the core's frozen event dataclass:
endpoint *names*, never URLs or passwords). Each switch sends one signal per
alias using the engine, with ``send_robust`` on the engine's event thread
(see :mod:`geofailover_django.binding`), so a slow or raising receiver
delays no request and stops no other receiver.
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
