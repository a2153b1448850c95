"""``GeoFailoverCache``: django-redis's ``RedisCache`` across failover endpoints.

A thin subclass: it presets ``CLIENT_CLASS`` and ``CONNECTION_FACTORY`` (the
two pluggable classes django-redis's Sentinel support also swaps) and keeps
every other django-redis behaviour: serializers, compressors, key prefixes and
versions, timeouts, ``IGNORE_EXCEPTIONS``, ``get_redis_connection()``.

Settings are validated lazily, on first use, because Django's own cache checks
build every backend while ``manage.py check`` runs: a bad setting must show up
as our system check, not as a traceback from a constructor.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django_redis.cache import RedisCache  # type: ignore[import-untyped]

from . import checks as _checks  # noqa: F401 - registers the system checks wherever the backend is used
from .binding import CacheBinding, binding_for
from .conf import CLIENT_PATH, FACTORY_PATH, resolve_alias

if TYPE_CHECKING:
    from geofailover_core.engine import FailoverEngine


class GeoFailoverCache(RedisCache):  # type: ignore[misc]
    """django-redis cache whose LOCATIONs are failover members of one engine."""

    _client: Any  # set by RedisCache.__init__

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        self._geo_location = server
        self._geo_params = params
        self.alias = resolve_alias(server, params)  # None when built by hand, outside settings.CACHES
        self._geo_binding: CacheBinding | None = None
        options = params.get("OPTIONS")
        # Preset on a copy (django-redis's Sentinel factory mutates the
        # user's OPTIONS; we do not). CLIENT_CLASS is always ours here: the
        # user's choice is imported and checked lazily by conf.parse, so a
        # bad path becomes a system check instead of an ImportError now.
        patched = dict(options) if isinstance(options, dict) else {}
        patched.setdefault("CONNECTION_FACTORY", FACTORY_PATH)
        super().__init__(server, {**params, "OPTIONS": {**patched, "CLIENT_CLASS": CLIENT_PATH}})
        self._params = {**params, "OPTIONS": patched}
        # One log line per outage (see GeoFailoverClient), not django-redis's one per call.
        self._log_ignored_exceptions = False

    def geofailover_binding(self) -> CacheBinding:
        """Validated settings, engine and signal bridge of this alias (raises ImproperlyConfigured)."""
        if self._geo_binding is None:
            self._geo_binding = binding_for(type(self), self.alias, self._geo_location, self._geo_params)
        return self._geo_binding

    @property
    def geofailover(self) -> FailoverEngine:
        """The failover engine: ``active``, ``status()``, ``failover_to()``, ``pin()``, ``on()``..."""
        return self.geofailover_binding().engine()

    @property
    def client(self) -> Any:
        if self._client is None:  # the project's CLIENT_CLASS, checked with the settings
            self._client = self.geofailover_binding().settings.client_class(self._server, self._params, self)
        return self._client

    def close(self, **kwargs: Any) -> None:
        """Django calls this at the end of every request: close only a client
        that exists (django-redis 6 would build one, and with it validate the
        settings, for a request that never touched this cache)."""
        if self._client is not None:
            super().close(**kwargs)

    def __repr__(self) -> str:
        try:
            engine = self.geofailover
        except ImproperlyConfigured:
            return f"<{type(self).__name__} alias={self.alias!r} misconfigured>"
        return f"<{type(self).__name__} alias={self.alias!r} engine={engine.name!r} active={engine.active!r}>"


#: Async methods Django's BaseCache builds out of aget/aset loops. Delegating
#: them to django-redis's sync implementations (in a thread, like BaseCache's
#: own aget) makes ``aincr`` atomic (one EVAL instead of GET then SET),
#: ``aget_many``/``aset_many`` one round trip instead of one per key, and
#: gives them the same IGNORE_EXCEPTIONS behaviour as their sync twins.
ASYNC_DELEGATED = ("get_many", "set_many", "delete_many", "has_key", "incr", "decr", "incr_version", "decr_version")


def _delegate(name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    async def method(self: GeoFailoverCache, *args: Any, **kwargs: Any) -> Any:
        return await sync_to_async(getattr(self, name), thread_sensitive=True)(*args, **kwargs)

    method.__name__ = method.__qualname__ = f"a{name}"
    method.__doc__ = f"Async :meth:`{name}`: django-redis's implementation, run in a thread."
    return method


def geofailover_cache(alias: str) -> GeoFailoverCache:
    """``caches[alias]``, checked to be a geofailover cache (ValueError otherwise)."""
    cache = caches[alias]
    if not isinstance(cache, GeoFailoverCache):
        raise ValueError(f"CACHES[{alias!r}] is not a geofailover cache (BACKEND {type(cache).__module__}.{type(cache).__qualname__})")
    return cache


for _name in ASYNC_DELEGATED:
    setattr(GeoFailoverCache, f"a{_name}", _delegate(_name))
del _name
