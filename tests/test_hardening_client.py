"""Regression tests for defects found by review on real servers: pub/sub that
did not follow a switch, a forked child breaking its parent's sockets,
blocking commands mistaken for faults or parked on the old endpoint, and
engines that outlived their clients."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from geofailover_core import FailoverRedis, HealthResult, registry
from geofailover_core.testing import RedisServer, wait_until

from .conftest import FAST, MakeClient, run_in_child, url_list

# -- pub/sub follows every switch, at the switch ------------------------------------------


def _subscribers(server: RedisServer, channel: str) -> int:
    return int(server.client().pubsub_numsub(channel)[0][1])


def _received(messages: list[Any], payload: bytes) -> bool:
    return any(m and m.get("type") == "message" and m["data"] == payload for m in messages)


@pytest.fixture
def listening() -> Iterator[Any]:
    """A subscriber reading in a thread (``listen()``), like a worker's."""
    started: list[tuple[Any, threading.Thread]] = []

    def start(ps: Any) -> list[Any]:
        got: list[Any] = []

        def loop() -> None:
            try:
                for message in ps.listen():
                    got.append(message)
            except Exception as exc:  # the pubsub was closed by the test
                got.append({"type": "error", "data": repr(exc)})

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        started.append((ps, thread))
        return got

    yield start
    for ps, _thread in started:
        ps.close()


def test_pubsub_follows_a_manual_failover_while_not_reading(two, make_client: MakeClient) -> None:
    client = make_client(two)
    ps = client.pubsub(ignore_subscribe_messages=True)
    ps.subscribe("news")
    wait_until(lambda: _subscribers(two[0], "news") == 1, timeout=2)
    client.geofailover.failover_to("b")
    # Nobody reads: the switch itself re-subscribes on b (before: only at the next read).
    wait_until(lambda: _subscribers(two[1], "news") == 1, timeout=3, message="not re-subscribed on b at the switch")
    two[1].client().publish("news", "published-before-the-next-read")
    message = wait_until(lambda: ps.get_message(timeout=0.1), timeout=3)
    assert message["data"] == b"published-before-the-next-read"
    wait_until(lambda: _subscribers(two[0], "news") == 0, timeout=3, message="the old subscription on a was not dropped")
    ps.close()


def test_pubsub_follows_a_failback_while_the_old_endpoint_stays_up(two, make_client: MakeClient, listening: Any) -> None:
    client = make_client(two, failback_grace_period=0.3)
    two[0].kill()
    client.ping()  # traffic on b
    wait_until(lambda: client.geofailover.active == "b", timeout=3)
    ps = client.pubsub(ignore_subscribe_messages=True)
    ps.subscribe("news")
    got = listening(ps)
    wait_until(lambda: _subscribers(two[1], "news") == 1, timeout=2)
    two[0].restart()
    wait_until(lambda: client.geofailover.active == "a", timeout=5)
    wait_until(lambda: _subscribers(two[0], "news") == 1, timeout=3, message="the blocked reader did not follow the failback")
    wait_until(lambda: (two[0].client().publish("news", "on-a"), _received(got, b"on-a"))[1], timeout=3, message=f"nothing on a; the reader got {got}")
    assert _subscribers(two[1], "news") == 0


def test_pubsub_follows_a_frozen_endpoint(two, make_client: MakeClient, listening: Any) -> None:
    client = make_client(two)
    ps = client.pubsub(ignore_subscribe_messages=True)
    ps.subscribe("news")
    got = listening(ps)
    wait_until(lambda: _subscribers(two[0], "news") == 1, timeout=2)
    two[0].freeze()
    try:
        wait_until(lambda: client.geofailover.active == "b", timeout=5)
        wait_until(lambda: _subscribers(two[1], "news") == 1, timeout=3, message="the reader stayed on the frozen endpoint")
        wait_until(lambda: (two[1].client().publish("news", "on-b"), _received(got, b"on-b"))[1], timeout=3)
    finally:
        two[0].thaw()


# -- fork ------------------------------------------------------------------------------------


def test_forked_child_never_breaks_the_parents_sockets(two, make_client: MakeClient) -> None:
    """A child's switch or close must not shut down the parent's parked BLPOP socket."""
    client = make_client(two, socket_timeout=0.3)
    client.ping()
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(client.blpop(["jobs"], timeout=10)))
    t.start()
    wait_until(lambda: two[0].client().info("clients")["blocked_clients"] == 1, timeout=2)

    def child() -> None:
        client.geofailover.failover_to("b")
        client.geofailover.close()

    run_in_child(child)
    assert client.geofailover.active == "a"  # the child's decisions are its own
    two[0].client().rpush("jobs", "j1")
    t.join(10)
    assert result == [(b"jobs", b"j1")], "the parent's BLPOP was broken by the child"


# -- blocking commands -------------------------------------------------------------------------


