"""``path("geofailover/", include("geofailover_django.urls"))`` adds ``health/``."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "geofailover"

urlpatterns = [
    path("health/", views.health, name="health"),
]
