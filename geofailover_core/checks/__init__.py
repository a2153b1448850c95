"""Health checks beyond PING, for real deployments.

* :class:`RestAvailabilityHealthCheck`: Redis Software (Redis Enterprise)
  database availability, optionally lag-aware, over the cluster REST API.
* :class:`ReplicationLagHealthCheck`: lag of a self-managed replica behind its
  primary, from replication offsets and/or a heartbeat key.

Both use the engine's :class:`~geofailover_core.health.HealthResult`, like any
custom check, and can be configured from plain settings dicts::

    {"class": "geofailover_core.checks.RestAvailabilityHealthCheck",
     "url": "https://cluster.example.com:9443", "username": "...", "password": "..."}

See ``docs/health-checks.md`` for every option and the Django/Flask forms.
"""

from __future__ import annotations

from ..health import CHECK_MODES, FAILBACK_ONLY, HEALTH
from .replication import ReplicationLagHealthCheck
from .rest import DEFAULT_LAG_TOLERANCE_MS, DEFAULT_REST_PORT, RestAvailabilityHealthCheck, match_databases

__all__ = [
    "CHECK_MODES",
    "DEFAULT_LAG_TOLERANCE_MS",
    "DEFAULT_REST_PORT",
    "FAILBACK_ONLY",
    "HEALTH",
    "ReplicationLagHealthCheck",
    "RestAvailabilityHealthCheck",
    "match_databases",
]
