"""Turn one ``CACHES`` entry into a validated core configuration.

The backend, the system checks and the management command all call
:func:`parse`, so a setting is judged in one way, with the same words by
``manage.py check`` and at first use. Endpoints and engine options are read
by :mod:`geofailover_core.adapters`; what is left here is django-redis's own
``OPTIONS`` and the check ids. :func:`parse` never raises for a bad setting:
Django's own cache checks build every backend during ``manage.py check``, and
an exception there would hide our findings behind a traceback.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.checks import CheckMessage
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from geofailover_core.adapters import SettingNames, load_config, options_dict, suggest
from geofailover_core.config import FailoverConfig, connection_option_names
from geofailover_core.errors import ConfigurationError

BACKEND_PATH = "geofailover_django.cache.GeoFailoverCache"
CLIENT_PATH = "geofailover_django.client.GeoFailoverClient"
FACTORY_PATH = "geofailover_django.pool.GeoFailoverConnectionFactory"
POOL_PATH = "geofailover_core.pool.FailoverConnectionPool"
REDIS_CLIENT_PATH = "geofailover_core.client.FailoverRedis"
GEOFAILOVER_KEY = "GEOFAILOVER"

#: ``OPTIONS`` keys django-redis (or Django's BaseCache) reads that keep their meaning here.
DJANGO_REDIS_OPTIONS = frozenset({
    "CLIENT_CLASS", "CONNECTION_FACTORY", "CONNECTION_POOL_CLASS", "CONNECTION_POOL_KWARGS", "REDIS_CLIENT_CLASS",
    "REDIS_CLIENT_KWARGS", "SERIALIZER", "COMPRESSOR", "PARSER_CLASS", "PASSWORD", "USERNAME", "SOCKET_TIMEOUT",
    "SOCKET_CONNECT_TIMEOUT", "IGNORE_EXCEPTIONS", "CLOSE_CONNECTION", "PICKLE_VERSION", "MAX_ENTRIES", "CULL_FREQUENCY",
})
NO_EFFECT_OPTIONS = frozenset({"REPLICA_READ_ONLY"})  # django-redis's primary/replica routing
SENTINEL_OPTIONS = frozenset({"SENTINELS", "SENTINEL_KWARGS"})  # a different failover mechanism
KNOWN_OPTIONS = DJANGO_REDIS_OPTIONS | NO_EFFECT_OPTIONS | SENTINEL_OPTIONS | {GEOFAILOVER_KEY}
#: ``REDIS_CLIENT_KWARGS`` a FailoverRedis on a shared pool accepts.
REDIS_CLIENT_KWARGS = frozenset({"single_connection_client"})
#: ``CONNECTION_POOL_KWARGS`` beyond redis-py connection options.
POOL_ONLY_KWARGS = frozenset({"max_connections", "timeout"})
#: The pluggable classes: OPTIONS key, default, required base, check id.
CLASS_OPTIONS = (
    ("CLIENT_CLASS", CLIENT_PATH, CLIENT_PATH, "E007"),
    ("CONNECTION_FACTORY", FACTORY_PATH, FACTORY_PATH, "E008"),
    ("CONNECTION_POOL_CLASS", POOL_PATH, "geofailover_core.pool.FailoverPoolMixin", "E009"),
    ("REDIS_CLIENT_CLASS", REDIS_CLIENT_PATH, REDIS_CLIENT_PATH, "E009"),
    ("PARSER_CLASS", "redis.connection.DefaultParser", "builtins.object", "E009"),
)
#: django-redis timeouts that are engine options here (they apply to probes too).
TIMEOUT_OPTIONS = (("SOCKET_TIMEOUT", "socket_timeout"), ("SOCKET_CONNECT_TIMEOUT", "socket_connect_timeout"))


@dataclass(frozen=True)
class CacheSettings:
    """The validated settings of one geofailover cache."""

    alias: str | None
    config: FailoverConfig
    client_class: type[Any]  # the other classes and kwargs django-redis reads from OPTIONS itself
    pool_kwargs: dict[str, Any]  # CONNECTION_POOL_KWARGS, for the async clients' pools


def problem(check: str, msg: str, hint: str, at: str | None = None) -> CheckMessage:
    """The system-check message ``geofailover.<check>`` (``E...`` an error, ``W...`` a warning)."""
    return CheckMessage(checks.ERROR if check.startswith("E") else checks.WARNING, msg, hint, at, f"geofailover.{check}")


def where(alias: str | None) -> str:
    """How a check names the setting: ``CACHES['default']``."""
    return f"CACHES[{alias!r}]" if alias is not None else "CACHES[?]"


def default_engine_name(alias: str | None) -> str:
    """``django.<alias>``: not taken for a Celery or Flask configuration named
    ``default`` in the same process; every process with these settings derives
    it, which ties them into one fleet for ``manage.py geofailover``."""
    return f"django.{alias}" if alias is not None else "django"


def _from_core(exc: ConfigurationError, names: SettingNames) -> CheckMessage:
    """A core ConfigurationError (already addressed to the Django setting) as a check."""
    rest = exc.setting[len(names.endpoints):] if exc.setting.startswith(names.endpoints) else None
    if exc.problem == "duplicate endpoint name":
        check = "E004"
    elif exc.problem == "endpoints are given in both places":
        check = "E012"
    elif rest == "":
        check = "E002"
    elif rest is not None:  # one endpoint: its URL, or the endpoint as a whole
        check = "E003" if ".url" in rest or rest.endswith("]") else "E001"
    else:
        check = "E005" if exc.problem == "unknown option" else "E001"
    return problem(check, f"{exc.setting}: {exc.problem}", exc.fix)


def _option_problems(at: str, options: Mapping[str, Any]) -> list[CheckMessage]:
    """Django-redis ``OPTIONS`` keys that are unknown, or mean something else here."""
    problems: list[CheckMessage] = []
    for key in options:
        if key not in KNOWN_OPTIONS:
            # A strict cutoff: a serializer or compressor may read options of its own.
            close = difflib.get_close_matches(str(key), sorted(KNOWN_OPTIONS), n=1, cutoff=0.75)
            problems.append(
                problem("E006", f"{at}['OPTIONS'] has unknown option {key!r}", f"did you mean {close[0]!r}?") if close
                else problem("W005", f"{at}['OPTIONS'] has option {key!r}, which neither django-redis nor geofailover reads",
                             "remove it, or silence geofailover.W005 if your serializer or compressor reads it")
            )
    problems += [
        problem("E010", f"{at}['OPTIONS'][{key!r}] is a django-redis Sentinel option",
                "geofailover and Sentinel are two different failover mechanisms: list the endpoints in LOCATION and remove "
                "SENTINELS/SENTINEL_KWARGS (or use django_redis.client.SentinelClient instead of this backend)")
        for key in sorted(SENTINEL_OPTIONS & set(options))
    ] + [
        problem("W006", f"{at}['OPTIONS'][{key!r}] has no effect",
                "several LOCATIONs are failover members that serve one at a time, never primary and replicas; remove the option")
        for key in sorted(NO_EFFECT_OPTIONS & set(options))
    ]
    if options.get("CLOSE_CONNECTION"):
        problems.append(problem(
            "W004", f"{at}['OPTIONS']['CLOSE_CONNECTION'] is True: idle connections of the shared failover pool are closed after every request",
            "remove it unless you need it; every request then pays a new TCP (and TLS) handshake",
        ))
    return problems


def _kwargs_problems(at: str, pool_kwargs: Mapping[str, Any], client_kwargs: Mapping[str, Any]) -> list[CheckMessage]:
    problems: list[CheckMessage] = []
    known_pool = connection_option_names() | POOL_ONLY_KWARGS
    for key in pool_kwargs:
        if key in ("host", "port", "path", "url", "db", "password", "username"):
            problems.append(problem("E013", f"{at}['OPTIONS']['CONNECTION_POOL_KWARGS'][{key!r}] would override every endpoint's address or credentials", "put it in each endpoint's URL in LOCATION"))
        elif key not in known_pool:
            problems.append(problem("E013", f"{at}['OPTIONS']['CONNECTION_POOL_KWARGS'] has unknown option {key!r}",
                                    suggest(key, known_pool, "use redis-py connection options such as max_connections or health_check_interval")))
    problems += [
        problem("E013", f"{at}['OPTIONS']['REDIS_CLIENT_KWARGS'][{key!r}] cannot be applied to a client on the shared failover pool",
                "put connection options in OPTIONS['GEOFAILOVER'] (all endpoints) or CONNECTION_POOL_KWARGS")
        for key in client_kwargs if key not in REDIS_CLIENT_KWARGS
    ]
    return problems


def _import_class(at: str, options: Mapping[str, Any], key: str, default: str, base_path: str, check: str) -> type[Any] | CheckMessage:
    """``OPTIONS[key]`` (or the default), imported and checked to subclass ``base_path``."""
    path = options.get(key, default)
    base: type[Any] = import_string(base_path)
    setting = f"{at}['OPTIONS'][{key!r}]"
    if isinstance(path, type) and issubclass(path, base):
        return path
    if not isinstance(path, str):
        return problem(check, f"{setting} must be a dotted path string, got {type(path).__name__}", f"write {default!r} or remove the option")
    try:
        cls = import_string(path)
    except ImportError as exc:
        return problem(check, f"{setting} = {path!r} cannot be imported ({exc})", f"fix the dotted path, or remove the option to use {default!r}")
    if isinstance(cls, type) and issubclass(cls, base):
        return cls
    return problem(check, f"{setting} = {path!r} is not a subclass of {base_path}; the cache would not follow failover",
                   f"remove the option (default {default!r}) or subclass {base_path}")


def _config(alias: str | None, location: Any, geo: dict[str, Any], options: Mapping[str, Any], problems: list[CheckMessage]) -> FailoverConfig | None:
    """The engine configuration: LOCATION (or GEOFAILOVER['endpoints']) and GEOFAILOVER, read by the core."""
    at = where(alias)
    endpoints = f"{at}['LOCATION']"
    if not location and "endpoints" in geo:  # the other place endpoints may be listed
        location, endpoints = geo.pop("endpoints"), f"{at}['OPTIONS']['GEOFAILOVER']['endpoints']"
    rename: dict[str, str] = {}
    for dr_key, key in TIMEOUT_OPTIONS:
        if options.get(dr_key) is None:
            continue
        if key in geo and geo[key] != options[dr_key]:
            problems.append(problem("E012", f"{at} sets OPTIONS[{dr_key!r}] = {options[dr_key]!r} and OPTIONS['GEOFAILOVER'][{key!r}] = {geo[key]!r}", "set the timeout in one place"))
            continue
        geo[key], rename[key] = options[dr_key], f"{at}['OPTIONS'][{dr_key!r}]"
    if geo.get("decode_responses"):
        problems.append(problem(
            "E015", f"{at}['OPTIONS']['GEOFAILOVER']['decode_responses'] is True",
            "django-redis stores serialized bytes; remove decode_responses (use get_redis_connection() with your own decoding for raw string access)",
        ))
    names = SettingNames(endpoints, f"{at}['OPTIONS']['GEOFAILOVER']", rename)
    try:
        return load_config(
            location, geo, names, commas=True, defaults={"name": default_engine_name(alias), "app_label": "django"},
            # django-redis applies PASSWORD/USERNAME to every server; so do the health probes here.
            endpoint_defaults={"password": options.get("PASSWORD"), "username": options.get("USERNAME")},
        )
    except ConfigurationError as exc:
        if exc.setting == names.option("name") and "name" not in geo:
            problems.append(problem("E001", f"{at}: the alias cannot be used as a geofailover engine name", "set OPTIONS['GEOFAILOVER']['name'] to letters, digits and . _ : -"))
        else:
            problems.append(_from_core(exc, names))
        return None


def parse(alias: str | None, location: Any, params: Mapping[str, Any]) -> tuple[CacheSettings | None, list[CheckMessage]]:
    """Validate one cache entry; returns the settings (None when any error) and every problem found."""
    at = where(alias)
    options = params.get("OPTIONS") or {}
    if not isinstance(options, Mapping):
        return None, [problem("E014", f"{at}['OPTIONS'] must be a dict, got {type(options).__name__}", "write 'OPTIONS': {...}", at)]
    problems = _option_problems(at, options)
    dicts: dict[str, dict[str, Any]] = {}
    for key in (GEOFAILOVER_KEY, "CONNECTION_POOL_KWARGS", "REDIS_CLIENT_KWARGS"):
        try:
            dicts[key] = options_dict(options.get(key), f"{at}['OPTIONS'][{key!r}]")
        except ConfigurationError as exc:
            dicts[key] = {}
            problems.append(problem("E014", f"{exc.setting}: {exc.problem}", exc.fix))
    problems += _kwargs_problems(at, dicts["CONNECTION_POOL_KWARGS"], dicts["REDIS_CLIENT_KWARGS"])
    classes = [_import_class(at, options, *spec) for spec in CLASS_OPTIONS]
    problems += [c for c in classes if isinstance(c, CheckMessage)]
    config = _config(alias, location, dicts[GEOFAILOVER_KEY], options, problems)
    if config is not None and len(config.endpoints) == 1:
        problems.append(problem("W002", f"{at} has a single endpoint, so there is nothing to fail over to", "add the other regions' URLs to LOCATION"))
    for message in problems:
        message.obj = at
    client_class = classes[0]
    if config is None or not isinstance(client_class, type) or any(p.is_serious() for p in problems):
        return None, problems
    return CacheSettings(alias, config, client_class, dicts["CONNECTION_POOL_KWARGS"]), problems


def require(alias: str | None, location: Any, params: Mapping[str, Any]) -> CacheSettings:
    """:func:`parse`, raising ``ImproperlyConfigured`` with the first error (and its fix)."""
    parsed, problems = parse(alias, location, params)
    if parsed is None:
        errors = [p for p in problems if p.is_serious()]
        also = f" ({len(errors) - 1} more: run manage.py check)" if len(errors) > 1 else ""
        raise ImproperlyConfigured(f"{errors[0].msg}. Fix: {errors[0].hint} [{errors[0].id}]{also}")
    return parsed


# -- which caches are ours -----------------------------------------------------------


@functools.cache
def _is_geofailover_path(backend: str) -> bool:
    """Does the dotted path name GeoFailoverCache or a subclass? Judged by the
    class's ancestry, so that reading settings never imports the backend module
    itself; a path that does not import is not ours (Django reports it)."""
    try:
        cls = import_string(backend)
    except ImportError:
        return False
    return isinstance(cls, type) and any(f"{c.__module__}.{c.__qualname__}" == BACKEND_PATH for c in cls.__mro__)


def is_geofailover_backend(backend: Any) -> bool:
    return isinstance(backend, str) and (backend == BACKEND_PATH or _is_geofailover_path(backend))


def geofailover_aliases() -> list[str]:
    """Aliases in ``settings.CACHES`` served by a geofailover backend, in settings order."""
    caches = getattr(settings, "CACHES", {})
    return [alias for alias, cfg in caches.items() if isinstance(cfg, Mapping) and is_geofailover_backend(cfg.get("BACKEND"))]


def resolve_alias(location: Any, params: Mapping[str, Any]) -> str | None:
    """Which ``settings.CACHES`` alias a backend was built from.

    Django builds a backend as ``backend_cls(location, params)`` without its
    alias, but the alias is what signals report and what names the engine.
    ``params`` is a shallow copy of the settings entry, so its ``OPTIONS``
    dict is the very object in the settings: identity decides, equality is the
    fallback (e.g. a backend built by hand).
    """
    caches = getattr(settings, "CACHES", {})
    candidates = [alias for alias in geofailover_aliases() if caches[alias].get("LOCATION", "") == location]
    options = params.get("OPTIONS")
    for alias in candidates:
        if options is not None and caches[alias].get("OPTIONS") is options:
            return str(alias)
    for alias in candidates:
        cfg = caches[alias]
        if all(cfg.get(k) == v for k, v in params.items()) and all(params.get(k) == v for k, v in cfg.items() if k not in ("BACKEND", "LOCATION")):
            return str(alias)
    return None
