"""URLs: the counter page, its async twin and the readiness probe."""

from __future__ import annotations

from django.urls import include, path
from pageviews import views

urlpatterns = [
    path("", views.index, name="index"),
    path("async/", views.visit, name="visit"),
    path("geofailover/", include("geofailover_django.urls")),  # /geofailover/health/
]
