"""Readiness view (``geofailover_django.urls``): 200 while every selected cache
(``?cache=ALIAS``, repeatable; default all) has an active endpoint, 503 when
one has all endpoints down, so a load balancer takes the instance out of
rotation only when the cache really cannot serve. The body names endpoints,
never URLs, hosts or passwords: readiness endpoints are often reachable from
outside.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from .cache import geofailover_cache
from .conf import geofailover_aliases

#: Per-endpoint fields that are safe to publish.
_ENDPOINT_FIELDS = ("name", "weight", "active", "health", "breaker", "latency_ms")


def cache_health(alias: str) -> dict[str, Any]:
    """Readiness of one cache: ``{"serving": bool, "active": name, "endpoints": [...]}``."""
    try:
        engine = geofailover_cache(alias).geofailover
    except ImproperlyConfigured:
        return {"serving": False, "error": "misconfigured (run manage.py check)", "active": None, "endpoints": []}
    engine.start()  # a process that never used the cache yet still reports live health
    status = engine.status()
    return {
        "serving": status["active"] is not None,
        "active": status["active"],
        "engine": status["name"],
        "hold": None if status["hold"] is None else {"endpoint": status["hold"]["endpoint"], "pinned": status["hold"]["pinned"]},
        "endpoints": [{k: ep.get(k) for k in _ENDPOINT_FIELDS} for ep in status["endpoints"]],
    }


@never_cache
@require_safe
def health(request: HttpRequest) -> JsonResponse:
    """200 while every selected geofailover cache serves, 503 otherwise."""
    known = geofailover_aliases()
    wanted = request.GET.getlist("cache") or known
    unknown = [alias for alias in wanted if alias not in known]
    if unknown:
        return JsonResponse({"status": "error", "error": f"not a geofailover cache: {', '.join(sorted(unknown))}"}, status=404)
    report = {alias: cache_health(alias) for alias in wanted}
    serving = all(entry["serving"] for entry in report.values())
    return JsonResponse({"status": "ok" if serving else "unavailable", "caches": report}, status=200 if serving else 503)
