"""Flask-Caching backend on the app's geofailover configuration.

``CACHE_TYPE = "geofailover_flask.cache.GeoFailoverCache"``: Flask-Caching's
own ``RedisCache`` (cachelib), handed a ``FailoverRedis`` instead of a host,
so the cache follows failover and failback with the rest of the app. It reads
the same ``GEOFAILOVER_*`` keys as the extension and shares its engine, in
whichever order ``cache.init_app`` and ``geo.init_app`` run.

``CACHE_GEOFAILOVER_NAME`` (default ``"default"``) picks the ``GeoFailover``
instance. It is a Flask-Caching setting, like ``CACHE_REDIS_SENTINELS`` of the
Sentinel backend, because it belongs to one cache: two caches on one app can
pass different values through ``Cache(config={...})``.

A failover moves traffic, not data: after a switch the cache is cold on the
new endpoint, and entries written there are not on the old one after a
failback.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask_caching.backends.rediscache import RedisCache

from geofailover_core.client import FailoverRedis
from geofailover_core.errors import ConfigurationError

from . import settings
from .extension import make_pool, resolve

#: Flask-Caching settings that point the stock Redis backends at a server;
#: the endpoints of this backend come from GEOFAILOVER_* instead.
_IGNORED_KEYS = (
    "CACHE_REDIS_URL",
    "CACHE_REDIS_HOST",
    "CACHE_REDIS_PORT",
    "CACHE_REDIS_PASSWORD",
    "CACHE_REDIS_DB",
    "CACHE_REDIS_SENTINELS",
    "CACHE_REDIS_SENTINEL_MASTER",
)
# cachelib keyword arguments; every other CACHE_OPTIONS entry is a redis-py
# connection option for the cache's own pool.
_CACHE_KWARGS = ("default_timeout", "ignore_delete_many_errors", "check_connection", "key_prefix")


class GeoFailoverCache(RedisCache):
    """Flask-Caching ``RedisCache`` whose client is a ``FailoverRedis``."""

    @classmethod
    def factory(cls, app: Flask, config: dict[str, Any], args: list[Any], kwargs: dict[str, Any]) -> GeoFailoverCache:
        name = config.get("CACHE_GEOFAILOVER_NAME") or settings.DEFAULT_INSTANCE
        keys = settings.keys_for(name)
        for key in _IGNORED_KEYS:
            if config.get(key) is not None:
                raise ConfigurationError(
                    key, "is not used by GeoFailoverCache",
                    f"remove it; the cache's endpoints come from {keys.url} or {keys.endpoints} (instance {name!r})",
                )
        cache_kwargs = {k: kwargs.pop(k) for k in _CACHE_KWARGS if k in kwargs}
        redis_options = settings.connection_options(kwargs, "CACHE_OPTIONS", keys)
        if redis_options.get("decode_responses"):
            raise ConfigurationError("CACHE_OPTIONS['decode_responses']", "the cache stores pickled bytes", "remove it")
        key_prefix = config.get("CACHE_KEY_PREFIX")
        if key_prefix and "key_prefix" not in cache_kwargs:
            cache_kwargs["key_prefix"] = key_prefix
        if args:
            raise ConfigurationError("CACHE_ARGS", "not used by GeoFailoverCache", "remove it; pass options in CACHE_OPTIONS")
        engine, pool_options = resolve(app, name)
        # Its own pool: cachelib needs bytes even when the app's client has
        # decode_responses=True, and CACHE_OPTIONS may tune its sockets.
        client = FailoverRedis(connection_pool=make_pool(engine, pool_options, **{**redis_options, "decode_responses": False}))
        return cls(host=client, **cache_kwargs)
