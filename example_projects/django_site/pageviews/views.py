"""The example's pages: a view counter kept in the failover cache, and its async twin."""

from __future__ import annotations

import datetime

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse


def index(request: HttpRequest) -> HttpResponse:
    # incr(..., ignore_key_check=True) is django-redis's atomic "create or add".
    views = cache.incr("page_views", ignore_key_check=True)
    endpoint = cache.geofailover.active  # type: ignore[attr-defined]
    body = {"page_views": views, "served_by": endpoint}
    if request.GET.get("format") == "json":
        return JsonResponse(body)
    if views is None:  # every region down: IGNORE_EXCEPTIONS returned the default
        return HttpResponse("This page works, but no Redis region is reachable right now: nothing was counted.\n")
    return HttpResponse(f"This page has been viewed {views} time(s) (counted on Redis region '{endpoint}').\n")


async def visit(request: HttpRequest) -> JsonResponse:
    """The async view (served natively under daphne/uvicorn): aget/aset/aincr talk to
    Redis on the event loop, through the same engine as the sync page."""
    previous = await cache.aget("last_async_visit")
    await cache.aset("last_async_visit", datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
    views = await cache.aincr("page_views", ignore_key_check=True)
    return JsonResponse({"page_views": views, "previous_visit": previous, "served_by": cache.geofailover.active})  # type: ignore[attr-defined]
