"""geofailover core: client-side geographic failover across Redis endpoints.

Framework-agnostic. :class:`FailoverRedis` is a real ``redis.Redis`` whose
pool follows the best healthy endpoint; :mod:`.registry` keeps one
:class:`FailoverEngine` per configuration name per process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import FailoverPipeline, FailoverPubSub, FailoverRedis
    from .config import EndpointConfig, FailoverConfig
    from .defaults import DEFAULTS
    from .engine import FailoverEngine
    from .errors import (
        AllEndpointsTimedOutError,
        ConfigurationError,
        GeoFailoverError,
        NoHealthyEndpointError,
        ReplyLostError,
        UnhealthyEndpointError,
        UnknownEndpointError,
    )
    from .events import (
        AllDownEvent,
        FailbackEvent,
        FailoverEvent,
        GeoEvent,
        HealthChangedEvent,
        Reason,
        RecoveredEvent,
    )
    from .health import CallableHealthCheck, HealthCheck, HealthResult, HealthStatus, PingHealthCheck, ProbeContext
    from .pool import FailoverBlockingConnectionPool, FailoverConnectionPool
    from .registry import close_all, get_engine, lookup

# Imported on first use: the pytest plugin lives under this package and is
# loaded by every pytest run of a project that installs geofailover, so
# importing the package must not import redis-py and the client eagerly.
_LAZY = {
    "FailoverPipeline": "client",
    "FailoverPubSub": "client",
    "FailoverRedis": "client",
    "EndpointConfig": "config",
    "FailoverConfig": "config",
    "DEFAULTS": "defaults",
    "FailoverEngine": "engine",
    "AllEndpointsTimedOutError": "errors",
    "ConfigurationError": "errors",
    "GeoFailoverError": "errors",
    "NoHealthyEndpointError": "errors",
    "ReplyLostError": "errors",
    "UnhealthyEndpointError": "errors",
    "UnknownEndpointError": "errors",
    "AllDownEvent": "events",
    "FailbackEvent": "events",
    "FailoverEvent": "events",
    "GeoEvent": "events",
    "HealthChangedEvent": "events",
    "Reason": "events",
    "RecoveredEvent": "events",
    "CallableHealthCheck": "health",
    "HealthCheck": "health",
    "HealthResult": "health",
    "HealthStatus": "health",
    "PingHealthCheck": "health",
    "ProbeContext": "health",
    "FailoverBlockingConnectionPool": "pool",
    "FailoverConnectionPool": "pool",
    "close_all": "registry",
    "get_engine": "registry",
    "lookup": "registry",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'geofailover_core' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "DEFAULTS",
    "AllDownEvent",
    "AllEndpointsTimedOutError",
    "CallableHealthCheck",
    "ConfigurationError",
    "EndpointConfig",
    "FailbackEvent",
    "FailoverBlockingConnectionPool",
    "FailoverConfig",
    "FailoverConnectionPool",
    "FailoverEngine",
    "FailoverEvent",
    "FailoverPipeline",
    "FailoverPubSub",
    "FailoverRedis",
    "GeoEvent",
    "GeoFailoverError",
    "HealthChangedEvent",
    "HealthCheck",
    "HealthResult",
    "HealthStatus",
    "NoHealthyEndpointError",
    "PingHealthCheck",
    "ProbeContext",
    "Reason",
    "RecoveredEvent",
    "ReplyLostError",
    "UnhealthyEndpointError",
    "UnknownEndpointError",
    "__version__",
    "close_all",
    "get_engine",
    "lookup",
]
