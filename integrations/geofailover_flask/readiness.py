"""Optional readiness endpoint: 200 while every instance has a serving endpoint, else 503.

A load balancer or Kubernetes probe then takes the process out of rotation
while *no* region can serve, not because one region failed over: that is
when the app should keep serving. Probes may be reachable from outside, so
the body names endpoints, health and breaker state only (no URLs, hosts or
error texts). It reads what the health monitor keeps and does no Redis I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from .state import states


def _report(names: Sequence[str] | None) -> tuple[bool, dict[str, Any]]:
    found = states(current_app)
    selected = list(names) if names else list(found)
    instances: dict[str, Any] = {}
    for name in selected:
        state = found.get(name)
        if state is None:
            instances[name] = {"ready": False, "error": "not initialised on this app"}
            continue
        state.engine.start()  # lazily started engines start probing now
        status = state.engine.status()
        instances[name] = {
            "ready": status["active"] is not None,
            "active": status["active"],
            "endpoints": [{key: ep[key] for key in ("name", "active", "health", "breaker")} for ep in status["endpoints"]],
        }
    ready = bool(instances) and all(item["ready"] for item in instances.values())
    return ready, instances


def readiness_blueprint(path: str = "/readyz", *, names: Sequence[str] | None = None, blueprint_name: str = "geofailover_readiness") -> Blueprint:
    """A blueprint serving ``GET path``: ``{"ready": bool, "instances": {...}}``,
    status 200 when ready, 503 otherwise. ``names`` restricts it to some
    ``GeoFailover`` instances (default: all initialised on the app)."""
    blueprint = Blueprint(blueprint_name, __name__)
    selected = tuple(names) if names else None

    @blueprint.get(path)
    def readiness() -> tuple[Response, int]:
        ready, instances = _report(selected)
        response = jsonify(ready=ready, instances=instances)
        response.headers["Cache-Control"] = "no-store"
        return response, 200 if ready else 503

    return blueprint
