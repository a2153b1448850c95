"""The geofailover result backend on real servers: writes, fallback reads, waiting across a switch."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("celery")

from celery import Celery, states
from celery.result import AsyncResult, GroupResult

import geofailover_celery  # noqa: F401 - registers the scheme
from geofailover_celery.backend import GeoFailoverBackend
from geofailover_core import registry
from geofailover_core.testing import RedisServer, wait_until
from tests import test_celery_support as support
from tests.test_celery_support import DURABLE, FAST, geo_url, quiesce

celery_env = support.celery_env  # the fixture

_names = itertools.count()


@pytest.fixture
def servers(redis_server_factory: Callable[..., list[RedisServer]]) -> list[RedisServer]:
    return redis_server_factory(2, extra_args=DURABLE)


@pytest.fixture
def app(servers: list[RedisServer]) -> Iterator[Celery]:
    a, b = servers
    app = Celery(f"results{next(_names)}", set_as_current=False)
    app.conf.update(
        broker_url="memory://",
        result_backend=f"{geo_url(a, 1, 'a', 2)};{geo_url(b, 1, 'b', 1)}",
        result_backend_transport_options={"geofailover": {**FAST, "name": f"results{next(_names)}"}},
        result_expires=600,
    )
    yield app
    quiesce(app)
    registry.close_all()


def keys_on(server: RedisServer) -> set[str]:
    return {k.decode() for k in server.client(db=1).keys("celery-task-meta-*")}


def store(app: Celery, value: Any, state: str = states.SUCCESS, task_id: str | None = None) -> str:
    task_id = task_id or uuid.uuid4().hex
    app.backend.store_result(task_id, value, state)
    return task_id


def test_backend_is_registered_and_masks_secrets(redis_server_factory: Callable[..., list[RedisServer]]) -> None:
    a, b = redis_server_factory(2, password="s3cret-pw")
    app = Celery("masked", set_as_current=False)
    app.conf.result_backend = f"{geo_url(a, 1, 'a', 2)};{geo_url(b, 1, 'b', 1)}"  # with the password
    app.conf.result_backend_transport_options = {"geofailover": {**FAST, "name": "masked-results"}}
    try:
        backend = app.backend
        assert isinstance(backend, GeoFailoverBackend)
        uri = backend.as_uri()
        assert "s3cret" not in uri and "s3cret" not in repr(backend.client) and uri.count("***") == 2
        assert "name=a&weight=2" in uri and "name=b&weight=1" in uri
        assert "s3cret-pw" in backend.as_uri(include_password=True) and "s3cret-pw" in app.conf.result_backend
        task_id = store(app, 42)
        assert app.AsyncResult(task_id).get(timeout=5) == 42
    finally:
        quiesce(app)
        registry.close_all()


def test_results_are_written_to_the_active_endpoint(app: Celery, servers: list[RedisServer]) -> None:
    a, b = servers
    first = store(app, 1)
    assert f"celery-task-meta-{first}" in keys_on(a)
    a.kill()
    second = store(app, 2)  # the refused write is reported; the core re-sends it on b
    assert app.backend.geofailover.active == "b"
    assert f"celery-task-meta-{second}" in keys_on(b)
    assert app.AsyncResult(second).get(timeout=5) == 2


def test_a_result_stored_before_a_switch_is_found_after_it(app: Celery, servers: list[RedisServer]) -> None:
    a, _ = servers
    engine = app.backend.geofailover
    assert engine.check_now()
    engine.failover_to("b", reason="drill")
    on_b = store(app, "written during the outage")
    started_on_a = uuid.uuid4().hex
    engine.failback()
    store(app, None, states.STARTED, task_id=started_on_a)  # a knows only that it started ...
    engine.failover_to("b")
    store(app, "done", task_id=started_on_a)  # ... b has the final state
    engine.failback()
    assert engine.active == "a"
    assert f"celery-task-meta-{on_b}" not in keys_on(a)
    assert app.AsyncResult(on_b).get(timeout=5) == "written during the outage"
    assert app.AsyncResult(started_on_a).state == states.SUCCESS
    assert app.AsyncResult(started_on_a).get(timeout=5) == "done"
    assert app.AsyncResult(uuid.uuid4().hex).state == states.PENDING


def _fresh_app(app: Celery, name: str) -> Celery:
    """Another process's view: the same endpoints, an engine of its own that has never switched."""
    fresh = Celery(name, set_as_current=False)
    fresh.conf.result_backend = app.conf.result_backend
    fresh.conf.result_backend_transport_options = {"geofailover": {**FAST, "name": name}}
    return fresh


def test_a_result_stored_during_an_outage_is_found_by_a_process_started_after_it(
    app: Celery, servers: list[RedisServer]
) -> None:
    """The stand-in mark: b says it holds results, so a process that never saw the switch still looks there."""
    a, b = servers
    engine = app.backend.geofailover
    assert engine.check_now()
    engine.failover_to("b", reason="drill")
    on_b = store(app, "written during the outage")
    engine.failback()
    later = _fresh_app(app, "started-after-the-outage")
    try:
        assert later.backend.geofailover.generation == 0  # read right after start: b need not be probed yet
        assert later.AsyncResult(on_b).get(timeout=5) == "written during the outage"
        assert f"celery-task-meta-{on_b}" not in keys_on(a)
        assert 0 < b.client(db=1).ttl("celery-task-meta-~geofailover:stood-in") <= 600, "the mark expires with the results"
        assert b.client(db=1).delete("celery-task-meta-~geofailover:stood-in") == 1
        still = _fresh_app(app, "started-after-the-mark-expired")
        assert still.AsyncResult(on_b).state == states.PENDING, "no mark, no switch seen: a is asked alone"
        quiesce(still)
    finally:
        quiesce(later)


