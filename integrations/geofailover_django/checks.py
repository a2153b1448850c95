"""System checks: ``manage.py check`` validates every geofailover cache.

The findings are :func:`geofailover_django.conf.parse`'s (ids listed in
docs/django.md). The checks are registered when this module is imported: by
``AppConfig.ready()``, and by the cache backend module, so a project that uses
the backend without the app still gets them once the backend was imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.core import checks

from .conf import geofailover_aliases, parse, problem, where

APP_NAME = "geofailover_django"


@checks.register(checks.Tags.caches)
def check_geofailover_caches(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Validate every cache whose BACKEND is GeoFailoverCache (or a subclass)."""
    messages: list[checks.CheckMessage] = []
    seen: dict[str, tuple[str, tuple[Any, ...]]] = {}
    for alias in geofailover_aliases():
        entry = settings.CACHES[alias]
        parsed, problems = parse(alias, entry.get("LOCATION", ""), {k: v for k, v in entry.items() if k not in ("BACKEND", "LOCATION")})
        messages += problems
        if parsed is None:
            continue
        name, fingerprint = parsed.config.name, parsed.config.fingerprint()
        if name in seen and seen[name][1] != fingerprint:
            messages.append(problem(
                "E011", f"{where(alias)} and {where(seen[name][0])} both use the geofailover engine name {name!r} with different endpoints or options",
                "give each cache its own OPTIONS['GEOFAILOVER']['name'], or make their settings identical to share one engine", where(alias),
            ))
        seen.setdefault(name, (alias, fingerprint))
    return messages


@checks.register(checks.Tags.caches)
def check_app_installed(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The cache works without the app, but ``manage.py geofailover`` needs it."""
    aliases = geofailover_aliases()
    if not aliases or apps.is_installed(APP_NAME):
        return []
    return [problem(
        "W001", f"{where(aliases[0])} uses a geofailover backend but {APP_NAME!r} is not in INSTALLED_APPS",
        f"add {APP_NAME!r} to INSTALLED_APPS: without it `manage.py geofailover` (status, failover, failback, pin, unpin, "
        "check) is unknown and these checks only run once the backend has been imported", where(aliases[0]),
    )]
