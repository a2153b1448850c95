"""Flask-Caching backend on the app's geofailover configuration.

``CACHE_TYPE = "geofailover_flask.cache.GeoFailoverCache"``: Flask-Caching's
own ``RedisCache`` (cachelib) handed a ``FailoverRedis`` instead of a host, so
the cache follows failover and failback with the rest of the app, on the
extension's engine whichever of ``cache.init_app`` and ``geo.init_app`` runs
first. ``CACHE_GEOFAILOVER_NAME`` (default ``"default"``) picks the
``GeoFailover`` instance; it is a Flask-Caching setting, like
``CACHE_REDIS_SENTINELS``, because two caches of one app may differ in it.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask_caching.backends.rediscache import RedisCache

from geofailover_core.adapters import client_connection_options
from geofailover_core.errors import ConfigurationError

from . import settings
from .state import client_for, states

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
    @settings.reported()
    def factory(cls, app: Flask, config: dict[str, Any], args: list[Any], kwargs: dict[str, Any]) -> GeoFailoverCache:
        name = config.get("CACHE_GEOFAILOVER_NAME") or settings.DEFAULT_INSTANCE
        keys = settings.keys_for(name)
        for key in _IGNORED_KEYS:
            if config.get(key) is not None:
                raise ConfigurationError(
                    key, "is not used by GeoFailoverCache",
                    f"remove it; the cache's endpoints come from {keys.url} or {keys.endpoints} (instance {name!r})",
                )
        if args:
            raise ConfigurationError("CACHE_ARGS", "not used by GeoFailoverCache", "remove it; pass options in CACHE_OPTIONS")
        cache_kwargs = {k: kwargs.pop(k) for k in _CACHE_KWARGS if k in kwargs}
        redis_options = client_connection_options(kwargs, "CACHE_OPTIONS", keys.options)
        if redis_options.get("decode_responses"):
            raise ConfigurationError("CACHE_OPTIONS['decode_responses']", "the cache stores pickled bytes", "remove it")
        # The extension's engine if it is initialised, else the same one from the registry.
        state = states(app).get(name)
        engine, pool_options = (state.engine, state.pool_options) if state else settings.load(app.config, name)
        if config.get("CACHE_KEY_PREFIX") and "key_prefix" not in cache_kwargs:
            cache_kwargs["key_prefix"] = config["CACHE_KEY_PREFIX"]
        # Its own pool: cachelib needs bytes even when the app's client has
        # decode_responses=True, and CACHE_OPTIONS may tune its sockets.
        return cls(host=client_for(engine, pool_options, **{**redis_options, "decode_responses": False}), **cache_kwargs)
