"""The geofailover kombu transport on real servers, driven step by step (no worker process).

Each test drives a kombu Connection/Producer/Consumer against two real
endpoints and inspects the servers directly: where a message sits, where its
unacked record is, where an ack went.
"""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("celery")

from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.exceptions import OperationalError

import geofailover_celery  # noqa: F401 - registers the scheme
from geofailover_celery.draining import DRAIN_TAG
from geofailover_celery.transport import EndpointSwitched
from geofailover_core import registry
from geofailover_core.errors import NoHealthyEndpointError
from geofailover_core.testing import RedisServer, wait_until
from tests.test_celery_support import DURABLE, FAST, geo_url

_names = itertools.count()
QUEUE = Queue("jobs", Exchange("jobs", type="direct"), routing_key="jobs")


@pytest.fixture
def servers(redis_server_factory: Callable[..., list[RedisServer]]) -> Iterator[list[RedisServer]]:
    yield redis_server_factory(2, extra_args=DURABLE)
    registry.close_all()


def connect(servers: list[RedisServer], kombu_options: dict[str, Any] | None = None, **geo: Any) -> Connection:
    a, b = servers
    options = {**FAST, "name": f"broker{next(_names)}", "drain_interval": 0.05, **geo}
    url = f"{geo_url(a, 0, 'a', 2)};{geo_url(b, 0, 'b', 1)}"
    return Connection(url, transport_options={"visibility_timeout": 1, **(kombu_options or {}), "geofailover": options})


def publish(conn: Connection, body: Any) -> None:
    producer = Producer(conn.default_channel, exchange=QUEUE.exchange, routing_key="jobs")
    conn.ensure(producer, producer.publish, max_retries=3, interval_start=0)(
        body, declare=[QUEUE], retry=False, serializer="json",
    )


def queued(server: RedisServer, queue: str = "jobs") -> int:
    return int(server.client().llen(queue))


def unacked(server: RedisServer) -> int:
    return int(server.client().hlen("unacked"))


def consume(conn: Connection, n: int, *, ack: bool = True, timeout: float = 5.0) -> list[Any]:
    """Receive ``n`` messages through ``drain_events`` (the transport's non-event-loop path)."""
    got: list[Any] = []

    def on_message(body: Any, message: Any) -> None:
        got.append((body, message))
        if ack:
            message.ack()

    with Consumer(conn.default_channel, [QUEUE], callbacks=[on_message], accept=["json"]):
        wait_until(lambda: _drain(conn) or len(got) >= n, timeout, interval=0.001, message=f"{n} messages received")
    return got


def _drain(conn: Connection) -> bool:
    try:
        conn.drain_events(timeout=0.05)
    except TimeoutError:
        pass
    return False


def test_publish_follows_failover_and_failback(servers: list[RedisServer]) -> None:
    a, b = servers
    with connect(servers) as conn:
        publish(conn, "on a")
        assert (queued(a), queued(b)) == (1, 0)
        engine = conn.transport.engine
        a.kill()
        publish(conn, "on b")  # the refused publish is reported; ensure() republishes on b
        assert engine.active == "b"
        assert queued(b) == 1
        a.restart()
        wait_until(lambda: engine.active == "a", 5, message="failback to a")
        publish(conn, "on a again")
        assert queued(a) == 2, "a kept its AOF data and got the new message"


def test_switch_interrupts_consumer_and_ack_goes_to_origin(servers: list[RedisServer]) -> None:
    a, b = servers
    with connect(servers) as producer_conn:
        for i in range(2):
            publish(producer_conn, i)
    with connect(servers) as conn:
        engine = conn.transport.engine
        [(_, message)] = consume(conn, 1, ack=False)
        assert unacked(a) == 1
        engine.failover_to("b", reason="maintenance")
        with pytest.raises(EndpointSwitched, match=r"broker endpoint a is no longer active \(now b; failover, reason manual: maintenance\)"):
            conn.drain_events(timeout=0.5)
        message.ack()  # the channel is pinned to a: the ack must clear a's unacked record, not touch b
        assert (unacked(a), unacked(b)) == (0, 0)
        assert queued(a) == 1 and queued(b) == 0


