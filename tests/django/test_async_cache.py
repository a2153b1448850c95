"""The native async cache methods: django-redis's semantics on ``AsyncFailoverRedis``, one client per event loop."""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from typing import Any

import pytest
import redis
from django.core.cache.backends.base import BaseCache

from geofailover_core import NoHealthyEndpointError
from geofailover_core.asyncio import AsyncFailoverRedis
from geofailover_core.testing import RedisServer, wait_until

from .conftest import GeoSettings, cache_entry

#: Every async method Django's BaseCache defines that talks to Redis; each has its own native body here.
NATIVE = ("aget", "aset", "aadd", "adelete", "aget_many", "aset_many", "adelete_many", "ahas_key", "aincr", "atouch", "aclear", "aincr_version")
#: Django's own versions of these only call the native ones above.
COMPOSED = {"adecr": "aincr", "adecr_version": "aincr_version", "aget_or_set": "aget"}

PAIRS = [
    ("django_redis.serializers.pickle.PickleSerializer", "django_redis.compressors.identity.IdentityCompressor"),
    ("django_redis.serializers.json.JSONSerializer", "django_redis.compressors.zlib.ZlibCompressor"),
    ("django_redis.serializers.msgpack.MSGPackSerializer", "django_redis.compressors.lzma.LzmaCompressor"),
    ("django_redis.serializers.pickle.PickleSerializer", "django_redis.compressors.gzip.GzipCompressor"),
]
VALUES: dict[str, Any] = {
    "text": "héllo",
    "dict": {"a": [1, 2], "b": "x" * 3000},  # long enough to be compressed
    "int": 42,  # stored as a plain integer, so INCR works on it
    "big": 2**70,  # beyond 64 bits: INCRBY refuses, django-redis adds in Python
    "float": 1.5,
    "bool": True,
    "list": [1, "two", 3.0],
}


def test_every_async_method_is_native() -> None:
    from geofailover_django.cache import GeoFailoverCache

    for name in NATIVE:
        assert name in GeoFailoverCache.__dict__, f"{name} falls back to Django's sync_to_async version"
        assert getattr(GeoFailoverCache, name) is not getattr(BaseCache, name)
    for name in COMPOSED:  # Django's own: they await the native methods
        assert getattr(GeoFailoverCache, name) is getattr(BaseCache, name)


@pytest.mark.parametrize(("serializer", "compressor"), PAIRS, ids=["pickle-identity", "json-zlib", "msgpack-lzma", "pickle-gzip"])
def test_sync_and_async_read_and_write_the_same_bytes(geo_settings: GeoSettings, two: list[RedisServer], serializer: str, compressor: str) -> None:
    from django.core.cache import caches

    entry = {**cache_entry(two, SERIALIZER=serializer, COMPRESSOR=compressor), "KEY_PREFIX": "site", "VERSION": 3, "TIMEOUT": 100}
    geo_settings(CACHES={"default": entry})
    cache = caches["default"]
    values = VALUES

    async def scenario() -> None:
        for key, value in values.items():
            cache.set(f"s:{key}", value)
            assert await cache.aget(f"s:{key}") == value, key
            assert await cache.aset(f"a:{key}", value) is True
            assert cache.get(f"a:{key}") == value, key
            assert two[0].client().exists(f"site:3:a:{key}", f"site:3:s:{key}") == 2, key  # prefix and version as django-redis writes them
        assert await cache.aget_many([f"s:{k}" for k in values] + ["nope"]) == {f"s:{k}": v for k, v in values.items()}
        await cache.aset_many({"m1": values["dict"], "m2": 7}, timeout=50)
        assert cache.get_many(["m1", "m2"]) == {"m1": values["dict"], "m2": 7}
        assert 45 <= cache.ttl("m1") <= 50
        assert 95 <= cache.ttl("a:text") <= 100  # the default TIMEOUT
        assert await cache.aget("nope", "dflt") == "dflt"

    asyncio.run(scenario())


