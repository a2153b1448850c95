from __future__ import annotations

from django.apps import AppConfig


class PageviewsConfig(AppConfig):
    name = "pageviews"

    def ready(self) -> None:
        from . import receivers  # noqa: F401 - connects the geofailover signal receivers
