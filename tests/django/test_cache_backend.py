"""The cache backend keeps every django-redis feature, on healthy servers."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from geofailover_core import FailoverRedis
from geofailover_core.testing import RedisServer

from .conftest import BACKEND, GeoSettings, cache_entry, location


def test_django_redis_features_work_through_the_failover_pool(geo_settings: GeoSettings, two: list[RedisServer]) -> None:
    from django.core.cache import caches

    geo_settings(CACHES={"default": {**cache_entry(two), "KEY_PREFIX": "app", "VERSION": 3}})
    cache = caches["default"]

    # values round-trip through the pickle serializer; the raw key carries prefix and version
    assert cache.set("obj", {"a": [1, 2]}, timeout=60)
    assert cache.get("obj") == {"a": [1, 2]}
    assert two[0].client().exists("app:3:obj") == 1
    assert two[1].client().exists("app:3:obj") == 0  # several LOCATIONs are failover members, not replicas
    assert cache.get("missing", "dflt") == "dflt"
    assert cache.add("obj", "other") is False
    assert cache.has_key("obj")

    # timeouts: ttl/pttl/expire/persist/touch/expire_at
    assert 55 <= cache.ttl("obj") <= 60
    assert cache.pttl("obj") > 50_000
    assert cache.expire("obj", 100)
    assert cache.ttl("obj") > 60
    assert cache.persist("obj")
    assert cache.ttl("obj") is None
    assert cache.touch("obj", 10)
    assert cache.ttl("obj") <= 10

    # many
    cache.set_many({"k1": 1, "k2": "two"}, timeout=30)
    assert cache.get_many(["k1", "k2", "nope"]) == {"k1": 1, "k2": "two"}
    assert cache.delete_many(["k1", "k2"]) == 2

    # counters and versions
    cache.set("n", 1)
    assert cache.incr("n") == 2
    assert cache.decr("n", 2) == 0
    assert cache.incr("fresh", ignore_key_check=True) == 1
    with pytest.raises(ValueError):
        cache.incr("absent")
    cache.set("v", "x")
    assert cache.incr_version("v") == 4
    assert cache.get("v", version=4) == "x"

    # patterns and iteration (active endpoint only)
    for i in range(5):
        cache.set(f"pat:{i}", i)
    assert sorted(cache.iter_keys("pat:*")) == [f"pat:{i}" for i in range(5)]
    assert sorted(cache.keys("pat:*")) == [f"pat:{i}" for i in range(5)]
    assert cache.delete_pattern("pat:*") == 5

    # sets and hashes
    assert cache.sadd("s", "x", "y") == 2
    assert cache.smembers("s") == {"x", "y"}
    assert cache.sismember("s", "x")
    assert cache.scard("s") == 2
    assert set(cache.sscan_iter("s")) == {"x", "y"}
    assert cache.hset("h", "f", "v") == 1
    assert cache.hkeys("h") == ["f"]
    assert cache.hexists("h", "f")
    assert cache.hlen("h") == 1
    if hasattr(cache, "zadd"):  # django-redis >= 7
        assert cache.zadd("z", {"a": 1.0, "b": 2.0}) == 2
        assert cache.zcard("z") == 2
        assert cache.zscore("z", "b") == 2.0

    # lock
    lock = cache.lock("job", timeout=5)
    assert lock.acquire(blocking=False)
    lock.release()

    cache.delete("obj")
    assert cache.get("obj") is None
    cache.clear()
    assert two[0].client().dbsize() == 0


def test_serializer_compressor_and_prefix_options(geo_settings: GeoSettings, two: list[RedisServer]) -> None:
    from django.core.cache import caches

    entry = cache_entry(
        two,
        SERIALIZER="django_redis.serializers.json.JSONSerializer",
        COMPRESSOR="django_redis.compressors.zlib.ZlibCompressor",
    )
    entry["KEY_PREFIX"] = "site"
    entry["VERSION"] = 2
    entry["TIMEOUT"] = 42
    geo_settings(CACHES={"default": entry})
    cache = caches["default"]
    big = {"text": "x" * 5000}
    cache.set("doc", big)
    assert cache.get("doc") == big
    raw = two[0].client().get("site:2:doc")
    assert raw is not None and len(raw) < 1000  # compressed
    assert 40 <= cache.ttl("doc") <= 42  # default TIMEOUT applied


def test_get_redis_connection_returns_the_failover_client(geo_cache: Any) -> None:
    from django_redis import get_redis_connection

    cache = geo_cache()
    raw = get_redis_connection("default")
    assert isinstance(raw, FailoverRedis)
    assert raw.geofailover is cache.geofailover
    raw.set("raw", "1")
    assert cache.client.get_client().get("raw") == b"1"


def test_location_forms_all_mean_the_same_endpoints(geo_settings: GeoSettings, two: list[RedisServer]) -> None:
    from django.core.cache import caches

    urls = location(two)
    base = cache_entry(two)
    forms = {
        "as_list": urls,
        "semicolons": ";".join(urls),
        "commas": ",".join(urls),  # django-redis's separator still means failover members here
    }
    caches_setting = {alias: {**base, "LOCATION": loc} for alias, loc in forms.items()}
    caches_setting["in_options"] = {**base, "LOCATION": "", "OPTIONS": {**base["OPTIONS"], "GEOFAILOVER": {**base["OPTIONS"]["GEOFAILOVER"], "endpoints": urls}}}
    geo_settings(CACHES=caches_setting)
    for alias in caches_setting:
        engine = caches[alias].geofailover
        assert engine.endpoint_names == ["a", "b"], alias
        assert engine.name == f"django.{alias}"
        assert [ep.weight for ep in engine.config.endpoints] == [2.0, 1.0]


def test_one_engine_per_alias_shared_by_every_thread(geo_cache: Any) -> None:
    from django.core.cache import caches

    geo_cache()
    barrier = threading.Barrier(8)
    seen: list[Any] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            cache = caches["default"]  # a new backend object in each thread
            cache.incr("hits", ignore_key_check=True)
            seen.append((id(cache), cache.geofailover, cache.client.get_client().connection_pool))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({backend for backend, _, _ in seen}) == 8
    assert len({id(engine) for _, engine, _ in seen}) == 1
    assert len({id(pool) for _, _, pool in seen}) == 1
    assert caches["default"].get("hits") == 8
    monitors = [t for t in threading.enumerate() if t.name == "geofailover-monitor[django.default]"]
    assert len(monitors) == 1


def test_async_cache_methods(geo_cache: Any) -> None:
    cache = geo_cache()

    async def scenario() -> tuple[Any, ...]:
        await cache.aset("a", {"x": 1})
        await cache.aset_many({"b": 2, "c": 3})
        await cache.aadd("n", 10)
        return (
            await cache.aget("a"),
            await cache.aget_many(["b", "c"]),
            await cache.aincr("n", 5),
            await cache.ahas_key("a"),
            await cache.adelete("a"),
            await cache.aget_or_set("d", "made"),
        )

    assert asyncio.run(scenario()) == ({"x": 1}, {"b": 2, "c": 3}, 15, True, True, "made")


def test_sessions_on_the_cache_backend(geo_cache: Any) -> None:
    from django.test import Client

    geo_cache()
    client = Client()
    assert [client.get("/session/").json()["n"] for _ in range(3)] == [1, 2, 3]


def test_password_option_applies_to_every_endpoint_and_stays_secret(
    geo_settings: GeoSettings, redis_server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from django.core.cache import caches

    secret = "s3cr3t-Passw0rd"
    servers = redis_server_factory(2, password=secret)
    entry = {"BACKEND": BACKEND, "LOCATION": location(servers), "OPTIONS": {**cache_entry(servers)["OPTIONS"], "PASSWORD": secret}}
    geo_settings(CACHES={"default": entry})
    cache = caches["default"]
    cache.set("k", 1)
    assert cache.get("k") == 1
    engine = cache.geofailover
    assert engine.check_now()
    status = engine.status()
    assert [ep["health"] for ep in status["endpoints"]] == ["healthy", "healthy"]  # probes authenticate too
    for text in (repr(cache), repr(engine), repr(cache.client.get_client()), str(status), caplog.text):
        assert secret not in text


def test_backend_subclass_is_recognised(geo_settings: GeoSettings, two: list[RedisServer]) -> None:
    from django.core.cache import caches

    entry = {**cache_entry(two), "BACKEND": "tests.django.test_cache_backend.MyCache"}
    geo_settings(CACHES={"default": entry})
    cache = caches["default"]
    assert isinstance(cache, MyCache)
    assert cache.alias == "default"
    cache.set("x", 1)
    assert cache.get("x") == 1


from geofailover_django.cache import GeoFailoverCache  # noqa: E402 - the subclass below is referenced by dotted path


class MyCache(GeoFailoverCache):
    """A project's own subclass, named by BACKEND."""
