"""Host libraries on the app's FailoverRedis through real failovers:
Flask-Session, Flask-Caching (our backend), Flask-Limiter and RQ (when installed)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("flask", reason="Flask integration tests need the flask extra: pip install geofailover[flask]")

from flask import Flask, session

from geofailover_core import ConfigurationError, FailoverRedis, registry
from geofailover_core.testing import RedisServer, wait_until
from geofailover_flask import GeoFailover

from .test_flask_support import new_app

pytest.importorskip("flask_caching")
from flask_caching import Cache

GEO_CACHE = "geofailover_flask.cache.GeoFailoverCache"


@pytest.fixture(autouse=True)
def _close_engines() -> Iterator[None]:
    yield
    registry.close_all()


def test_flask_session_keeps_working_through_the_switch(two: list[RedisServer]) -> None:
    flask_session = pytest.importorskip("flask_session")
    geo = GeoFailover()
    app = new_app(two, SESSION_TYPE="redis", SECRET_KEY="test")
    geo.init_app(app)
    app.config["SESSION_REDIS"] = geo.get_client(app)
    flask_session.Session(app)

    @app.get("/visit")
    def visit() -> dict[str, Any]:
        session["n"] = session.get("n", 0) + 1
        return {"n": session["n"], "region": geo.engine.active}

    client = app.test_client()
    assert [client.get("/visit").json["n"] for _ in range(3)] == [1, 2, 3]  # type: ignore[index]
    assert two[0].client().keys("session:*")

    two[0].kill()
    after = [client.get("/visit") for _ in range(3)]
    assert all(r.status_code == 200 for r in after)
    # Failover moves traffic, not data: the session starts over on b and then persists there.
    assert [r.json["n"] for r in after] == [1, 2, 3]  # type: ignore[index]
    assert {r.json["region"] for r in after} == {"b"}  # type: ignore[index]
    assert two[1].client().keys("session:*")

    two[0].restart()
    wait_until(lambda: geo.get_engine(app).active == "a", timeout=10)
    assert client.get("/visit").status_code == 200


def _cached_app(servers: list[RedisServer], *, cache_first: bool = False, **config: Any) -> tuple[Flask, GeoFailover, Cache, list[int]]:
    geo = GeoFailover()
    cache = Cache()
    app = new_app(servers, CACHE_TYPE=GEO_CACHE, **config)
    if cache_first:
        cache.init_app(app)
        geo.init_app(app)
    else:
        geo.init_app(app)
        cache.init_app(app)
    computed: list[int] = []

    @app.get("/expensive")
    @cache.cached(timeout=60)
    def expensive() -> dict[str, Any]:
        computed.append(1)
        return {"computed": len(computed), "region": geo.engine.active}

    return app, geo, cache, computed


def test_flask_caching_backend_keeps_working_through_the_switch(two: list[RedisServer]) -> None:
    app, geo, cache, computed = _cached_app(two)
    client = app.test_client()
    assert client.get("/expensive").json == {"computed": 1, "region": "a"}
    assert client.get("/expensive").json["computed"] == 1  # type: ignore[index]
    assert two[0].client().keys("flask_cache_*")
    with app.app_context():
        cache.set("direct", {"x": 1})
        assert cache.get("direct") == {"x": 1}

    two[0].kill()
    response = client.get("/expensive")
    assert response.status_code == 200
    assert response.json == {"computed": 2, "region": "b"}  # cold cache on b: computed again
    assert client.get("/expensive").json["computed"] == 2  # type: ignore[index] # then cached on b
    assert len(computed) == 2
    assert two[1].client().keys("flask_cache_*")
    with app.app_context():
        assert cache.get("direct") is None
        cache.set("direct", 2)
        assert cache.get("direct") == 2

    two[0].restart()
    wait_until(lambda: geo.get_engine(app).active == "a", timeout=10)
    assert client.get("/expensive").status_code == 200


def test_cache_shares_the_extensions_engine_in_either_init_order(two: list[RedisServer]) -> None:
    for cache_first in (False, True):
        app, geo, cache, _ = _cached_app(two, cache_first=cache_first, GEOFAILOVER_OPTIONS={"decode_responses": True, "probe_interval": 0.1})
        backend = app.extensions["cache"][cache]
        assert isinstance(backend._write_client, FailoverRedis)
        assert backend._write_client.geofailover is geo.get_engine(app)
        assert backend._write_client is not geo.get_client(app)  # its own pool: bytes for cachelib
        with app.app_context():
            cache.set("k", [1, 2])
            assert cache.get("k") == [1, 2]  # the app's client decodes, the cache's does not
            assert geo.client.exists("flask_cache_k") == 1
            geo.client.set("text", "x")
            assert geo.client.get("text") == "x"
        registry.close_all()


def test_cache_options_and_key_prefix(two: list[RedisServer]) -> None:
    app, _geo, cache, _ = _cached_app(two, CACHE_KEY_PREFIX="pfx:", CACHE_OPTIONS={"socket_timeout": 0.7, "client_name": "flask-cache"})
    backend = app.extensions["cache"][cache]
    with app.app_context():
        cache.set("k", 1)
    assert two[0].client().exists("pfx:k")
    pool = backend._write_client.connection_pool
    assert pool.connection_kwargs["socket_timeout"] == 0.7
    clients = two[0].client().client_list()
    assert any(c["name"] == "flask-cache" for c in clients)


@pytest.mark.parametrize(
    ("config", "pattern"),
    [
        ({"CACHE_REDIS_URL": "redis://localhost:6379/0"}, r"'CACHE_REDIS_URL': is not used by GeoFailoverCache.*GEOFAILOVER_URL"),
        ({"CACHE_REDIS_HOST": "localhost"}, r"CACHE_REDIS_HOST"),
        ({"CACHE_OPTIONS": {"failback_grace_period": 1}}, r"CACHE_OPTIONS\['failback_grace_period'\].*GEOFAILOVER_OPTIONS"),
        ({"CACHE_OPTIONS": {"socket_timout": 1}}, r"CACHE_OPTIONS\['socket_timout'\].*did you mean"),
        ({"CACHE_OPTIONS": {"decode_responses": True}}, r"CACHE_OPTIONS\['decode_responses'\]"),
        ({"CACHE_ARGS": ["x"]}, r"CACHE_ARGS"),
        ({"CACHE_GEOFAILOVER_NAME": "sessions"}, r"GEOFAILOVER_SESSIONS_URL.*missing"),
        ({"CACHE_GEOFAILOVER_NAME": "Bad-Name"}, r"not a valid instance name"),
    ],
)
def test_cache_configuration_errors(two: list[RedisServer], config: dict[str, Any], pattern: str) -> None:
    app = new_app(two, CACHE_TYPE=GEO_CACHE, **config)
    with pytest.raises(ConfigurationError, match=pattern):
        Cache(app)


def test_cache_on_a_configuration_name_already_taken_names_the_fix(two: list[RedisServer], redis_server: RedisServer) -> None:
    GeoFailover().init_app(new_app(two))  # "default" now means these two servers in this process
    other = new_app([redis_server], CACHE_TYPE=GEO_CACHE)
    with pytest.raises(ConfigurationError, match=r"GEOFAILOVER_OPTIONS\['name'\].*already in use"):
        Cache(other)


def test_cache_on_a_named_instance(two: list[RedisServer], redis_server: RedisServer) -> None:
    app = new_app(two, CACHE_TYPE=GEO_CACHE, CACHE_GEOFAILOVER_NAME="cache", GEOFAILOVER_CACHE_URL=f"{redis_server.url}?name=c1")
    cache = Cache(app)
    with app.app_context():
        cache.set("k", 1)
    assert redis_server.client().exists("flask_cache_k")
    assert not two[0].client().exists("flask_cache_k")


def test_flask_limiter_on_the_failover_pool(two: list[RedisServer]) -> None:
    """Flask-Limiter (limits) builds a plain redis.Redis on the pool it is
    given: it follows the active endpoint, and its own errors during the
    detection window are swallowed as configured."""
    pytest.importorskip("flask_limiter")
    from flask_limiter import Limiter
    from flask_limiter.util import get_remote_address

    geo = GeoFailover()
    app = new_app(two, RATELIMIT_SWALLOW_ERRORS=True)
    geo.init_app(app)
    limiter = Limiter(
        get_remote_address,
        storage_uri="redis://",
        storage_options={"connection_pool": geo.get_client(app).connection_pool},
        default_limits=["1000/minute"],
    )
    limiter.init_app(app)

    @app.get("/limited")
    @limiter.limit("3/minute")
    def limited() -> str:
        return "ok"

    client = app.test_client()
    assert [client.get("/limited").status_code for _ in range(4)] == [200, 200, 200, 429]
    two[0].kill()
    assert client.get("/limited").status_code == 200  # fails open (or already on b)
    wait_until(lambda: geo.get_engine(app).active == "b", timeout=5)
    with app.app_context():
        limiter.reset()
    # Counters live on the endpoint: b starts from zero.
    assert [client.get("/limited").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert two[1].client().keys("LIMITS*")


def test_rq_enqueue_and_work_through_the_switch(two: list[RedisServer]) -> None:
    pytest.importorskip("rq")
    from rq import Queue, SimpleWorker

    geo = GeoFailover()
    app = new_app(two)
    geo.init_app(app)
    with app.app_context():
        queue = Queue("jobs", connection=geo.client)
        first = queue.enqueue("builtins.len", "abc")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            SimpleWorker([queue], connection=geo.client).work(burst=True)
        assert first.latest_result().return_value == 3  # type: ignore[union-attr]
        two[0].kill()
        second = queue.enqueue("builtins.len", "abcd")  # lands on b
        assert geo.engine.active == "b"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            SimpleWorker([queue], connection=geo.client).work(burst=True)
        assert second.latest_result().return_value == 4  # type: ignore[union-attr]
