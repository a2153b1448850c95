"""Turn one ``CACHES`` entry into a validated core configuration.

This is the only place that reads a geofailover cache's settings. The cache
backend, the system checks and the management command all call
:func:`parse`, so a setting is interpreted in exactly one way and a mistake
is reported with the same words by ``manage.py check`` and at first use.

Nothing here raises for a bad setting: :func:`parse` returns a list of
:class:`Problem` objects, because Django's own cache checks instantiate every
backend while ``manage.py check`` runs, and an exception there would hide our
checks behind a traceback. Callers that need a working configuration use
:func:`require`, which raises ``ImproperlyConfigured`` naming the first error.

What the user writes::

    CACHES = {"default": {
        "BACKEND": "geofailover_django.cache.GeoFailoverCache",
        "LOCATION": ["redis://us:6379/0?name=us-east&weight=2",
                     "redis://eu:6379/0?name=eu-west&weight=1"],  # or one ';' string
        "OPTIONS": {"GEOFAILOVER": {"failback_grace_period": 30}, "IGNORE_EXCEPTIONS": True},
    }}

Several LOCATIONs are failover members, never django-redis's
primary/replica routing: exactly one endpoint serves at a time.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from geofailover_core.config import EndpointConfig, FailoverConfig, connection_option_names
from geofailover_core.errors import ConfigurationError
from geofailover_core.masking import mask_text, mask_url

BACKEND_PATH = "geofailover_django.cache.GeoFailoverCache"
CLIENT_PATH = "geofailover_django.client.GeoFailoverClient"
FACTORY_PATH = "geofailover_django.pool.GeoFailoverConnectionFactory"
POOL_PATH = "geofailover_core.pool.FailoverConnectionPool"
REDIS_CLIENT_PATH = "geofailover_core.client.FailoverRedis"

#: The key inside ``OPTIONS`` that holds the engine options.
GEOFAILOVER_KEY = "GEOFAILOVER"

#: ``OPTIONS`` keys that django-redis (or Django's BaseCache) reads and that
#: keep their meaning with geofailover.
DJANGO_REDIS_OPTIONS = frozenset(
    {
        "CLIENT_CLASS", "CONNECTION_FACTORY", "CONNECTION_POOL_CLASS", "CONNECTION_POOL_KWARGS",
        "REDIS_CLIENT_CLASS", "REDIS_CLIENT_KWARGS", "SERIALIZER", "COMPRESSOR", "PARSER_CLASS",
        "PASSWORD", "USERNAME", "SOCKET_TIMEOUT", "SOCKET_CONNECT_TIMEOUT", "IGNORE_EXCEPTIONS",
        "CLOSE_CONNECTION", "PICKLE_VERSION", "MAX_ENTRIES", "CULL_FREQUENCY",
    }
)
#: Options that only make sense for django-redis's primary/replica routing.
NO_EFFECT_OPTIONS = frozenset({"REPLICA_READ_ONLY"})
#: django-redis Sentinel options: a different failover mechanism.
SENTINEL_OPTIONS = frozenset({"SENTINELS", "SENTINEL_KWARGS"})
KNOWN_OPTIONS = DJANGO_REDIS_OPTIONS | NO_EFFECT_OPTIONS | SENTINEL_OPTIONS | {GEOFAILOVER_KEY}

#: ``REDIS_CLIENT_KWARGS`` a FailoverRedis built on a shared pool accepts.
REDIS_CLIENT_KWARGS = frozenset({"single_connection_client"})
#: ``CONNECTION_POOL_KWARGS`` beyond redis-py connection options.
POOL_ONLY_KWARGS = frozenset({"max_connections", "timeout"})

# A ';' always separates endpoints; a ',' does too when a URL follows it, so
# a comma LOCATION copied from django-redis still means "these endpoints".
_SPLIT_RE = re.compile(r"\s*;\s*|\s*,\s*(?=(?:redis|rediss|unix)://)", re.IGNORECASE)

Level = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One finding about a cache's settings, ready to become a system check."""

    id: str  # e.g. "geofailover.E003"
    level: Level
    msg: str
    hint: str

    @property
    def is_error(self) -> bool:
        return self.level == "error"


@dataclass(frozen=True)
class CacheSettings:
    """The validated settings of one geofailover cache."""

    alias: str | None
    config: FailoverConfig
    client_class: type[Any]
    factory_class: type[Any]
    pool_class: type[Any]
    redis_client_class: type[Any]
    pool_kwargs: Mapping[str, Any] = field(default_factory=dict)
    redis_client_kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def engine_name(self) -> str:
        return self.config.name

    def fingerprint(self) -> tuple[Any, ...]:
        """What must match for two backend instances to share one binding."""
        return (
            self.alias, self.config.name, self.config.fingerprint(), self.client_class, self.factory_class,
            self.pool_class, self.redis_client_class,
            tuple(sorted((k, repr(v)) for k, v in self.pool_kwargs.items())),
            tuple(sorted((k, repr(v)) for k, v in self.redis_client_kwargs.items())),
        )


