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

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from django.core.cache import caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.exceptions import ImproperlyConfigured
from django_redis.cache import RedisCache  # type: ignore[import-untyped]
from redis.exceptions import ResponseError

from . import checks as _checks  # noqa: F401 - registers the system checks wherever the backend is used
from .binding import CacheBinding, binding_for
from .client import REDIS_ERRORS
from .conf import CLIENT_PATH, FACTORY_PATH, resolve_alias

if TYPE_CHECKING:
    from geofailover_core.asyncio import AsyncFailoverRedis
    from geofailover_core.engine import FailoverEngine

#: ``DefaultClient._incr``'s scripts: INCRBY in one step, on an existing key unless told otherwise.
_INCR = "if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBY', KEYS[1], ARGV[1]) else return false end"
_INCRBY = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


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
        self._log_ignored_exceptions = False  # until the binding, our outage log, is known

    def geofailover_binding(self) -> CacheBinding:
        """Validated settings, engine and signal bridge of this alias (raises ImproperlyConfigured)."""
        if self._geo_binding is None:
            self._geo_binding = binding_for(type(self), self.alias, self._geo_location, self._geo_params)
            # django-redis logs every swallowed error to self.logger; the binding logs once per outage.
            self.logger, self._log_ignored_exceptions = self._geo_binding, True
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

    # -- native async: DefaultClient's commands on this event loop's AsyncFailoverRedis ---------
    # Keys, values and timeouts go through the sync client's own make_key, encode
    # and decode, so the two paths read and write the very same bytes.

    async def _geo(self, work: Callable[[Any], Awaitable[Any]], then: Callable[[Any], Any] | None = None, *, batched: bool = False) -> Any:
        """``work``'s result (passed through ``then``) under the sync methods' error policy:
        a Redis error is None with IGNORE_EXCEPTIONS (logged once per outage), else raised.
        ``batched``: ``work`` gets the client's auto-pipeline, so the single commands of
        concurrent requests share round trips."""
        binding = self.geofailover_binding()
        client = binding.loops.get()
        try:
            result = await work(client.auto_pipeline if batched else client)
        except REDIS_ERRORS as exc:
            if not self._ignore_exceptions:
                raise
            binding.note_ignored(exc)
            return None
        if binding.ignoring:
            binding.note_success()
        return result if then is None else then(result)

    async def aget(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        client = self.client
        name = client.make_key(key, version=version)
        value = await self._geo(lambda r: r.get(name), batched=True)
        return default if value is None else client.decode(value)

    async def aget_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        client = self.client
        names = {client.make_key(key, version=version): key for key in keys}
        values = await self._geo(lambda r: r.mget(*names), batched=True) if names else None
        return {names[name]: client.decode(v) for name, v in zip(names, values or (), strict=False) if v is not None}

    async def ahas_key(self, key: Any, version: int | None = None) -> bool | None:
        name = self.client.make_key(key, version=version)
        return await self._geo(lambda r: r.exists(name), lambda found: found == 1, batched=True)  # type: ignore[no-any-return]

    async def aset(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None, nx: bool = False, xx: bool = False) -> bool | None:
        return await self._geo(lambda r: self._aset(r, key, value, timeout, version, nx, xx), batched=True)  # type: ignore[no-any-return]

    async def aadd(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool | None:
        return await self.aset(key, value, timeout, version, nx=True)

    async def aset_many(self, data: dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        async def work(r: AsyncFailoverRedis) -> None:
            pipe = r.pipeline()  # queues like django-redis's sync pipeline: MULTI ... EXEC
            for key, value in data.items():
                await self._aset(pipe, key, value, timeout, version)
            await pipe.execute()

        await self._geo(work)

    async def _aset(self, r: Any, key: Any, value: Any, timeout: Any, version: int | None, nx: bool = False, xx: bool = False) -> bool:
        """``DefaultClient.set``: a timeout <= 0 deletes the key (or, with ``nx``, only reports whether it was absent)."""
        name, encoded = self.client.make_key(key, version=version), self.client.encode(value)
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is not None:
            timeout = int(timeout * 1000)
            if timeout <= 0:
                return not await r.exists(name) if nx else bool(await r.delete(name))
        return bool(await r.set(name, encoded, nx=nx, px=timeout, xx=xx))

    async def adelete(self, key: Any, version: int | None = None) -> bool | None:
        name = self.client.make_key(key, version=version)
        return await self._geo(lambda r: r.delete(name), bool, batched=True)  # type: ignore[no-any-return]

    async def adelete_many(self, keys: Iterable[Any], version: int | None = None) -> int | None:
        names = [self.client.make_key(key, version=version) for key in keys]
        return await self._geo(lambda r: r.delete(*names), batched=True) if names else 0

    async def atouch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool | None:
        name = self.client.make_key(key, version=version)
        timeout = self.default_timeout if timeout is DEFAULT_TIMEOUT else timeout
        return await self._geo(lambda r: r.persist(name) if timeout is None else r.pexpire(name, int(timeout * 1000)), bool, batched=True)  # type: ignore[no-any-return]

    async def aincr(self, key: Any, delta: int = 1, version: int | None = None, ignore_key_check: bool = False) -> int | None:
        return await self._geo(lambda r: self._aincr(r, self.client.make_key(key, version=version), delta, ignore_key_check))  # type: ignore[no-any-return]

    async def _aincr(self, r: AsyncFailoverRedis, name: Any, delta: int, ignore_key_check: bool) -> int:
        """``DefaultClient._incr``: atomic; a value INCRBY refuses (a pickled
        number, beyond 64 bits) is read, added to and written back with its TTL."""
        try:
            value = await r.eval(_INCRBY if ignore_key_check else _INCR, 1, name, delta)
        except ResponseError:
            ttl, raw = await r.ttl(name), await r.get(name)
            if raw is None:
                raise ValueError(f"Key '{name!r}' not found") from None
            value = self.client.decode(raw) + delta
            await self._aset(r, name, value, None if ttl == -1 else max(ttl, 0), None)
            return value  # type: ignore[no-any-return]
        if value is None or value is False:
            raise ValueError(f"Key '{name!r}' not found")
        return value  # type: ignore[no-any-return]

    async def aincr_version(self, key: Any, delta: int = 1, version: int | None = None) -> int | None:
        """``DefaultClient.incr_version``: the value moves to the new version with its TTL."""
        version = self.version if version is None else version

        async def work(r: AsyncFailoverRedis) -> int:
            old = self.client.make_key(key, version=version)
            raw, ttl = await r.get(old), await r.ttl(old)
            if raw is None or self.client.decode(raw) is None:
                raise ValueError(f"Key '{key!r}' not found")
            await self._aset(r, self.client.make_key(key, version=version + delta), self.client.decode(raw), None if ttl == -1 else max(ttl, 0), None)
            await r.delete(old)
            return version + delta

        return await self._geo(work)  # type: ignore[no-any-return]

    async def aclear(self) -> None:
        await self._geo(lambda r: r.flushdb())

    def __repr__(self) -> str:
        try:
            engine = self.geofailover
        except ImproperlyConfigured:
            return f"<{type(self).__name__} alias={self.alias!r} misconfigured>"
        return f"<{type(self).__name__} alias={self.alias!r} engine={engine.name!r} active={engine.active!r}>"


def geofailover_cache(alias: str) -> GeoFailoverCache:
    """``caches[alias]``, checked to be a geofailover cache (ValueError otherwise)."""
    cache = caches[alias]
    if not isinstance(cache, GeoFailoverCache):
        raise ValueError(f"CACHES[{alias!r}] is not a geofailover cache (BACKEND {type(cache).__module__}.{type(cache).__qualname__})")
    return cache

