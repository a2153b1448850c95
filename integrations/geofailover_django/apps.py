"""Django app: adds ``manage.py geofailover`` and registers the system checks at
start-up (the cache backend itself works without the app)."""

from __future__ import annotations

from django.apps import AppConfig


class GeoFailoverDjangoConfig(AppConfig):
    name = "geofailover_django"
    label = "geofailover_django"
    verbose_name = "geofailover (Redis geographic failover)"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the system checks
