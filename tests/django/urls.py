"""URLs of the Django test project: a page-view counter, a session counter, the readiness view."""

from __future__ import annotations

from django.core.cache import caches
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path


def count(request: HttpRequest) -> HttpResponse:
    """Count page views in the cache (the cache's contents may be lost in a failover, the request never fails)."""
    cache = caches["default"]
    cache.add("views", 0, timeout=None)
    views = cache.incr("views", ignore_key_check=True)
    return JsonResponse({"views": views, "endpoint": cache.geofailover.active})


def session_view(request: HttpRequest) -> HttpResponse:
    request.session["n"] = request.session.get("n", 0) + 1
    return JsonResponse({"n": request.session["n"]})


urlpatterns = [
    path("count/", count),
    path("session/", session_view),
    path("geofailover/", include("geofailover_django.urls")),
]
