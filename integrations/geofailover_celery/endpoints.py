"""Connections pinned to one named endpoint, and the engine's view of the others.

The core's pools follow the *active* endpoint, which is what publishing and
result writes want. A queue also needs the opposite: acks and restores must
reach the endpoint a message came from, and draining or a result fallback
read must reach a *non-active* endpoint on purpose. These helpers build
redis-py connection parameters for one endpoint from the engine's own
configuration (same URL, TLS files, credentials and timeouts as the core
uses), so the adapter never re-parses endpoint settings.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.connection import AbstractConnection
from redis.retry import Retry

from geofailover_core.connection import quiet_connection_defaults
from geofailover_core.engine import FailoverEngine


def connection_params(
    engine: FailoverEngine, endpoint: str, client_options: dict[str, Any] | None = None
) -> tuple[type[AbstractConnection], dict[str, Any]]:
    """redis-py connection class and kwargs for ``endpoint`` of ``engine``.

    Precedence, lowest first: geofailover's quiet defaults, the engine's
    global options, ``client_options`` (e.g. kombu's transport options), the
    endpoint's URL, the endpoint's own options. No redis-py retries: a
    retried command against a dead region is minutes of blocking, and
    retrying on another endpoint is the engine's job.
    """
    base = {**quiet_connection_defaults(), **engine.config.base_connection_options(), **(client_options or {})}
    conn_class, kwargs = engine.config.endpoint(endpoint).connection_params(base)
    kwargs["retry"] = Retry(NoBackoff(), 0)
    return conn_class, kwargs


_lock = threading.Lock()
_clients: dict[tuple[int, str], tuple[FailoverEngine, redis.Redis]] = {}


def endpoint_client(engine: FailoverEngine, endpoint: str) -> redis.Redis:
    """A shared client whose connections always go to ``endpoint``.

    Used for short side operations (a pre-flight PING, fallback reads,
    draining). One small pool per endpoint per process; redis-py's pools
    reset themselves in a forked child.
    """
    key = (id(engine), endpoint)
    with _lock:
        entry = _clients.get(key)
        if entry is not None and entry[0] is engine and not engine.closed:
            return entry[1]
        conn_class, kwargs = connection_params(engine, endpoint)
        kwargs.pop("decode_responses", None)
        pool = redis.ConnectionPool(connection_class=conn_class, max_connections=8, **kwargs)
        client = redis.Redis(connection_pool=pool)
        _clients[key] = (engine, client)
        return client


def forget_clients() -> None:
    """Drop every cached endpoint client (tests, engine shutdown)."""
    with _lock:
        entries = list(_clients.values())
        _clients.clear()
    for _, client in entries:
        client.connection_pool.disconnect()


def endpoint_views(engine: FailoverEngine) -> list[dict[str, Any]]:
    """The engine's per-endpoint snapshot (name, health, breaker, active); no secrets."""
    endpoints: list[dict[str, Any]] = engine.status()["endpoints"]
    return endpoints


def other_endpoints(engine: FailoverEngine, exclude: str | None, *, require_healthy: bool) -> list[str]:
    """Endpoints other than ``exclude`` worth reading from right now.

    ``require_healthy`` (draining: we are about to move data) asks for a
    positive health verdict; otherwise (a read) anything not known to be down.
    """
    names = []
    for ep in endpoint_views(engine):
        if ep["name"] == exclude or ep["breaker"] != "closed":
            continue
        if ep["health"] == "healthy" or (not require_healthy and ep["health"] in ("unknown", "inconclusive")):
            names.append(ep["name"])
    return names


def _after_fork() -> None:
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork)