def where(alias: str | None) -> str:
    """How a check names the setting: ``CACHES['default']``."""
    return f"CACHES[{alias!r}]" if alias is not None else "CACHES[?]"


def default_engine_name(alias: str) -> str:
    """Engine name for an alias: ``django.<alias>``.

    Namespaced so that a Celery or Flask configuration named ``default`` in
    the same process (often on another database of the same servers) is not
    taken for this cache's. Every process with these settings derives the same
    name, which is what ties them into one fleet for ``manage.py geofailover``.
    """
    return f"django.{alias}"


def _suggest(key: str, known: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
    return close[0] if close else None


def split_location(location: Any) -> list[Any]:
    """LOCATION as a list of endpoint specs (URL strings or dicts)."""
    if location is None or location == "":
        return []
    if isinstance(location, str):
        return [part for part in _SPLIT_RE.split(location.strip()) if part]
    if isinstance(location, (list, tuple)):
        items: list[Any] = []
        for item in location:
            items.extend(split_location(item) if isinstance(item, str) else [item])
        return items
    raise TypeError(type(location).__name__)


def _classify(exc: ConfigurationError) -> str:
    """Map a core ConfigurationError to a check id."""
    if exc.problem == "duplicate endpoint name":
        return "geofailover.E004"
    if exc.problem == "unknown option" and not exc.setting.startswith("endpoints["):
        return "geofailover.E005"
    if exc.setting.endswith(".url") or ".url?" in exc.setting:
        return "geofailover.E003"
    if exc.setting == "endpoints":
        return "geofailover.E002"
    return "geofailover.E001"


def _import_class(
    options: Mapping[str, Any], key: str, default: str, base_path: str, alias: str | None, problems: list[Problem], error_id: str,
) -> type[Any] | None:
    """Import ``OPTIONS[key]`` (or the default) and check it subclasses ``base_path``."""
    path = options.get(key, default)
    base: type[Any] = import_string(base_path)
    if not isinstance(path, str):
        if isinstance(path, type) and issubclass(path, base):
            return path
        problems.append(Problem(error_id, "error", f"{where(alias)}['OPTIONS'][{key!r}] must be a dotted path string, got {type(path).__name__}", f"write {default!r} or remove the option"))
        return None
    try:
        cls = import_string(path)
    except ImportError as exc:
        problems.append(Problem(error_id, "error", f"{where(alias)}['OPTIONS'][{key!r}] = {path!r} cannot be imported ({exc})", f"fix the dotted path, or remove the option to use {default!r}"))
        return None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        problems.append(
            Problem(
                error_id, "error",
                f"{where(alias)}['OPTIONS'][{key!r}] = {path!r} is not a subclass of {base_path}; "
                "the cache would not follow failover",
                f"remove the option (default {default!r}) or subclass {base_path}",
            )
        )
        return None
    return cls


def _endpoints(alias: str | None, location: Any, geo: Mapping[str, Any], options: Mapping[str, Any], problems: list[Problem]) -> list[EndpointConfig]:
    raw_geo = geo.get("endpoints")
    try:
        items = split_location(location)
    except TypeError as exc:
        problems.append(Problem("geofailover.E002", "error", f"{where(alias)}['LOCATION'] must be a list of URLs or a ';'-separated string, got {exc}", "write ['redis://host-a:6379/0?name=a&weight=2', 'redis://host-b:6379/0?name=b']"))
        return []
    if items and raw_geo:
        problems.append(Problem("geofailover.E012", "error", f"{where(alias)} lists endpoints both in LOCATION and in OPTIONS['GEOFAILOVER']['endpoints']", "keep one of the two (LOCATION is the usual place)"))
        return []
    if not items and raw_geo:
        try:
            items = split_location(raw_geo) if isinstance(raw_geo, str) else list(raw_geo)
        except TypeError as exc:
            problems.append(Problem("geofailover.E002", "error", f"{where(alias)}['OPTIONS']['GEOFAILOVER']['endpoints'] must be a list, got {exc}", "list the endpoint URLs"))
            return []
    if not items:
        problems.append(
            Problem(
                "geofailover.E002", "error", f"{where(alias)} has no endpoints",
                "set LOCATION to a list of URLs such as ['redis://host-a:6379/0?name=a&weight=2', 'redis://host-b:6379/0?name=b'] "
                "(or one string with the URLs separated by ';')",
            )
        )
        return []
    password = options.get("PASSWORD")
    username = options.get("USERNAME")
    endpoints: list[EndpointConfig] = []
    for index, item in enumerate(items):
        try:
            ep = EndpointConfig.from_dict(item, index=index)
        except ConfigurationError as exc:
            problems.append(_problem_from(alias, exc, item))
            continue
        except (ValueError, TypeError) as exc:  # e.g. urlsplit's "Port could not be cast to integer"
            shown = mask_url(item) if isinstance(item, str) else f"endpoint #{index + 1}"
            problems.append(Problem("geofailover.E003", "error", f"{where(alias)}['LOCATION'] {shown!r} is not a valid Redis URL ({mask_text(str(exc))})", "write redis://host:port/db, rediss://host:port/db or unix:///path/to.sock"))
            continue
        # django-redis applies PASSWORD/USERNAME to every server; here they go
        # on each endpoint (unless its URL has its own) so that the health
        # probes authenticate too and the secret is masked like a URL password.
        extra: dict[str, Any] = {}
        parsed = _parsed_url(ep.url)
        if password and not parsed.get("password") and "password" not in ep.options:
            extra["password"] = password
        if username and not parsed.get("username") and "username" not in ep.options:
            extra["username"] = username
        if extra:
            ep = replace(ep, options={**ep.options, **extra})
        endpoints.append(ep)
    return endpoints


def _parsed_url(url: str) -> dict[str, Any]:
    import redis.connection

    return dict(redis.connection.parse_url(url))


def _problem_from(alias: str | None, exc: ConfigurationError, item: Any = None) -> Problem:
    """Reword a core ConfigurationError in terms of the Django settings the user wrote."""
    setting = exc.setting
    if setting.startswith("endpoints["):
        head, _, rest = setting.partition(".")
        endpoint = head[len("endpoints["):-1]
        shown = f" ({mask_url(item)})" if isinstance(item, str) else ""
        if rest.startswith("url?."):
            part = f"URL option {rest[len('url?.'):]!r}"
        elif rest == "url":
            part = "URL"
        else:
            part = rest or "endpoint"
        text = f"{where(alias)}['LOCATION'] endpoint {endpoint}{shown}: {part}: {exc.problem}"
    else:
        text = f"{where(alias)}['OPTIONS']['GEOFAILOVER'][{setting!r}]: {exc.problem}"
    return Problem(_classify(exc), "error", mask_text(text), exc.fix)


def _check_options(alias: str | None, options: Mapping[str, Any], problems: list[Problem]) -> None:
    for key in options:
        if key in KNOWN_OPTIONS:
            continue
        close = _suggest(str(key), sorted(KNOWN_OPTIONS))
        if close:
            problems.append(Problem("geofailover.E006", "error", f"{where(alias)}['OPTIONS'] has unknown option {key!r}", f"did you mean {close!r}?"))
        else:
            problems.append(
                Problem(
                    "geofailover.W005", "warning",
                    f"{where(alias)}['OPTIONS'] has option {key!r}, which neither django-redis nor geofailover reads",
                    "remove it, or silence geofailover.W005 if your serializer or compressor reads it",
                )
            )
    for key in sorted(SENTINEL_OPTIONS & set(options)):
        problems.append(
            Problem(
                "geofailover.E010", "error", f"{where(alias)}['OPTIONS'][{key!r}] is a django-redis Sentinel option",
                "geofailover and Sentinel are two different failover mechanisms: list the endpoints in LOCATION "
                "and remove SENTINELS/SENTINEL_KWARGS (or use django_redis.client.SentinelClient instead of this backend)",
            )
        )
    for key in sorted(NO_EFFECT_OPTIONS & set(options)):
        problems.append(
            Problem(
                "geofailover.W006", "warning", f"{where(alias)}['OPTIONS'][{key!r}] has no effect",
                "several LOCATIONs are failover members that serve one at a time, never primary and replicas; remove the option",
            )
        )
    if options.get("CLOSE_CONNECTION"):
        problems.append(
            Problem(
                "geofailover.W004", "warning",
                f"{where(alias)}['OPTIONS']['CLOSE_CONNECTION'] is True: idle connections of the shared failover pool are closed after every request",
                "remove it unless you need it; every request then pays a new TCP (and TLS) handshake",
            )
        )


def _dict_option(alias: str | None, options: Mapping[str, Any], key: str, problems: list[Problem]) -> dict[str, Any]:
    value = options.get(key) or {}
    if not isinstance(value, Mapping):
        problems.append(Problem("geofailover.E014", "error", f"{where(alias)}['OPTIONS'][{key!r}] must be a dict, got {type(value).__name__}", f"write {key!r}: {{...}}"))
        return {}
    return dict(value)


def _engine_data(alias: str | None, geo: dict[str, Any], options: Mapping[str, Any], problems: list[Problem]) -> dict[str, Any]:
    data = {k: v for k, v in geo.items() if k != "endpoints"}
    for dr_key, key in (("SOCKET_TIMEOUT", "socket_timeout"), ("SOCKET_CONNECT_TIMEOUT", "socket_connect_timeout")):
        if dr_key not in options or options[dr_key] is None:
            continue
        if key in data and data[key] != options[dr_key]:
            problems.append(
                Problem(
                    "geofailover.E012", "error",
                    f"{where(alias)} sets OPTIONS[{dr_key!r}] = {options[dr_key]!r} and OPTIONS['GEOFAILOVER'][{key!r}] = {data[key]!r}",
                    "set the timeout in one place",
                )
            )
            continue
        # The engine's timeout applies to commands and probes alike.
        data[key] = options[dr_key]
    if "name" not in data:
        data["name"] = default_engine_name(alias) if alias is not None else "django"
    data.setdefault("app_label", "django")
    if data.get("decode_responses"):
        problems.append(
            Problem(
                "geofailover.E015", "error",
                f"{where(alias)}['OPTIONS']['GEOFAILOVER']['decode_responses'] is True",
                "django-redis stores serialized bytes; remove decode_responses (use get_redis_connection() "
                "with your own decoding for raw string access)",
            )
        )
    return data


def parse(alias: str | None, location: Any, params: Mapping[str, Any]) -> tuple[CacheSettings | None, list[Problem]]:
    """Validate one cache entry; returns the settings (None when any error) and every problem found."""
    problems: list[Problem] = []
    raw_options = params.get("OPTIONS") or {}
    if not isinstance(raw_options, Mapping):
        return None, [Problem("geofailover.E014", "error", f"{where(alias)}['OPTIONS'] must be a dict, got {type(raw_options).__name__}", "write 'OPTIONS': {...}")]
    options: Mapping[str, Any] = raw_options
    _check_options(alias, options, problems)
    geo = _dict_option(alias, options, GEOFAILOVER_KEY, problems)
    pool_kwargs = _dict_option(alias, options, "CONNECTION_POOL_KWARGS", problems)
    client_kwargs = _dict_option(alias, options, "REDIS_CLIENT_KWARGS", problems)
    known_pool = connection_option_names() | POOL_ONLY_KWARGS
    for key in list(pool_kwargs):
        if key in ("host", "port", "path", "url", "db", "password", "username"):
            problems.append(Problem("geofailover.E013", "error", f"{where(alias)}['OPTIONS']['CONNECTION_POOL_KWARGS'][{key!r}] would override every endpoint's address or credentials", "put it in each endpoint's URL in LOCATION"))
        elif key not in known_pool:
            close = _suggest(key, sorted(known_pool))
            problems.append(Problem("geofailover.E013", "error", f"{where(alias)}['OPTIONS']['CONNECTION_POOL_KWARGS'] has unknown option {key!r}", f"did you mean {close!r}?" if close else "use redis-py connection options such as max_connections or health_check_interval"))
    for key in client_kwargs:
        if key not in REDIS_CLIENT_KWARGS:
            problems.append(
                Problem(
                    "geofailover.E013", "error",
                    f"{where(alias)}['OPTIONS']['REDIS_CLIENT_KWARGS'][{key!r}] cannot be applied to a client on the shared failover pool",
                    "put connection options in OPTIONS['GEOFAILOVER'] (all endpoints) or CONNECTION_POOL_KWARGS",
                )
            )
    client_class = _import_class(options, "CLIENT_CLASS", CLIENT_PATH, CLIENT_PATH, alias, problems, "geofailover.E007")
    factory_class = _import_class(options, "CONNECTION_FACTORY", FACTORY_PATH, FACTORY_PATH, alias, problems, "geofailover.E008")
    pool_class = _import_class(options, "CONNECTION_POOL_CLASS", POOL_PATH, "geofailover_core.pool.FailoverPoolMixin", alias, problems, "geofailover.E009")
    redis_client_class = _import_class(options, "REDIS_CLIENT_CLASS", REDIS_CLIENT_PATH, REDIS_CLIENT_PATH, alias, problems, "geofailover.E009")
    if "PARSER_CLASS" in options:
        try:
            pool_kwargs["parser_class"] = import_string(options["PARSER_CLASS"])
        except ImportError as exc:
            problems.append(Problem("geofailover.E009", "error", f"{where(alias)}['OPTIONS']['PARSER_CLASS'] cannot be imported ({exc})", "fix the dotted path or remove the option"))

    endpoints = _endpoints(alias, location, geo, options, problems)
    config: FailoverConfig | None = None
    if endpoints:
        data = _engine_data(alias, geo, options, problems)
        try:
            config = FailoverConfig.from_dict({**data, "endpoints": endpoints})
        except ConfigurationError as exc:
            problem = _problem_from(alias, exc)
            if exc.setting == "name" and "name" not in geo:
                problem = Problem(
                    problem.id, "error", f"{where(alias)}: the alias cannot be used as a geofailover engine name",
                    "set OPTIONS['GEOFAILOVER']['name'] to letters, digits and . _ : -",
                )
            problems.append(problem)
        except (ValueError, TypeError) as exc:
            problems.append(Problem("geofailover.E001", "error", f"{where(alias)}['OPTIONS']['GEOFAILOVER']: {mask_text(str(exc))}", "check the option against the option table in docs/django.md"))
    if config is not None and len(config.endpoints) == 1:
        problems.append(
            Problem(
                "geofailover.W002", "warning", f"{where(alias)} has a single endpoint, so there is nothing to fail over to",
                "add the other regions' URLs to LOCATION",
            )
        )
    if any(p.is_error for p in problems) or config is None:
        return None, problems
    assert client_class and factory_class and pool_class and redis_client_class  # no error was recorded
    return (
        CacheSettings(
            alias=alias, config=config, client_class=client_class, factory_class=factory_class, pool_class=pool_class,
            redis_client_class=redis_client_class, pool_kwargs=pool_kwargs, redis_client_kwargs=client_kwargs,
        ),
        problems,
    )


def require(alias: str | None, location: Any, params: Mapping[str, Any]) -> CacheSettings:
    """:func:`parse`, raising ``ImproperlyConfigured`` with the first error (and its fix)."""
    parsed, problems = parse(alias, location, params)
    if parsed is None:
        first = next(p for p in problems if p.is_error)
        more = sum(1 for p in problems if p.is_error) - 1
        also = f" ({more} more: run manage.py check)" if more > 0 else ""
        raise ImproperlyConfigured(f"{first.msg}. Fix: {first.hint} [{first.id}]{also}")
    return parsed


# -- which caches are ours -----------------------------------------------------------


def is_geofailover_backend(backend: Any) -> bool:
    """True when a ``BACKEND`` dotted path names GeoFailoverCache or a subclass.

    Importing the class is what Django itself does on first use of the
    cache; a path that does not import is simply not ours (Django reports it).
    """
    return isinstance(backend, str) and _is_geofailover_path(backend)


@functools.cache
def _is_geofailover_path(backend: str) -> bool:
    if backend == BACKEND_PATH:
        return True
    try:
        cls = import_string(backend)
    except ImportError:
        return False
    from .cache import GeoFailoverCache

    return isinstance(cls, type) and issubclass(cls, GeoFailoverCache)


def geofailover_aliases() -> list[str]:
    """Aliases in ``settings.CACHES`` served by a geofailover backend, in settings order."""
    caches = getattr(settings, "CACHES", {})
    return [alias for alias, cfg in caches.items() if isinstance(cfg, Mapping) and is_geofailover_backend(cfg.get("BACKEND"))]


def resolve_alias(location: Any, params: Mapping[str, Any]) -> str | None:
    """Find which ``settings.CACHES`` alias a backend was built from.

    Django builds a backend as ``backend_cls(location, params)`` without
    telling it its alias, but the alias is what signals report and what
    names the engine. ``params`` is a shallow copy of the settings entry,
    so its ``OPTIONS`` dict is the very object in the settings: identity
    decides, equality is the fallback (e.g. a backend built by hand).
    """
    caches = getattr(settings, "CACHES", {})
    options = params.get("OPTIONS")
    candidates = [
        alias for alias, cfg in caches.items()
        if isinstance(cfg, Mapping) and cfg.get("LOCATION", "") == location and is_geofailover_backend(cfg.get("BACKEND"))
    ]
    if options is not None:
        for alias in candidates:
            if caches[alias].get("OPTIONS") is options:
                return str(alias)
    for alias in candidates:
        cfg = caches[alias]
        if all(cfg.get(k) == v for k, v in params.items()) and all(params.get(k) == v for k, v in cfg.items() if k not in ("BACKEND", "LOCATION")):
            return str(alias)
    return None
