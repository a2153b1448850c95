"""URLs: the counter page and the readiness probe."""

from __future__ import annotations

from django.urls import include, path
from pageviews import views

urlpatterns = [
    path("", views.index, name="index"),
    path("geofailover/", include("geofailover_django.urls")),  # /geofailover/health/
]
