"""Django integration of geofailover: a failover-aware django-redis cache backend.

* ``geofailover_django.cache.GeoFailoverCache``: the ``CACHES`` backend;
* ``geofailover_django.signals``: ``failover``, ``failback``, ``health_changed``,
  ``all_down``, ``recovered``;
* ``geofailover_django.views.health`` (``geofailover_django.urls``): readiness view;
* ``manage.py geofailover``: status and fleet-wide control (app in INSTALLED_APPS);
* system checks for every setting.

See docs/django.md. Importing this package imports nothing from Django, so it
is safe to name in settings before Django is configured.
"""

from __future__ import annotations

__all__: list[str] = []