def test_single_connection_client_blpop_after_a_disconnect(two, make_client: MakeClient) -> None:
    client = make_client(two, socket_timeout=0.3).client()
    assert client.ping()
    client.connection.disconnect()  # e.g. the server closed an idle socket
    # Before: the long read timeout was applied only to an existing socket, so
    # this raised TimeoutError at the 0.3 s socket timeout, again and again.
    assert client.blpop(["nothing"], timeout=1) is None
    assert client.blpop(["nothing"], timeout=1) is None
    assert client.geofailover.active == "a"


def test_blpop_inside_a_pipeline_is_not_a_fault(two, make_client: MakeClient) -> None:
    client = make_client(two, socket_timeout=0.3, failure_threshold=2)
    for _ in range(3):
        pipe = client.pipeline(transaction=False)
        pipe.set("x", 1)
        pipe.blpop(["nothing"], 1)
        assert pipe.execute() == [True, None]
    with client.pipeline() as pipe:  # MULTI/EXEC: BLPOP does not block there, the batch still must not count
        pipe.set("y", 1)
        pipe.blpop(["nothing"], 1)
        assert pipe.execute() == [True, None]
    status = client.geofailover.status()
    assert client.geofailover.active == "a" and status["endpoints"][0]["breaker_failures"] == 0


def test_a_switch_between_checkout_and_the_blocking_mark_never_parks_on_the_old_endpoint(
    two, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = make_client(two)
    client.ping()
    pool = client.connection_pool
    checkout = pool.get_connection
    switched = threading.Event()

    def checkout_then_switch(*args: Any, **kwargs: Any) -> Any:
        conn = checkout(*args, **kwargs)
        if not switched.is_set():
            switched.set()
            client.geofailover.failover_to("b")  # lands after checkout, before the command is marked blocking
        return conn

    monkeypatch.setattr(pool, "get_connection", checkout_then_switch)
    result: list[Any] = []
    t = threading.Thread(target=lambda: result.append(client.blpop(["jobs"], timeout=0)), daemon=True)
    t.start()
    wait_until(lambda: two[1].client().info("clients")["blocked_clients"] == 1, timeout=3, message="BLPOP did not wait on b")
    two[1].client().rpush("jobs", "j1")
    t.join(5)
    assert result == [(b"jobs", b"j1")]
    assert two[0].client().info("clients")["blocked_clients"] == 0


# -- lifecycle -----------------------------------------------------------------------------------


def _geofailover_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("geofailover-"))


def test_closing_the_last_client_stops_its_engine_and_frees_its_name(two) -> None:
    before = _geofailover_threads()
    clients = [FailoverRedis.from_url(url_list(two), name=f"life{i}", **FAST) for i in range(20)]
    for client in clients:
        client.ping()
    assert _geofailover_threads() > before
    for client in clients:
        client.close()
    wait_until(lambda: _geofailover_threads() <= before, timeout=5, message="engine threads left after every client closed")
    assert all(c.geofailover.closed for c in clients)
    # The default name is free again for another endpoint set.
    first = FailoverRedis.from_url(two[0].url, **FAST)
    first.ping()
    first.close()
    second = FailoverRedis.from_url(two[1].url, **FAST)
    try:
        assert second.ping()
    finally:
        second.close()


def test_an_engine_shared_by_two_clients_lives_until_the_last_one_closes(two) -> None:
    one = FailoverRedis.from_url(url_list(two), name="shared-life", **FAST)
    other = FailoverRedis(name="shared-life")
    assert one.geofailover is other.geofailover
    one.close()
    assert not other.geofailover.closed and other.ping()
    other.close()
    assert other.geofailover.closed


def test_an_engine_asked_for_by_name_outlives_its_clients(two) -> None:
    engine = registry.get_engine({"name": "kept", "endpoints": url_list(two), **FAST})
    try:
        client = FailoverRedis(name="kept")
        client.ping()
        client.close()
        assert not engine.closed  # an adapter's engine: closed explicitly, never by a client
    finally:
        engine.close()


def test_close_does_not_wait_for_a_hung_custom_check(two) -> None:
    release = threading.Event()
    entered = threading.Event()
    finished = threading.Event()

    def hung(ctx: Any) -> HealthResult:
        if ctx.endpoint.name == "b":
            entered.set()
            release.wait(60)
            finished.set()
        return HealthResult.healthy()

    engine = registry.build_engine({"name": "hung", "endpoints": url_list(two), "health_checks": [hung], **FAST})
    try:
        engine.start()
        wait_until(entered.is_set, timeout=3)
        engine.close()  # before: waited for the check to end (20 s check -> 19.5 s close)
        assert engine.closed and not finished.is_set(), "close() waited for the hung check"
        assert not any(t.name == "geofailover-monitor[hung]" for t in threading.enumerate())
    finally:
        release.set()
