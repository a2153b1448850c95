"""geofailover core: client-side geographic failover across Redis endpoints.

Framework-agnostic. :class:`FailoverRedis` is a real ``redis.Redis`` whose
pool follows the best healthy endpoint; :mod:`.registry` keeps one
:class:`FailoverEngine` per configuration name per process.
"""

from __future__ import annotations

from .client import FailoverPipeline, FailoverPubSub, FailoverRedis
from .config import EndpointConfig, FailoverConfig
from .defaults import DEFAULTS
from .engine import FailoverEngine
from .errors import (
    ConfigurationError,
    GeoFailoverError,
    NoHealthyEndpointError,
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

__version__ = "0.1.0"

__all__ = [
    "DEFAULTS",
    "AllDownEvent",
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
    "UnhealthyEndpointError",
    "UnknownEndpointError",
    "__version__",
    "close_all",
    "get_engine",
    "lookup",
]