def test_new_channel_skips_an_active_endpoint_that_just_died(servers: list[RedisServer]) -> None:
    a, _ = servers
    with connect(servers) as conn:
        engine = conn.transport.engine
        assert engine.route()[0].name == "a"
        a.kill()  # the engine does not know yet
        channel = conn.channel()  # pre-flight PING fails, the engine confirms, the channel pins b
        assert channel.endpoint == "b"
        assert engine.active == "b"


def test_secondary_backlog_is_drained_after_failback(servers: list[RedisServer]) -> None:
    a, b = servers
    with connect(servers) as conn:
        engine = conn.transport.engine
        a.kill()
        for i in range(20):
            publish(conn, i)  # the outage: tasks pile up on b with nobody consuming
        assert queued(b) == 20
        a.restart()
        wait_until(lambda: engine.active == "a", 5, message="failback")
    with connect(servers) as conn:
        got = consume(conn, 20)
        assert sorted(body for body, _ in got) == list(range(20))
        assert [body for body, _ in got] == list(range(20)), "drained messages keep their order"
        assert (queued(a), queued(b), unacked(a), unacked(b)) == (0, 0, 0, 0)


def test_drain_off_leaves_the_secondary_alone(servers: list[RedisServer]) -> None:
    """Active-Active: the lists replicate, so moving messages would only duplicate them."""
    _, b = servers
    with connect(servers, drain=False) as conn:
        conn.transport.engine.failover_to("b")
        publish(conn, "stays on b")
        conn.transport.engine.failback()
    with connect(servers, drain=False) as conn:
        engine = conn.transport.engine
        with Consumer(conn.default_channel, [QUEUE], callbacks=[lambda body, message: None]):
            assert engine.check_now() and engine.status()["endpoints"][1]["health"] == "healthy"
            for _ in range(5):  # several drain intervals of polling, with b known healthy
                _drain(conn)
        assert queued(b) == 1


def test_unacked_left_on_a_non_active_endpoint_is_redelivered(servers: list[RedisServer]) -> None:
    a, b = servers
    with connect(servers) as conn:
        engine = conn.transport.engine
        engine.failover_to("b", reason="drill")
        publish(conn, "orphan")
        # A worker on b takes the message and dies without acking: its
        # unacked record stays on b, where no consumer is left to restore it.
        [(_, message)] = consume(conn, 1, ack=False)
        conn.default_channel.qos._delivered.clear()  # dies: nothing restored at close
        assert unacked(b) == 1
        engine.failback()
    with connect(servers) as conn:
        got = consume(conn, 1, timeout=5)  # after b's visibility timeout (1 s) the drainer moves it to a
        body, message = got[0]
        assert body == "orphan"
        assert message.delivery_info.get("redelivered") or message.headers.get("redelivered")
        assert (unacked(a), unacked(b), queued(b)) == (0, 0, 0)


def test_all_down_fails_fast_then_recovers(servers: list[RedisServer]) -> None:
    a, b = servers
    with connect(servers) as conn:
        engine = conn.transport.engine
        assert conn.default_channel.endpoint == "a"
        a.kill()
        b.kill()
        with pytest.raises(OperationalError):
            publish(conn, "nowhere")
        wait_until(lambda: engine.active is None, 5, message="all down")
        with pytest.raises(NoHealthyEndpointError):
            Connection(conn.as_uri(include_password=True), transport_options=conn.transport_options).channel()
        b.restart()
        wait_until(lambda: engine.active == "b", 5, message="recovered on b")
        publish(conn, "back")
        assert queued(b) == 1


def test_drained_tags_are_marked(servers: list[RedisServer]) -> None:
    """Messages staged by the drainer are recognisable in kombu's unacked hash (operators, debugging)."""
    assert DRAIN_TAG == "geofailover-drain-"