def test_reads_ask_only_the_active_endpoint_while_nothing_has_switched(celery_env: support.CeleryEnv) -> None:
    """The worker reads a task's state before storing it and the waiting client reads it pending:
    neither may cost a round trip to the standby when no switch could have put the result there."""
    env = celery_env
    env.start_worker("solo")
    geoapp = env.app()
    results = [geoapp.record.delay(i) for i in range(20)]
    assert [r.get(timeout=10) for r in results] == list(range(20))
    stats = env.b.client().info("commandstats")
    assert {k: v["calls"] for k, v in stats.items() if k in ("cmdstat_get", "cmdstat_mget")} == {}, stats


def _wait_in_thread(result: AsyncResult) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = result.get(timeout=8)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


@pytest.mark.parametrize("move", ["failover", "failback"])
def test_get_keeps_waiting_across_a_switch(app: Celery, servers: list[RedisServer], move: str) -> None:
    engine = app.backend.geofailover
    if move == "failback":
        engine.failover_to("b", reason="drill")
    task_id = uuid.uuid4().hex
    result = app.AsyncResult(task_id)
    app.backend.result_consumer.consume_from(task_id)  # as apply_async() does: subscribe before the result exists
    thread, box = _wait_in_thread(result)
    wait_until(lambda: app.backend.result_consumer._pubsub is not None and app.backend.result_consumer.subscribed_to,
               5, message="subscribed")
    if move == "failover":
        engine.failover_to("b", reason="drill")
    else:
        engine.failback()  # b stays up: its subscription would stay silent forever
    store(app, "after the switch", task_id=task_id)  # published on the new endpoint only
    thread.join(8)
    assert box.get("value") == "after the switch", box


def test_group_results_across_a_switch(app: Celery, servers: list[RedisServer]) -> None:
    engine = app.backend.geofailover
    ids = [uuid.uuid4().hex for _ in range(6)]
    group = GroupResult(uuid.uuid4().hex, [app.AsyncResult(i) for i in ids], app=app)
    for i in ids[:3]:
        store(app, i, task_id=i)
    engine.failover_to("b", reason="drill")
    for i in ids[3:]:
        store(app, i, task_id=i)
    engine.failback()
    assert group.get(timeout=5) == ids
    assert group.join_native(timeout=5) == ids


def test_a_fallback_read_skips_an_endpoint_that_does_not_answer(
    app: Celery, servers: list[RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    _, b = servers
    engine = app.backend.geofailover
    engine.failover_to("b", reason="drill")
    engine.failback()  # a switch: for fallback_window, a read that misses also asks b
    task_id = store(app, "on a")
    b.kill()  # the engine has not probed b yet: a fallback read still tries it
    with caplog.at_level("DEBUG", logger="geofailover.celery"):
        assert app.AsyncResult(uuid.uuid4().hex).state == states.PENDING
    assert "fallback read on b failed" in caplog.text
    assert app.AsyncResult(task_id).get(timeout=5) == "on a"


def test_fallback_reads_can_be_turned_off(servers: list[RedisServer]) -> None:
    a, b = servers
    app = Celery("nofallback", set_as_current=False)
    app.conf.result_backend = f"{geo_url(a, 1, 'a', 2)};{geo_url(b, 1, 'b', 1)}"
    app.conf.result_backend_transport_options = {"geofailover": {**FAST, "name": "nofallback", "fallback_reads": False}}
    try:
        engine = app.backend.geofailover
        engine.failover_to("b")
        task_id = store(app, "on b")
        engine.failback()
        assert app.AsyncResult(task_id).state == states.PENDING
    finally:
        quiesce(app)
        registry.close_all()


def test_a_result_a_lagging_worker_stores_on_the_old_endpoint_reaches_the_waiter(
    app: Celery, servers: list[RedisServer]
) -> None:
    """Processes switch at slightly different moments: the waiter moved to b, the worker still writes to a."""
    a, _ = servers
    lagging = Celery("lagging-worker", set_as_current=False)
    lagging.conf.result_backend = app.conf.result_backend
    lagging.conf.result_backend_transport_options = {"geofailover": {**FAST, "name": "lagging-worker"}}
    try:
        task_id = uuid.uuid4().hex
        result = app.AsyncResult(task_id)
        app.backend.result_consumer.consume_from(task_id)
        thread, box = _wait_in_thread(result)
        wait_until(lambda: app.backend.result_consumer.subscribed_to, 5, message="subscribed")
        app.backend.geofailover.failover_to("b", reason="drill")
        wait_until(lambda: app.backend.result_consumer._geo_generation == app.backend.geofailover.generation, 5,
                   message="waiter re-subscribed on b")
        store(lagging, "from the lagging worker", task_id=task_id)  # SET + PUBLISH on a: nobody listens there
        assert f"celery-task-meta-{task_id}" in keys_on(a)
        thread.join(8)
        assert box.get("value") == "from the lagging worker", box
    finally:
        quiesce(lagging)
