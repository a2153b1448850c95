"""``check``: run every health check once and say what it means, with an exit code."""

from __future__ import annotations

from typing import Any

from ..engine import FailoverEngine
from ..health import HealthStatus


def check(engine: FailoverEngine) -> tuple[int, dict[str, Any]]:
    """Run every health check once. Exit code 0 = every endpoint healthy,
    1 = degraded (some unhealthy, one serves), 2 = none healthy; plus the report."""
    finished = engine.check_now()
    status = engine.status()
    endpoints = [
        {k: e[k] for k in ("name", "url", "weight", "active", "health", "health_detail", "breaker", "latency_ms")}
        for e in status["endpoints"]
    ]
    healthy = [e["name"] for e in endpoints if e["health"] == HealthStatus.HEALTHY]
    bad = [e for e in endpoints if e["health"] != HealthStatus.HEALTHY]
    if not healthy:
        code, state = 2, "down"
        summary = "no endpoint is healthy: " + "; ".join(f"{e['name']} {e['health']} ({e['health_detail'] or 'no detail'})" for e in bad)
    elif bad:
        code, state = 1, "degraded"
        summary = (
            "; ".join(f"{e['name']} {e['health']} ({e['health_detail'] or 'no detail'})" for e in bad)
            + f"; traffic can use {', '.join(healthy)}"
        )
    else:
        code, state = 0, "ok"
        summary = f"all {len(endpoints)} endpoints healthy"
    if not finished:
        summary += " (the probe round did not finish in time: results are partial)"
    report = {
        "name": engine.name,
        "code": code,
        "state": state,
        "summary": summary,
        "active": status["active"],
        "endpoints": endpoints,
    }
    return code, report


__all__ = ["check"]