def test_a_failing_drain_round_is_logged_and_consuming_goes_on(
    servers: list[RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    _, b = servers
    # Slow probes: the engine keeps believing b is healthy while it hangs.
    with connect(servers, probe_interval=30) as conn:
        engine = conn.transport.engine
        assert engine.check_now()
        publish(conn, "on a")
        b.freeze()
        try:
            with caplog.at_level("WARNING", logger="geofailover.celery"):
                [(body, _)] = consume(conn, 1)
                wait_until(lambda: _drain(conn) or "draining failed" in caplog.text, 5, message="drain failure logged")
            assert body == "on a"
            assert "draining failed, retrying in 0.05s: TimeoutError" in caplog.text
        finally:
            b.thaw()


@pytest.mark.parametrize("bad", ["not json", "unroutable"])
def test_an_undeliverable_message_is_quarantined_and_draining_goes_on(
    servers: list[RedisServer], caplog: pytest.LogCaptureFixture, bad: str
) -> None:
    """One bad message must not stop the drain: it goes to the dead-letter hash, once, with one warning."""
    _, b = servers
    b_client = b.client()
    if bad == "not json":
        b_client.lpush("jobs", b"\xff not a kombu message")  # oldest: drained first, in the same batch as the good ones
    else:
        raw = b'[{"body": "x", "headers": {}, "properties": {"delivery_info": {}}}, "no-such-exchange", "rk"]'
        b_client.hset("unacked", "orphan-tag", raw)
        b_client.zadd("unacked_index", {"orphan-tag": 0})
    with connect(servers, drain_batch=2) as conn:  # a small batch: a stuck entry would block the ones behind it
        conn.transport.engine.failover_to("b")
        for i in range(5):
            publish(conn, i)
        conn.transport.engine.failback()
    with connect(servers, drain_batch=2) as conn, caplog.at_level("WARNING", logger="geofailover.celery"):
        assert conn.transport.engine.check_now()
        got = consume(conn, 5, timeout=10)
        assert sorted(body for body, _ in got) == list(range(5))
        for _ in range(10):  # more drain rounds: the quarantined message is not warned about again
            _drain(conn)
    assert (b_client.hlen("unacked"), b_client.llen("jobs")) == (0, 0)
    [(tag, kept)] = b_client.hgetall("_geofailover.dead_letter").items()
    assert (b"not a kombu message" in kept) if bad == "not json" else (tag == b"orphan-tag" and kept == raw)
    warnings = [r.getMessage() for r in caplog.records if "dead_letter" in r.getMessage()]
    reason = "cannot be decoded" if bad == "not json" else "have no queue to go to"
    assert warnings == [f"geofailover[{conn.transport.engine.name}]: 1 message(s) on b {reason}; "
                        "moved to the hash '_geofailover.dead_letter' there (delivery tag -> message)"]
    assert "draining failed" not in caplog.text


def test_a_message_the_consumer_cannot_decode_is_quarantined(servers: list[RedisServer], caplog: pytest.LogCaptureFixture) -> None:
    a, _ = servers
    with connect(servers) as conn, caplog.at_level("WARNING", logger="geofailover.celery"):
        publish(conn, "before")
        a.client().lpush("jobs", b"{ not json")
        publish(conn, "after")
        assert [body for body, _ in consume(conn, 2)] == ["before", "after"]
    assert unacked(a) == 0 and list(a.client().hvals("_geofailover.dead_letter")) == [b"{ not json"]
    assert "1 message(s) on a cannot be decoded" in caplog.text


def test_a_popped_message_is_recorded_in_the_same_step(servers: list[RedisServer]) -> None:
    """No moment exists where a taken message lives only in the consumer's memory.

    kombu's BRPOP removes a message before its reply travels: an endpoint
    that dies in between loses it. The reliable pop records it as
    unacknowledged atomically with the pop, so a consumer and an endpoint
    that both die right after it still get it back.
    """
    a, _ = servers
    with connect(servers) as conn:
        publish(conn, "taken")
        channel = conn.default_channel
        message = channel.basic_get("jobs")
        assert message is not None and queued(a) == 0
        assert unacked(a) == 1, "recorded by the pop itself"
        assert a.client().hget("unacked", message.delivery_tag) is not None, "under kombu's own delivery tag"
        channel.qos._delivered.clear()  # the consumer dies without acking or restoring ...
        a.kill()  # ... and so does the endpoint, before anything else happens
    a.restart()  # back with its data (appendfsync always)
    with connect(servers) as conn:
        [(body, redelivered)] = consume(conn, 1, timeout=5)  # after visibility_timeout (1 s)
        assert body == "taken"
        assert redelivered.delivery_info.get("redelivered") or redelivered.headers.get("redelivered")
        assert unacked(a) == 0


def test_no_ack_consumers_leave_no_record(servers: list[RedisServer]) -> None:
    a, _ = servers
    with connect(servers) as conn:
        for i in range(3):
            publish(conn, i)
        got: list[Any] = []
        with Consumer(conn.default_channel, [QUEUE], callbacks=[lambda body, message: got.append(body)], no_ack=True):
            wait_until(lambda: _drain(conn) or len(got) == 3, 5, message="three messages")
        assert got == [0, 1, 2] and unacked(a) == 0
        assert conn.default_channel.basic_get("jobs", no_ack=True) is None


def test_plain_brpop_can_be_chosen(servers: list[RedisServer]) -> None:
    a, _ = servers
    with connect(servers, reliable_pop=False) as conn:
        for i in range(3):
            publish(conn, i)
        assert sorted(body for body, _ in consume(conn, 3)) == [0, 1, 2]
        assert unacked(a) == 0


def test_a_global_key_prefix_applies_to_every_key_we_touch(servers: list[RedisServer]) -> None:
    a, b = servers
    prefixed = {"global_keyprefix": "app1:"}
    with connect(servers, prefixed) as conn:
        engine = conn.transport.engine
        engine.failover_to("b")
        for i in range(3):
            publish(conn, i)
        assert b.client().llen("app1:jobs") == 3 and queued(b) == 0
        engine.failback()
    with connect(servers, prefixed) as conn:
        assert sorted(body for body, _ in consume(conn, 3)) == [0, 1, 2]  # drained from b, popped on a
        assert b.client().llen("app1:jobs") == 0
        assert a.client().hlen("app1:unacked") == 0 and unacked(a) == 0
        publish(conn, "recorded")
        message = conn.default_channel.basic_get("jobs")
        assert a.client().hget("app1:unacked", message.delivery_tag) is not None
        message.ack()
        assert a.client().hlen("app1:unacked") == 0


def test_a_producer_without_retries_follows_a_switch_through_a_named_exchange(servers: list[RedisServer]) -> None:
    """A publishing-only channel moves itself, declaring its bindings on the new endpoint first."""
    a, b = servers
    with connect(servers) as conn:
        producer = Producer(conn.default_channel, exchange=QUEUE.exchange, routing_key="jobs")
        producer.publish("on a", declare=[QUEUE], retry=False, serializer="json")
        engine = conn.transport.engine
        engine.failover_to("b", reason="drill")
        producer.publish("on b", declare=[QUEUE], retry=False, serializer="json")  # no ensure(), no error
        assert (queued(a), queued(b)) == (1, 1)
        assert b.client().smembers("_kombu.binding.jobs"), "the binding was declared on b before the publish"
        engine.failback()
        producer.publish("on a again", retry=False, serializer="json")
        assert (queued(a), queued(b)) == (2, 1)


def test_a_consuming_channel_is_not_moved_under_its_consumer(servers: list[RedisServer]) -> None:
    with connect(servers) as conn:
        channel = conn.default_channel
        with Consumer(channel, [QUEUE], callbacks=[lambda body, message: None]):
            conn.transport.engine.failover_to("b")
            with pytest.raises(EndpointSwitched):
                Producer(channel, exchange=QUEUE.exchange, routing_key="jobs").publish("x", retry=False, serializer="json")
        assert channel.endpoint == "a"


def test_a_channel_made_as_every_endpoint_dies_says_no_endpoint(servers: list[RedisServer], caplog: pytest.LogCaptureFixture) -> None:
    """No log line names ``None`` for an endpoint: the engine moved to *no endpoint*."""
    a, b = servers
    with connect(servers) as conn, caplog.at_level("INFO", logger="geofailover"):
        engine = conn.transport.engine
        assert engine.route()[0].name == "a"
        a.kill()
        b.kill()  # the engine does not know yet: each pre-flight PING is reported, the engine moves on
        with pytest.raises(NoHealthyEndpointError):
            conn.channel()
        assert engine.active is None
    assert "the engine moved to no endpoint, connecting there" in caplog.text
    assert "None" not in caplog.text


def test_connection_info_names_the_endpoint_in_use_without_credentials(
    redis_server_factory: Callable[..., list[RedisServer]],
) -> None:
    """kombu's ``Connection.info()``, ``.hostname``, ``.port`` and ``.host``, as tools log or reuse them."""
    a, b = redis_server_factory(2, password="s3cret-info-pw")
    url = f"{geo_url(a, 0, 'a', 2)};{geo_url(b, 0, 'b', 1)}"
    try:
        with Connection(url, transport_options={"geofailover": {**FAST, "name": "info-broker"}}) as conn:
            info = conn.info()
            assert (info["hostname"], info["port"], info["virtual_host"]) == (a.host, a.port, "0")
            assert conn.host == f"{a.host}:{a.port}"
            assert "s3cret" not in repr({k: v for k, v in info.items() if k not in ("alternates", "transport_options")})
            assert ";".join(info["alternates"]) == url, "the full URL, one endpoint per entry"
            for copy in (conn.clone(), pickle.loads(pickle.dumps(conn))):  # rebuilt from info(): still every endpoint
                with copy:
                    assert copy.default_channel.endpoint == "a" and copy.transport.engine is conn.transport.engine
            conn.transport.engine.failover_to("b")
            assert conn.channel().endpoint == "b"
            assert (conn.info()["hostname"], conn.info()["port"]) == (b.host, b.port)
    finally:
        registry.close_all()


def test_restore_unacked_after_bounds_redelivery_from_an_endpoint_that_failed(servers: list[RedisServer]) -> None:
    """kombu redelivers a dead consumer's message after visibility_timeout (here an hour); messages
    left on an endpoint that failed come back once it answers and they are older than restore_unacked_after."""
    a, _ = servers
    options = {"restore_unacked_after": 0.5, "failback_grace_period": 60}  # a stays a standby: the drain has time
    with connect(servers, {"visibility_timeout": 3600}, **options) as conn:
        publish(conn, "taken on a")
        consume(conn, 1, ack=False)
        conn.default_channel.qos._delivered.clear()  # the consumer dies with its endpoint, nothing restored
    assert unacked(a) == 1
    a.kill()
    a.restart()  # back with its data; the worker that took the message is gone
    with connect(servers, {"visibility_timeout": 3600}, **options) as conn:
        engine = conn.transport.engine
        engine.failover_to("b", reason="a is recovering")
        got = consume(conn, 1, timeout=10)
        assert got[0][0] == "taken on a" and got[0][1].delivery_info.get("redelivered")
        assert (unacked(a), queued(a)) == (0, 0)


def test_doorbells_are_only_hints(servers: list[RedisServer]) -> None:
    """A message without a ring (a plain redis:// producer) is still delivered; stale rings are cleared."""
    a, _ = servers
    with Connection(f"redis://{a.host}:{a.port}/0") as plain:
        Producer(plain.default_channel, exchange=QUEUE.exchange, routing_key="jobs").publish("plain", declare=[QUEUE], serializer="json")
    bell = a.client()
    bell.rpush("_geofailover.bell.jobs", *[1] * 5)  # more rings than messages: left by consumers of plain kombu
    with connect(servers) as conn:
        assert [body for body, _ in consume(conn, 1)] == ["plain"]
        with Consumer(conn.default_channel, [QUEUE], callbacks=[lambda body, message: None]):
            wait_until(lambda: _drain(conn) or not bell.exists("_geofailover.bell.jobs"), 5, message="stale rings cleared")
    with connect(servers) as conn:  # nobody waits now
        publish(conn, "rung")
        assert bell.llen("_geofailover.bell.jobs") == 1, "one ring per publish"
