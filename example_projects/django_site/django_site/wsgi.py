"""WSGI entry point (``gunicorn --preload django_site.wsgi`` is fork-safe)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")

application = get_wsgi_application()
