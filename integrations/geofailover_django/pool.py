"""django-redis connection factory that hands out failover pools.

Plugged in like django-redis's ``SentinelConnectionFactory``: the factory is
chosen by ``OPTIONS["CONNECTION_FACTORY"]`` (the cache backend presets it),
and the pool it returns re-resolves the endpoint on every new connection
instead of being bound to one address. django-redis calls the same methods
it always does (``connect``, ``get_connection``, ``disconnect``); only the
pool behind them differs.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django_redis.pool import ConnectionFactory  # type: ignore[import-untyped]

from geofailover_core.client import FailoverRedis
from geofailover_core.pool import FailoverPoolMixin

from .conf import POOL_PATH, REDIS_CLIENT_PATH

if TYPE_CHECKING:
    from .binding import CacheBinding

URL_SCHEME = "geofailover://"


class GeoFailoverConnectionFactory(ConnectionFactory):  # type: ignore[misc]
    """Connection factory whose pools follow the active endpoint of the alias's engine.

    Pools are process-global, keyed by engine name and pool options, like
    django-redis's own ``_pools`` (keyed by URL), because Django builds a new
    client per thread and they must all share one pool. A pool whose engine
    was closed is replaced.
    """

    _geo_pools: dict[tuple[str, str], FailoverPoolMixin] = {}
    _geo_lock = threading.Lock()

    def __init__(self, options: dict[str, Any]) -> None:
        # Like SentinelConnectionFactory, default the pool and client classes,
        # but on a copy: the user's OPTIONS dict stays as written.
        options = dict(options)
        options.setdefault("CONNECTION_POOL_CLASS", POOL_PATH)
        options.setdefault("REDIS_CLIENT_CLASS", REDIS_CLIENT_PATH)
        super().__init__(options)
        self.binding: CacheBinding | None = None

    def bind(self, binding: CacheBinding) -> None:
        """Attach the alias's binding (done by GeoFailoverClient right after construction)."""
        self.binding = binding

    def _require_binding(self) -> CacheBinding:
        if self.binding is None:
            raise ImproperlyConfigured(
                "GeoFailoverConnectionFactory is used without GeoFailoverClient: set "
                "OPTIONS['CLIENT_CLASS'] to 'geofailover_django.client.GeoFailoverClient' (or a subclass), "
                "or use BACKEND 'geofailover_django.cache.GeoFailoverCache' which sets it for you"
            )
        return self.binding

    def make_connection_params(self, url: str) -> dict[str, Any]:
        """Only the URL token: credentials and timeouts are part of the engine
        configuration (so health probes use them too), not of each pool."""
        return {"url": url}

    def get_or_create_connection_pool(self, params: dict[str, Any]) -> FailoverPoolMixin:
        binding = self._require_binding()
        engine = binding.engine()
        pool_kwargs = dict(binding.settings.pool_kwargs)
        key = (engine.name, repr(sorted(pool_kwargs.items(), key=lambda kv: kv[0])))
        with self._geo_lock:
            pool = self._geo_pools.get(key)
            if pool is None or pool.engine is not engine:
                pool = self._geo_pools[key] = self.get_connection_pool({**params, **pool_kwargs})
            return pool

    def get_connection_pool(self, params: dict[str, Any]) -> FailoverPoolMixin:
        binding = self._require_binding()
        kwargs = {k: v for k, v in params.items() if k != "url"}  # pool kwargs, already validated
        pool_cls: type[Any] = binding.settings.pool_class
        pool: FailoverPoolMixin = pool_cls(binding.engine(), **kwargs)
        return pool

    def get_connection(self, params: dict[str, Any]) -> FailoverRedis:
        binding = self._require_binding()
        pool = self.get_or_create_connection_pool(params)
        client_cls: type[FailoverRedis] = binding.settings.redis_client_class
        return client_cls(connection_pool=pool, **binding.settings.redis_client_kwargs)

    def disconnect(self, connection: Any) -> None:
        """Close idle connections only: the pool is shared by every thread,
        and closing another thread's in-use socket would break its command
        (django-redis's default ``disconnect()`` closes those too)."""
        connection.connection_pool.disconnect(inuse_connections=False)

    @classmethod
    def forget_pools(cls) -> None:
        """Drop cached pools (tests; after engines were closed)."""
        with cls._geo_lock:
            pools = list(cls._geo_pools.values())
            cls._geo_pools.clear()
        for pool in pools:
            pool.disconnect()  # type: ignore[attr-defined]
