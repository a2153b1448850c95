"""Django app: system checks and ``manage.py geofailover``.

The cache backend works without the app; installing it adds the management
command and registers the system checks at start-up.
"""

from __future__ import annotations

from django.apps import AppConfig


class GeoFailoverDjangoConfig(AppConfig):
    name = "geofailover_django"
    label = "geofailover_django"
    verbose_name = "geofailover (Redis geographic failover)"

    def ready(self) -> None:
        from . import checks  # noqa: F401 - registers the system checks
