"""Optional readiness endpoint: 200 while every instance has a serving endpoint, else 503.

``app.register_blueprint(readiness_blueprint())`` adds ``GET /readyz``. A load
balancer or Kubernetes readiness probe then takes the process out of rotation
while *no* region can serve (all down), and not merely because one region
failed over: a failover is exactly the situation in which the app should
keep serving.

The body names endpoints, their health and breaker state only. It is meant
for probes that may be reachable from outside, so it carries neither URLs
(hosts are infrastructure detail, passwords are secrets) nor error texts.
It reads state the health monitor already keeps and does no Redis I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from .extension import states


def _report(names: Sequence[str] | None) -> tuple[bool, dict[str, Any]]:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    found = states(app)
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
            "endpoints": [
                {"name": ep["name"], "active": ep["active"], "health": ep["health"], "breaker": ep["breaker"]}
                for ep in status["endpoints"]
            ],
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
