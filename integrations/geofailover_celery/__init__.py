"""geofailover for Celery: a failover-aware broker transport and result backend.

Importing the package registers the ``geofailover`` URL scheme with kombu and
Celery (or name the classes: ``broker_transport =`` :data:`TRANSPORT`,
``result_backend = BACKEND + "+geofailover://..."``). The core decides where
traffic goes; this package maps kombu channels and Celery results onto it
(``docs/celery.md``).
"""

from __future__ import annotations

from typing import Any

from geofailover_core.extras import require

require("geofailover_celery", "celery", "celery", "kombu")

from celery.app import backends as _celery_backends  # type: ignore[import-untyped]  # noqa: E402
from celery.signals import worker_process_init  # type: ignore[import-untyped]  # noqa: E402
from kombu import transport as _kombu_transports  # noqa: E402

from geofailover_core import registry  # noqa: E402

from . import signals  # noqa: E402
from .settings import ADAPTER_DEFAULTS, SCHEME  # noqa: E402

TRANSPORT = "geofailover_celery.transport:Transport"
BACKEND = "geofailover_celery.backend:GeoFailoverBackend"


def register() -> None:
    """Register the ``geofailover`` scheme with kombu and Celery (done on import; idempotent)."""
    _kombu_transports.TRANSPORT_ALIASES[SCHEME] = TRANSPORT
    _celery_backends.BACKEND_ALIASES[SCHEME] = BACKEND


def _rearm_engines_in_child(**_: Any) -> None:
    """The core re-arms a forked child's engines on first use; starting them
    before the first task makes a prefork child's health view live when it
    stores its first result."""
    for engine in registry.engines():
        engine.start()


worker_process_init.connect(_rearm_engines_in_child, weak=False)
register()

__all__ = ["ADAPTER_DEFAULTS", "BACKEND", "SCHEME", "TRANSPORT", "register", "signals"]
