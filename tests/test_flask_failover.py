"""Flask apps through real faults: requests, signals, named instances, readiness."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("flask", reason="Flask integration tests need the flask extra: pip install geofailover[flask]")

from flask import Flask, current_app

from geofailover_core import registry
from geofailover_core.testing import RedisServer, wait_until
from geofailover_flask import GeoFailover, readiness_blueprint, signals

from .test_flask_support import FAST, engine_url, new_app


@pytest.fixture(autouse=True)
def _close_engines() -> Iterator[None]:
    yield
    registry.close_all()


def _hit_counter(servers: list[RedisServer], **options: Any) -> tuple[Flask, GeoFailover]:
    geo = GeoFailover()
    app = new_app(servers, options=options)
    geo.init_app(app)

    @app.get("/")
    def index() -> dict[str, Any]:
        hits = geo.client.incr("hits")
        return {"hits": hits, "region": geo.engine.active}

    return app, geo


def _flush(geo: GeoFailover, app: Flask) -> None:
    assert geo.get_engine(app).events.flush(5), "event dispatcher did not drain"


def test_requests_keep_succeeding_while_the_active_endpoint_is_killed_and_restarted(two: list[RedisServer]) -> None:
    app, geo = _hit_counter(two)
    client = app.test_client()
    engine = geo.get_engine(app)
    regions: list[str] = []

    def get() -> None:
        response = client.get("/")
        assert response.status_code == 200, response.data
        regions.append(response.json["region"])  # type: ignore[index]

    for _ in range(5):
        get()
    assert regions == ["a"] * 5
    two[0].kill()
    for _ in range(5):  # the first of these finds the region dead and moves over
        get()
    assert regions[5:] == ["b"] * 5
    assert two[1].client().get("hits") == b"5"
    two[0].restart()
    wait_until(lambda: (get(), regions[-1] == "a")[1], timeout=10, message="traffic did not fail back to a")
    get()
    assert regions[-1] == "a"
    assert engine.status()["endpoints"][0]["counters"]["switched_to"] >= 1


def test_concurrent_requests_see_no_error_across_kill_and_restart(two: list[RedisServer]) -> None:
    """A hammering thread while the region dies and returns; idempotent
    commands under retry_on_failover="all", so an in-flight command lost with
    the region is re-sent rather than raised."""
    geo = GeoFailover()
    app = new_app(two, options={"retry_on_failover": "all"})
    geo.init_app(app)

    @app.get("/<key>")
    def page(key: str) -> dict[str, Any]:
        # Each command stands alone: a switch may fall between two of them.
        stored = geo.client.set(key, "v")
        echoed = geo.client.echo("v")
        return {"value": "v" if stored and echoed == b"v" else "lost", "region": geo.engine.active}

    failures: list[str] = []
    served: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        client = app.test_client()
        n = 0
        while not stop.is_set():
            n += 1
            try:
                response = client.get(f"/k{n % 50}")
            except Exception as exc:  # TESTING propagates view errors
                failures.append(repr(exc))
                continue
            if response.status_code != 200 or response.json["value"] != "v":  # type: ignore[index]
                failures.append(f"{response.status_code}: {response.data[:200]!r}")
            else:
                served.add(response.json["region"])  # type: ignore[index]

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        wait_until(lambda: "a" in served, timeout=5)
        two[0].kill()
        wait_until(lambda: "b" in served, timeout=5, message="no request served by b")
        two[0].restart()
        served.clear()
        wait_until(lambda: "a" in served, timeout=10, message="no request served by a after the restart")
    finally:
        stop.set()
        thread.join(10)
    assert failures == []


def test_signals_fire_once_per_switch_with_the_app_as_sender(two: list[RedisServer]) -> None:
    app, geo = _hit_counter(two)
    received: list[tuple[str, Any, Any]] = []

    def record(kind: str) -> Any:
        def receiver(sender: Flask, event: Any, instance: str, **extra: Any) -> None:
            assert current_app._get_current_object() is sender  # an app context is pushed
            received.append((kind, sender, event))

        return receiver

    keep = {kind: record(kind) for kind in signals.SIGNALS}  # blinker holds receivers weakly
    for kind, receiver in keep.items():
        signals.SIGNALS[kind].connect(receiver, sender=app)
    other = new_app(GEOFAILOVER_URL=engine_url(two), GEOFAILOVER_OPTIONS=FAST)
    geo.init_app(other)  # same configuration: same engine, its own signals
    other_received: list[Any] = []

    def other_receiver(sender: Flask, **extra: Any) -> None:
        other_received.append(sender)

    signals.failover.connect(other_receiver, sender=other)
    try:
        client = app.test_client()
        assert client.get("/").status_code == 200
        engine = geo.get_engine(app)
        wait_until(lambda: all(ep["health"] == "healthy" for ep in engine.status()["endpoints"]), timeout=5)
        _flush(geo, app)
        received.clear()

        two[0].kill()
        assert client.get("/").json["region"] == "b"  # type: ignore[index]
        wait_until(lambda: engine.status()["endpoints"][0]["health"] == "unhealthy", timeout=5)
        _flush(geo, app)
        kinds = [kind for kind, _, _ in received]
        assert kinds.count("failover") == 1, kinds
        assert [kind for kind in kinds if kind != "health_changed"] == ["failover"]
        failover_event = next(e for k, _, e in received if k == "failover")
        assert (failover_event.from_endpoint, failover_event.to_endpoint) == ("a", "b")
        assert all(sender is app for _, sender, _ in received)
        assert other_received == [other]

        received.clear()
        two[0].restart()
        wait_until(lambda: engine.active == "a", timeout=10)
        _flush(geo, app)
        kinds = [kind for kind, _, _ in received]
        assert [kind for kind in kinds if kind != "health_changed"] == ["failback"]
        health = [(e.endpoint, e.new) for k, _, e in received if k == "health_changed"]
        assert health == [("a", "healthy")]
    finally:
        for kind, receiver in keep.items():
            signals.SIGNALS[kind].disconnect(receiver)
        signals.failover.disconnect(other_receiver)


def test_all_down_and_recovered_signals(two: list[RedisServer]) -> None:
    app, geo = _hit_counter(two)
    kinds: list[str] = []

    def on_any(sender: Flask, event: Any, **extra: Any) -> None:
        kinds.append(event.kind)

    for signal in (signals.all_down, signals.recovered):
        signal.connect(on_any, sender=app)
    try:
        assert app.test_client().get("/").status_code == 200
        engine = geo.get_engine(app)
        for server in two:
            server.kill()
        wait_until(lambda: engine.active is None, timeout=5)
        two[1].restart()
        wait_until(lambda: engine.active == "b", timeout=5)
        _flush(geo, app)
        assert kinds == ["all_down", "recovered"]
    finally:
        for signal in (signals.all_down, signals.recovered):
            signal.disconnect(on_any)


def test_a_raising_receiver_is_logged_and_the_others_still_run(two: list[RedisServer], caplog: pytest.LogCaptureFixture) -> None:
    app, geo = _hit_counter(two)
    calls: list[str] = []

    def broken(sender: Flask, **extra: Any) -> None:
        calls.append("broken")
        raise RuntimeError("receiver bug")

    def healthy(sender: Flask, **extra: Any) -> None:
        calls.append("healthy")

    signals.failover.connect(broken, sender=app)
    signals.failover.connect(healthy, sender=app)
    try:
        client = app.test_client()
        assert client.get("/").status_code == 200
        with caplog.at_level(logging.ERROR, logger="geofailover.flask"):
            two[0].kill()
            assert client.get("/").status_code == 200
            wait_until(lambda: len(calls) == 2, timeout=5)
            _flush(geo, app)
        assert sorted(calls) == ["broken", "healthy"]
        assert any("receiver bug" in (r.exc_text or "") or "raised" in r.getMessage() for r in caplog.records)
        assert client.get("/").status_code == 200  # the dispatcher survived
    finally:
        signals.failover.disconnect(broken)
        signals.failover.disconnect(healthy)


def test_a_collected_app_stops_receiving_and_unsubscribes(two: list[RedisServer]) -> None:
    import gc

    geo = GeoFailover()
    app = new_app(two)
    geo.init_app(app)
    engine = geo.get_engine(app)
    subscribed = len(engine.events._subscribers["failover"])
    del app
    gc.collect()
    assert len(engine.events._subscribers["failover"]) == subscribed - 1


def test_named_instances_fail_over_independently(redis_server_factory) -> None:
    main_servers = redis_server_factory(2)
    session_servers = redis_server_factory(2)
    geo = GeoFailover()
    sessions = GeoFailover(name="sessions")
    app = new_app(main_servers)
    app.config["GEOFAILOVER_SESSIONS_URL"] = engine_url(session_servers)
    app.config["GEOFAILOVER_SESSIONS_OPTIONS"] = FAST
    geo.init_app(app)
    sessions.init_app(app)
    seen: list[str] = []

    def on_failover(sender: Flask, instance: str, **extra: Any) -> None:
        seen.append(instance)

    signals.failover.connect(on_failover, sender=app)
    try:
        with app.app_context():
            geo.client.set("k", "main")
            sessions.client.set("k", "sessions")
            session_servers[0].kill()
            assert sessions.client.get("k") is None  # cold on b
            assert sessions.engine.active == "b"
            assert geo.engine.active == "a"
            assert geo.client.get("k") == b"main"
        _flush(sessions, app)
        assert seen == ["sessions"]
    finally:
        signals.failover.disconnect(on_failover)


def test_readiness_blueprint_reports_200_then_503_without_secrets(redis_server_factory) -> None:
    servers = redis_server_factory(2, password="pw-s3cr3t")
    geo = GeoFailover()
    app = new_app(servers)
    geo.init_app(app)
    app.register_blueprint(readiness_blueprint())
    client = app.test_client()
    engine = geo.get_engine(app)

    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["ready"] is True
    assert body["instances"]["default"]["active"] == "a"
    assert [ep["name"] for ep in body["instances"]["default"]["endpoints"]] == ["a", "b"]

    servers[0].kill()
    wait_until(lambda: engine.active == "b", timeout=5)
    assert client.get("/readyz").status_code == 200  # a failover is not "unready"

    servers[1].kill()
    wait_until(lambda: engine.active is None, timeout=5)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["ready"] is False
    text = response.get_data(as_text=True)
    assert "pw-s3cr3t" not in text and "127.0.0.1" not in text and "redis://" not in text


def test_readiness_of_selected_and_missing_instances(two: list[RedisServer]) -> None:
    geo = GeoFailover()
    app = new_app(two)
    geo.init_app(app)
    app.register_blueprint(readiness_blueprint("/ready/cache", names=["cache"], blueprint_name="r1"))
    app.register_blueprint(readiness_blueprint("/ready/default", names=["default"], blueprint_name="r2"))
    client = app.test_client()
    response = client.get("/ready/cache")
    assert response.status_code == 503
    assert response.get_json()["instances"]["cache"]["error"] == "not initialised on this app"
    assert client.get("/ready/default").status_code == 200
    bare = Flask("bare")
    bare.register_blueprint(readiness_blueprint())
    assert bare.test_client().get("/readyz").status_code == 503
