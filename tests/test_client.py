"""Everything redis.Redis offers keeps working through a failover."""

from __future__ import annotations

import threading

import pytest
import redis

from geofailover_core import FailoverBlockingConnectionPool, FailoverRedis
from geofailover_core.testing import wait_until

from .conftest import MakeClient
from .test_failover import mark


def test_is_a_real_redis_client(two, make_client: MakeClient) -> None:
    client = make_client(two, decode_responses=True)
    assert isinstance(client, redis.Redis)
    assert client.set("k", "v") and client.get("k") == "v"
    assert client.geofailover.active == "a"
    assert "FailoverRedis" in repr(client) and "a" in repr(client)


def test_constructor_with_endpoint_list(two) -> None:
    client = FailoverRedis(
        endpoints=[{"name": "us", "url": two[0].url, "weight": 2}, f"{two[1].url}?name=eu"],
        name="ctor-list",
        socket_timeout=0.3,
    )
    try:
        assert client.ping() and client.geofailover.endpoint_names == ["us", "eu"]
        same = FailoverRedis(name="ctor-list")
        assert same.geofailover is client.geofailover
    finally:
        client.geofailover.close()


@pytest.mark.parametrize("transaction", [True, False])
def test_pipeline_is_resent_on_the_new_endpoint_when_it_never_reached_the_old(two, make_client: MakeClient, transaction: bool) -> None:
    mark(two)
    client = make_client(two)
    client.ping()
    two[0].kill()
    pipe = client.pipeline(transaction=transaction)
    pipe.set("p", 1).incr("p").get("whoami")
    assert pipe.execute() == [True, 2, b"1"]


def test_transaction_helper_and_watch(two, make_client: MakeClient) -> None:
    client = make_client(two)
    client.set("bal", 10)

    def spend(pipe: redis.client.Pipeline) -> None:
        value = int(pipe.get("bal"))
        pipe.multi()
        pipe.set("bal", value - 3)

    assert client.transaction(spend, "bal") == [True]
    assert client.get("bal") == b"7"
    assert client.transaction(spend, "bal", value_from_callable=True) is None


def test_lock_scripts_and_scan_iter(two, make_client: MakeClient) -> None:
    client = make_client(two)
    with client.lock("job", timeout=5, blocking_timeout=1):
        assert client.exists("job")
    script = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert script(keys=["s"], args=[5]) == 5
    client.mset({f"scan:{i}": i for i in range(50)})
    assert len(set(client.scan_iter("scan:*", count=10))) == 50
    two[0].kill()
    # after the switch, scripts are re-loaded on the new endpoint (NOSCRIPT handled by redis-py)
    assert script(keys=["s"], args=[1]) == 1
    assert client.geofailover.active == "b"


def test_retry_policy_none_surfaces_the_error_but_still_switches(two, make_client: MakeClient) -> None:
    # an always-passing health check leaves detection to the command path
    client = make_client(two, retry_on_failover="none", health_checks=[lambda ctx: True])
    client.ping()
    two[0].kill()
    with pytest.raises(redis.exceptions.ConnectionError):
        client.get("k")
    assert client.geofailover.active == "b"
    assert client.get("k") is None


def test_retry_policy_all_resends_a_write_after_a_timeout(two, make_client: MakeClient) -> None:
    client = make_client(two, retry_on_failover="all")
    client.ping()
    two[0].freeze()
    assert client.incr("n") == 1  # re-sent on b (the frozen a never ran it here)
    assert client.geofailover.active == "b"
    two[0].thaw()


def test_pubsub_resubscribes_on_failover_and_failback(two, make_client: MakeClient) -> None:
    client = make_client(two, failback_grace_period=0.3)
    ps = client.pubsub(ignore_subscribe_messages=True)
    ps.subscribe("news")
    ps.psubscribe("alerts.*")
    wait_until(lambda: ps.get_message(timeout=0.05) is None and two[0].client().pubsub_numsub("news")[0][1] == 1, timeout=2)

    def receive(publisher: redis.Redis, channel: str, payload: str) -> dict:  # type: ignore[type-arg]
        def attempt() -> dict | None:  # type: ignore[type-arg]
            publisher.publish(channel, payload)
            msg = ps.get_message(timeout=0.1)
            return msg if msg and msg["data"] == payload.encode() else None

        return wait_until(attempt, timeout=3, message=f"no {payload} on {channel}")

    receive(two[0].client(), "news", "one")
    two[0].kill()
    # the subscriber's socket dies: it moves to b and re-subscribes there
    receive(two[1].client(), "news", "two")
    receive(two[1].client(), "alerts.eu", "three")
    two[0].restart()
    wait_until(lambda: client.geofailover.active == "a", timeout=4)
    # b is still alive: the subscriber must still follow traffic back to a
    receive(two[0].client(), "news", "four")
    ps.close()


def test_blocking_pool_variant(two, make_client: MakeClient) -> None:
    client = make_client(two, blocking_pool=True, max_connections=4)
    assert isinstance(client.connection_pool, FailoverBlockingConnectionPool)
    done: list[int] = []
    lost: list[BaseException] = []
    killed = threading.Event()

    def work() -> None:
        for i in range(40):
            if i == 10:
                killed.wait(5)
            try:
                client.incr("bp")
                done.append(1)
            except redis.exceptions.ConnectionError as exc:
                lost.append(exc)  # an INCR in flight when the region died: not re-sent

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    wait_until(lambda: len(done) >= 40, timeout=5)
    two[0].kill()
    killed.set()
    for t in threads:
        t.join()
    assert client.geofailover.active == "b"
    assert len(done) + len(lost) == 320
    assert len(lost) <= 8, "at most the commands in flight at the kill may fail"
    # no connection slot was lost on the way: all 4 can be used at once
    conns = [client.connection_pool.get_connection() for _ in range(4)]
    for conn in conns:
        client.connection_pool.release(conn)


def test_blocked_reader_wakes_and_moves_on_failover(two, make_client: MakeClient) -> None:
    """A BLPOP parked on a frozen region is woken by the switch, not left hanging."""
    client = make_client(two, socket_timeout=0.3)
    client.ping()
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(client.blpop(["jobs"], timeout=0)))
    t.start()
    wait_until(lambda: two[0].client().info("clients")["blocked_clients"] == 1, timeout=2)
    two[0].freeze()
    wait_until(lambda: client.geofailover.active == "b", timeout=3)
    two[1].client().rpush("jobs", "j1")
    t.join(5)
    assert not t.is_alive(), "BLPOP stayed parked on the frozen endpoint"
    assert result == [(b"jobs", b"j1")]
    two[0].thaw()


def test_single_connection_client(two, make_client: MakeClient) -> None:
    mark(two)
    client = make_client(two).client()
    assert client.get("whoami") == b"0"
    two[0].kill()
    assert client.get("whoami") == b"1"


def test_pool_size_from_settings_dict(two) -> None:
    client = FailoverRedis(config={"name": "sized", "endpoints": [two[0].url, two[1].url], "max_connections": 3})
    try:
        assert client.connection_pool.max_connections == 3
        conns = [client.connection_pool.get_connection() for _ in range(3)]
        with pytest.raises(redis.exceptions.MaxConnectionsError):
            client.connection_pool.get_connection()
        for conn in conns:
            client.connection_pool.release(conn)
    finally:
        client.geofailover.close()
