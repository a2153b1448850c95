"""django-redis connection factory that hands out failover pools.

Plugged in like django-redis's ``SentinelConnectionFactory``: the factory is
chosen by ``OPTIONS["CONNECTION_FACTORY"]`` (the cache backend presets it),
and the pool it returns re-resolves the endpoint on every new connection
instead of being bound to one address. django-redis calls the same methods
it always does (``connect``, ``get_connection``, ``disconnect``) and builds
the client from its own ``REDIS_CLIENT_CLASS``/``REDIS_CLIENT_KWARGS``; only
the pool behind them differs.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured
from django_redis.pool import ConnectionFactory  # type: ignore[import-untyped]

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

    _geo_pools: dict[tuple[str, type[Any], str], FailoverPoolMixin] = {}
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
        """The URL token and django-redis's PARSER_CLASS: credentials and timeouts
        are part of the engine configuration (so health probes use them too)."""
        return {"url": url, "parser_class": self.get_parser_cls()}

    def get_or_create_connection_pool(self, params: dict[str, Any]) -> FailoverPoolMixin:
        """django-redis's ``get_connection()`` asks here; the pool class and
        kwargs are django-redis's own (``OPTIONS``), validated by the checks."""
        engine = self._require_binding().engine()
        kwargs = {k: v for k, v in {**params, **self.pool_cls_kwargs}.items() if k != "url"}
        key = (engine.name, self.pool_cls, repr(sorted(kwargs.items())))
        with self._geo_lock:
            pool = self._geo_pools.get(key)
            if pool is None or pool.engine is not engine:
                pool = self._geo_pools[key] = self.pool_cls(engine, **kwargs)
            return pool

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
