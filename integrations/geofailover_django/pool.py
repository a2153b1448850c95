"""django-redis connection factory that hands out failover pools.

Plugged in like django-redis's ``SentinelConnectionFactory`` (the cache
backend presets ``OPTIONS["CONNECTION_FACTORY"]``): django-redis calls the
methods it always does and builds the client from its own options; only the
pool differs, one that follows the engine's active endpoint.
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django_redis.pool import ConnectionFactory  # type: ignore[import-untyped]

from geofailover_core import registry
from geofailover_core.pool import FailoverPoolMixin

from .conf import POOL_PATH, REDIS_CLIENT_PATH

#: GeoFailoverClient's one "server": ``geofailover://<engine name>``.
URL_SCHEME = "geofailover://"


class GeoFailoverConnectionFactory(ConnectionFactory):  # type: ignore[misc]
    """Pools are process-global, keyed by engine and pool options, like
    django-redis's own ``_pools``: Django builds a client per thread and they
    must all share one pool, until its engine is closed."""

    _geo_pools: dict[tuple[str, type[Any], str], FailoverPoolMixin] = {}
    _geo_lock = threading.Lock()

    def __init__(self, options: dict[str, Any]) -> None:
        # Like SentinelConnectionFactory, default the pool and client classes,
        # but on a copy: the user's OPTIONS dict stays as written.
        options = dict(options)
        options.setdefault("CONNECTION_POOL_CLASS", POOL_PATH)
        options.setdefault("REDIS_CLIENT_CLASS", REDIS_CLIENT_PATH)
        super().__init__(options)

    def make_connection_params(self, url: str) -> dict[str, Any]:
        """The URL token and django-redis's PARSER_CLASS: credentials and timeouts
        are part of the engine configuration (so health probes use them too)."""
        return {"url": url, "parser_class": self.get_parser_cls()}

    def get_or_create_connection_pool(self, params: dict[str, Any]) -> FailoverPoolMixin:
        """django-redis's ``get_connection()`` asks here; the pool class and
        kwargs are django-redis's own (``OPTIONS``), validated by the checks."""
        url = params["url"]
        if not url.startswith(URL_SCHEME):
            raise ImproperlyConfigured(
                "GeoFailoverConnectionFactory is used without GeoFailoverClient: set "
                "OPTIONS['CLIENT_CLASS'] to 'geofailover_django.client.GeoFailoverClient' (or a subclass), "
                "or use BACKEND 'geofailover_django.cache.GeoFailoverCache' which sets it for you"
            )
        engine = registry.lookup(url[len(URL_SCHEME):])  # made live by the client's binding
        kwargs = {k: v for k, v in {**params, **self.pool_cls_kwargs}.items() if k != "url"}
        key = (engine.name, self.pool_cls, repr(sorted(kwargs.items())))
        with self._geo_lock:
            pool = self._geo_pools.get(key)
            if pool is None or pool.engine is not engine:
                pool = self._geo_pools[key] = self.pool_cls(engine, **kwargs)
                engine.add_close_hook(lambda _: self._forget(key))  # the engine closes its pools
            return pool

    @classmethod
    def _forget(cls, key: tuple[str, type[Any], str]) -> None:
        cls._geo_pools.pop(key, None)

    def disconnect(self, connection: Any) -> None:
        """Close idle connections only: the pool is shared by every thread,
        and closing another thread's in-use socket would break its command
        (django-redis's default ``disconnect()`` closes those too)."""
        connection.connection_pool.disconnect(inuse_connections=False)
