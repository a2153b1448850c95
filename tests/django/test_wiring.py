"""Mis-wiring, subclasses and lifecycle edges of the django-redis plug-in points."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django_redis.client import DefaultClient

from geofailover_core import registry
from geofailover_core.testing import RedisServer, wait_until
from geofailover_django.client import GeoFailoverClient

from .conftest import GeoSettings, cache_entry, location


class CountingClient(GeoFailoverClient):
    """A project's own client subclass with an extra method that talks to Redis."""

    def raw_dbsize(self) -> int:
        return int(self.get_client().dbsize())


def test_factory_on_a_plain_django_redis_backend_explains_itself(geo_settings: GeoSettings, two: list[RedisServer]) -> None:
    from django.core.cache import caches
    from django.core.exceptions import ImproperlyConfigured

    geo_settings(CACHES={"default": {
        "BACKEND": "django_redis.cache.RedisCache", "LOCATION": two[0].url,
        "OPTIONS": {"CONNECTION_FACTORY": "geofailover_django.pool.GeoFailoverConnectionFactory"},
    }})
    with pytest.raises(ImproperlyConfigured, match="GeoFailoverClient"):
        caches["default"].get("k")


def test_client_on_a_plain_django_redis_backend_explains_itself(geo_settings: GeoSettings, two: list[RedisServer]) -> None:
    from django.core.cache import caches
    from django.core.exceptions import ImproperlyConfigured

    geo_settings(CACHES={"default": {
        "BACKEND": "django_redis.cache.RedisCache", "LOCATION": two[0].url,
        "OPTIONS": {"CLIENT_CLASS": "geofailover_django.client.GeoFailoverClient"},
    }})
    with pytest.raises(ImproperlyConfigured, match="GeoFailoverCache"):
        caches["default"].get("k")


def test_geofailover_cache_helper_rejects_other_backends(geo_settings: GeoSettings) -> None:
    from geofailover_django.cache import geofailover_cache

    geo_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}})
    with pytest.raises(ValueError, match="not a geofailover cache"):
        geofailover_cache("default")


def test_every_io_method_of_the_installed_django_redis_is_wrapped() -> None:
    for name in dir(DefaultClient):
        if name.startswith("_") or not callable(getattr(DefaultClient, name)):
            continue
        wrapped = getattr(getattr(GeoFailoverClient, name), "_geo_wrapped", False)
        assert wrapped == (name not in {"make_key", "make_pattern", "encode", "decode", "get_client", "get_client_with_index",
                                        "connect", "disconnect", "get_next_client_index", "close", "do_close_clients",
                                        "reverse_key"}), name


def test_a_client_subclass_gets_the_same_error_policy(geo_settings: GeoSettings, two: list[RedisServer]) -> None:
    from django.core.cache import caches

    entry = cache_entry(two, ignore=True, CLIENT_CLASS="tests.django.test_wiring.CountingClient")
    geo_settings(CACHES={"default": entry})
    cache = caches["default"]
    cache.set("k", 1)
    assert isinstance(cache.client, CountingClient)
    assert cache.client.raw_dbsize() == 1
    two[1].kill()
    two[0].kill()
    engine = cache.geofailover
    wait_until(lambda: cache.get("k") is None and engine.active is None, timeout=5)
    from django_redis.exceptions import ConnectionInterrupted

    with pytest.raises(ConnectionInterrupted):  # what IGNORE_EXCEPTIONS-aware callers catch
        cache.client.raw_dbsize()


def test_a_closed_engine_is_replaced_on_next_use(geo_cache: Any) -> None:
    cache = geo_cache()
    cache.set("k", 1)
    old = cache.geofailover
    registry.close_all()  # e.g. a shutdown hook ran, then the process kept going
    assert cache.get("k") == 1
    assert cache.geofailover is not old and not cache.geofailover.closed


def test_changed_settings_rebind_and_stop_relaying_for_the_old_binding(geo_settings: GeoSettings, two: list[RedisServer]) -> None:
    from django.core.cache import caches

    from geofailover_django import binding

    geo_settings(CACHES={"default": cache_entry(two)})
    first = caches["default"].geofailover_binding()
    caches["default"].set("k", 1)
    geo_settings(CACHES={"default": cache_entry(two, geo={"failback_grace_period": 7})})
    second = caches["default"].geofailover_binding()
    assert second is not first
    assert binding.bindings() == [second]
    assert caches["default"].geofailover.config.failback_grace_period == 7


def test_a_failing_database_cleanup_does_not_stop_signals(
    geo_cache: Any, two: list[RedisServer], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import django.db

    from geofailover_django import signals

    def broken_cleanup() -> None:
        raise RuntimeError("database is down too")

    monkeypatch.setattr(django.db, "close_old_connections", broken_cleanup)
    got: list[Any] = []

    def receiver(sender: Any, event: Any, **kwargs: Any) -> None:
        got.append(event)

    signals.failover.connect(receiver)
    signals.failback.connect(receiver)
    try:
        caplog.set_level(logging.DEBUG, logger="geofailover.django")
        cache = geo_cache()
        cache.set("k", 1)
        two[0].kill()
        cache.set("k", 2)
        two[0].restart()
        wait_until(lambda: len(got) == 2, timeout=5, message="both signals delivered")
    finally:
        signals.failover.disconnect(receiver)
        signals.failback.disconnect(receiver)
    assert any("close_old_connections failed" in r.getMessage() for r in caplog.records)


def test_several_aliases_one_engine_name_share_the_engine(geo_settings: GeoSettings, two: list[RedisServer]) -> None:
    from django.core.cache import caches

    same = {"name": "shared"}
    geo_settings(CACHES={"default": cache_entry(two, geo=same), "other": {**cache_entry(two, geo=same), "KEY_PREFIX": "o"}})
    assert caches["default"].geofailover is caches["other"].geofailover
    assert caches["default"].client.get_client().connection_pool is caches["other"].client.get_client().connection_pool
    assert location(two) == caches["other"]._geo_location