def test_counters_timeouts_and_versions_behave_like_django_redis(geo_cache: Any, two: list[RedisServer]) -> None:
    cache = geo_cache()

    async def scenario() -> None:
        cache.set("n", 10)
        assert await cache.aincr("n", 5) == 15 and cache.get("n") == 15
        assert await cache.adecr("n", 20) == -5
        with pytest.raises(ValueError):
            await cache.aincr("absent")
        assert await cache.aincr("fresh", ignore_key_check=True) == 1
        cache.set("big", 2**70, timeout=60)  # INCRBY refuses; read, add and write back with its TTL
        assert await cache.aincr("big") == 2**70 + 1 and cache.get("big") == 2**70 + 1
        assert 55 <= cache.ttl("big") <= 60

        assert await cache.aadd("n", "other") is False and cache.get("n") == -5
        assert await cache.aadd("new", "v", timeout=30) is True and 25 <= cache.ttl("new") <= 30
        assert await cache.aset("gone", "v", timeout=0) is False and not cache.has_key("gone")  # <= 0: delete
        cache.set("kept", 1)
        assert await cache.aset("kept", 2, timeout=0) is True and not cache.has_key("kept")
        assert await cache.aset("forever", 1, timeout=None) and cache.ttl("forever") is None
        assert await cache.atouch("forever", 20) is True and 15 <= cache.ttl("forever") <= 20
        assert await cache.atouch("forever", None) is True and cache.ttl("forever") is None
        assert await cache.atouch("absent") is False
        assert await cache.ahas_key("forever") is True and await cache.ahas_key("absent") is False

        cache.set("v", "x", timeout=40)
        assert await cache.aincr_version("v") == 2
        assert cache.get("v", version=2) == "x" and cache.get("v") is None
        assert 35 <= cache.ttl("v", version=2) <= 40  # django-redis keeps the TTL; Django's generic version would not
        assert await cache.adecr_version("v", version=2) == 1 and cache.get("v") == "x"
        with pytest.raises(ValueError):
            await cache.aincr_version("absent")

        assert await cache.adelete("v") is True and await cache.adelete("v") is False
        cache.set_many({"d1": 1, "d2": 2})
        assert await cache.adelete_many(["d1", "d2", "d3"]) == 2
        assert await cache.adelete_many([]) == 0
        assert await cache.aget_or_set("made", lambda: "fresh") == "fresh"
        await cache.aclear()
        assert two[0].client().dbsize() == 0

    asyncio.run(scenario())


def test_one_client_per_event_loop_on_the_sync_engine_closed_with_its_loop(geo_cache: Any, two: list[RedisServer]) -> None:
    cache = geo_cache()
    cache.set("k", "v")
    seen: list[AsyncFailoverRedis] = []

    async def use() -> Any:
        client = cache.geofailover_binding().loops.get()
        seen.append(client)
        assert client is cache.geofailover_binding().loops.get()  # one per loop
        return await cache.aget("k")

    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)  # an unclosed socket would warn
        assert asyncio.run(use()) == "v"
        assert asyncio.run(use()) == "v"  # a new loop, as async_to_sync makes per request under WSGI
        results: list[Any] = []
        thread = threading.Thread(target=lambda: results.append(asyncio.run(use())))
        thread.start()
        thread.join()
        assert results == ["v"]
        gc.collect()
    assert len({id(c) for c in seen}) == 3
    assert all(c.geofailover is cache.geofailover for c in seen)  # the sync path's engine
    assert cache.geofailover_binding().loops._clients == {}  # each closed with its loop
    assert not [conn for c in seen for conn in c.connection_pool._available_connections if conn.is_connected]


def test_concurrent_tasks_share_one_loops_pool(geo_cache: Any) -> None:
    cache = geo_cache()

    async def scenario() -> list[Any]:
        await asyncio.gather(*(cache.aset(f"k{i}", i) for i in range(50)))
        return list(await asyncio.gather(*(cache.aget(f"k{i}") for i in range(50))))

    assert asyncio.run(scenario()) == list(range(50))


def test_reads_and_unsent_writes_survive_a_kill(geo_cache: Any, two: list[RedisServer]) -> None:
    cache = geo_cache(ignore=False)

    async def scenario() -> None:
        await cache.aset("k", "on-a")
        assert cache.geofailover.active == "a"
        two[0].kill()
        assert await cache.aget("k", "cold") == "cold"  # re-sent on b, whose cache is cold
        assert await cache.aset("k", "on-b") is True
        assert await cache.aincr("n", ignore_key_check=True) == 1
        assert cache.geofailover.active == "b" and cache.get("k") == "on-b"

    asyncio.run(scenario())


def test_without_ignore_exceptions_async_methods_raise_the_redis_error(geo_cache: Any, two: list[RedisServer]) -> None:
    cache = geo_cache(ignore=False)
    cache.set("warm", 1)
    two[1].kill()
    two[0].kill()
    wait_until(lambda: cache.geofailover.check_now() is not None and cache.geofailover.active is None, timeout=5, message="not all down")

    async def scenario() -> None:
        for call in (cache.aget("k"), cache.aset("k", 1), cache.aincr("k"), cache.aget_many(["k"]), cache.aclear()):
            with pytest.raises(redis.exceptions.ConnectionError) as info:
                await call
            assert isinstance(info.value, NoHealthyEndpointError)

    asyncio.run(scenario())
