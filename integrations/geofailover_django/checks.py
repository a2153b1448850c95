"""System checks: ``manage.py check`` validates every geofailover cache.

Each finding names the setting (``obj="CACHES['default']"``), says what is
wrong and, in the hint, how to fix it. The checks are registered when this
module is imported: by ``AppConfig.ready()`` when the app is installed, and
by the cache backend module otherwise (so a project that uses the backend
without the app still gets them whenever the backend was imported first).

=====================  ==================================================================
Id                     Finding
=====================  ==================================================================
geofailover.E001       an engine option has an invalid value (weight <= 0, negative interval...)
geofailover.E002       no endpoints, or LOCATION is not a list / ';' string
geofailover.E003       an endpoint URL is not a valid redis://, rediss:// or unix:// URL
geofailover.E004       two endpoints have the same name
geofailover.E005       unknown key in OPTIONS['GEOFAILOVER']
geofailover.E006       unknown OPTIONS key that looks like a typo of a known one
geofailover.E007       CLIENT_CLASS is not GeoFailoverClient (or a subclass)
geofailover.E008       CONNECTION_FACTORY is not GeoFailoverConnectionFactory (or a subclass)
geofailover.E009       CONNECTION_POOL_CLASS, REDIS_CLIENT_CLASS or PARSER_CLASS unusable
geofailover.E010       django-redis Sentinel options on a geofailover cache
geofailover.E011       two aliases share an engine name with different endpoints or options
geofailover.E012       a setting is given twice (LOCATION and GEOFAILOVER endpoints, timeouts)
geofailover.E013       unsupported CONNECTION_POOL_KWARGS / REDIS_CLIENT_KWARGS
geofailover.E014       OPTIONS (or a dict inside it) is not a dict
geofailover.E015       decode_responses=True, which breaks django-redis's serializers
geofailover.W001       geofailover_django is not in INSTALLED_APPS (no ``manage.py geofailover``)
geofailover.W002       a single endpoint: nothing to fail over to
geofailover.W004       CLOSE_CONNECTION=True closes the shared pool's idle sockets every request
geofailover.W005       an OPTIONS key neither django-redis nor geofailover reads
geofailover.W006       REPLICA_READ_ONLY has no effect
=====================  ==================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.core import checks

from .conf import Problem, geofailover_aliases, parse, where

APP_NAME = "geofailover_django"


def _as_message(problem: Problem, alias: str) -> checks.CheckMessage:
    cls = checks.Error if problem.is_error else checks.Warning
    return cls(problem.msg, hint=problem.hint, obj=where(alias), id=problem.id)


@checks.register(checks.Tags.caches)
def check_geofailover_caches(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Validate every cache whose BACKEND is GeoFailoverCache (or a subclass)."""
    messages: list[checks.CheckMessage] = []
    seen: dict[str, tuple[str, tuple[Any, ...]]] = {}
    for alias in geofailover_aliases():
        entry = dict(settings.CACHES[alias])
        location = entry.pop("LOCATION", "")
        entry.pop("BACKEND", None)
        parsed, problems = parse(alias, location, entry)
        messages.extend(_as_message(p, alias) for p in problems)
        if parsed is None:
            continue
        name = parsed.engine_name
        fingerprint = parsed.config.fingerprint()
        if name in seen and seen[name][1] != fingerprint:
            messages.append(
                checks.Error(
                    f"{where(alias)} and {where(seen[name][0])} both use the geofailover engine name {name!r} "
                    "with different endpoints or options",
                    hint="give each cache its own OPTIONS['GEOFAILOVER']['name'], or make their settings identical "
                    "to share one engine",
                    obj=where(alias),
                    id="geofailover.E011",
                )
            )
        seen.setdefault(name, (alias, fingerprint))
    return messages


@checks.register(checks.Tags.caches)
def check_app_installed(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The cache works without the app, but ``manage.py geofailover`` needs it."""
    aliases = geofailover_aliases()
    if not aliases or apps.is_installed(APP_NAME):
        return []
    return [
        checks.Warning(
            f"{where(aliases[0])} uses a geofailover backend but {APP_NAME!r} is not in INSTALLED_APPS",
            hint=f"add {APP_NAME!r} to INSTALLED_APPS: without it `manage.py geofailover` (status, failover, "
            "failback, pin, unpin, check) is unknown and these checks only run once the backend has been imported",
            obj=where(aliases[0]),
            id="geofailover.W001",
        )
    ]
