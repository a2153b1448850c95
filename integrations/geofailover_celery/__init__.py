"""geofailover for Celery: a failover-aware broker transport and result backend.

Importing this package registers the ``geofailover`` URL scheme with kombu
(``TRANSPORT_ALIASES``) and Celery (``BACKEND_ALIASES``)::

    import geofailover_celery  # noqa: F401  (in the module that defines the Celery app)

    app.conf.broker_url = "geofailover://us:6379/0?name=us-east&weight=2;geofailover://eu:6379/0?name=eu-west&weight=1"
    app.conf.result_backend = "geofailover://us:6379/1?name=us-east&weight=2;geofailover://eu:6379/1?name=eu-west&weight=1"
    app.conf.broker_transport_options = {"visibility_timeout": 300, "geofailover": {"failback_grace_period": 30}}

Without the import, ``broker_transport = "geofailover_celery.transport:Transport"``
and ``result_backend = "geofailover_celery.backend:GeoFailoverBackend+geofailover://..."``
work too (and the ``celery.result_backends`` entry point, when installed, makes the
bare backend URL work).

A thin adapter: the core (:mod:`geofailover_core`) decides where traffic
goes; :mod:`.transport` and :mod:`.backend` map kombu channels and Celery
results onto it, :mod:`.signals` turns its events into Celery signals. See
``docs/celery.md`` for the design and its trade-offs.
"""

from __future__ import annotations

from typing import Any

from celery.app import backends as _celery_backends  # type: ignore[import-untyped]
from celery.signals import worker_process_init  # type: ignore[import-untyped]
from kombu import transport as _kombu_transports

from geofailover_core import registry

from . import signals
from .settings import ADAPTER_DEFAULTS, SCHEME

TRANSPORT = "geofailover_celery.transport:Transport"
BACKEND = "geofailover_celery.backend:GeoFailoverBackend"


def register() -> None:
    """Register the ``geofailover`` scheme with kombu and Celery (done on import; idempotent)."""
    _kombu_transports.TRANSPORT_ALIASES[SCHEME] = TRANSPORT
    _celery_backends.BACKEND_ALIASES[SCHEME] = BACKEND


def _rearm_engines_in_child(**_: Any) -> None:
    """A prefork child starts with the parent's engines and no threads.

    The core re-arms them lazily on first use (``os.register_at_fork``);
    starting them here, before the first task, means the child's health
    view is live when it stores its first result.
    """
    for engine in registry.engines():
        engine.start()


worker_process_init.connect(_rearm_engines_in_child, weak=False)
register()

__all__ = ["ADAPTER_DEFAULTS", "BACKEND", "SCHEME", "TRANSPORT", "register", "signals"]
