"""WSGI module for the gunicorn --preload test: the master uses the cache before forking.

It serves the example project, and touches the cache at import time, which
under ``--preload`` happens in the gunicorn master: the workers are forked from
a process whose engine already had a running monitor and open sockets.
"""

from __future__ import annotations

import os

from django.core.cache import cache
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")

application = get_wsgi_application()
cache.set("preloaded-by", os.getpid())  # starts the engine in the master
assert cache.geofailover.monitor.running  # type: ignore[attr-defined]
