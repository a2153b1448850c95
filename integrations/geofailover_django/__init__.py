"""Django integration of geofailover: a failover-aware django-redis cache backend
(``geofailover_django.cache.GeoFailoverCache``, sync and native async), a
Channels layer (``geofailover_django.channels``), signals, a readiness view,
``manage.py geofailover`` and system checks; see docs/django.md.

Importing this package imports nothing from Django, so it is safe to name in
settings before Django is configured.
"""

from __future__ import annotations

__all__: list[str] = []
