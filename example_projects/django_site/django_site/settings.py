"""Settings of the geofailover example site: a page-view counter in a failover
cache, an async view and a WebSocket lobby on a failover channel layer.

The two Redis endpoints come from ``GEOFAILOVER_URL`` (complete URLs separated
by ``;``, each with our ``name`` and ``weight`` query keys). The default is two
local servers on ports 6379 (primary) and 6380 (secondary); see README.md.
"""

from __future__ import annotations

import os

DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "geofailover_django",  # system checks and `manage.py geofailover`
    "pageviews",
]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "django_site.urls"
WSGI_APPLICATION = "django_site.wsgi.application"
ASGI_APPLICATION = "django_site.asgi.application"  # daphne django_site.asgi:application
DATABASES: dict[str, dict[str, str]] = {}  # the example needs no database
USE_TZ = True

GEOFAILOVER_URL = os.environ.get(
    "GEOFAILOVER_URL",
    "redis://127.0.0.1:6379/0?name=primary&weight=2;redis://127.0.0.1:6380/0?name=secondary&weight=1",
)

GEOFAILOVER = {
    "probe_interval": 1.0,
    # Short so the walkthrough shows the failback quickly; use more in production.
    "failback_grace_period": 5.0,
    "app_label": "example-web",
}

CACHES = {
    "default": {
        "BACKEND": "geofailover_django.cache.GeoFailoverCache",
        # A list of URLs works too; one ';' string is handy in an environment variable.
        "LOCATION": GEOFAILOVER_URL,
        "OPTIONS": {
            # A cache should never take the site down: when every region is
            # down, cache calls return their defaults (logged once per outage).
            "IGNORE_EXCEPTIONS": True,
            "GEOFAILOVER": GEOFAILOVER,
        },
    }
}

# The WebSocket lobby's channel layer: the same endpoints and options under the
# cache's engine name, so the cache and the layer share one engine (one health
# monitor, one decision) and `manage.py geofailover` moves both.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "geofailover_django.channels.GeoFailoverChannelLayer",
        "CONFIG": {"hosts": GEOFAILOVER_URL, "GEOFAILOVER": {**GEOFAILOVER, "name": "django.default"}},
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "geofailover": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "pageviews": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
