"""What each ``GeoFailover`` instance keeps per app: ``app.extensions["geofailover"][name]``.

Nothing app-specific is stored on the extension object, so one
``GeoFailover()`` serves any number of apps (an app factory called once per
test, ``DispatcherMiddleware``...); the CLI and the readiness view find the
instances of the current app here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask

from geofailover_core.client import FailoverRedis
from geofailover_core.config import FailoverConfig
from geofailover_core.engine import FailoverEngine
from geofailover_core.pool import failover_pool

EXTENSION_KEY = "geofailover"


@dataclass(frozen=True)
class GeoFailoverState:
    """What one ``GeoFailover`` instance keeps for one app."""

    name: str
    engine: FailoverEngine
    client: FailoverRedis
    config: FailoverConfig
    pool_options: dict[str, Any]


def client_for(engine: FailoverEngine, pool_options: dict[str, Any], **client_options: Any) -> FailoverRedis:
    """A ``FailoverRedis`` on a pool of its own: each app, cache and ``make_client`` sizes and encodes its own."""
    return FailoverRedis(connection_pool=failover_pool(engine, **pool_options, **client_options))


def states(app: Flask) -> dict[str, GeoFailoverState]:
    """Every ``GeoFailover`` instance initialised on ``app``, by name, in init order."""
    found = app.extensions.get(EXTENSION_KEY)
    return found if isinstance(found, dict) else {}
