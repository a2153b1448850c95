"""``AsyncFailoverRedis``: the redis.asyncio drop-in, on real servers and real faults."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
import redis
import redis.asyncio

from geofailover_core import FailoverRedis, NoHealthyEndpointError, ReplyLostError, registry
from geofailover_core.asyncio import AsyncFailoverConnectionPool, AsyncFailoverRedis
from geofailover_core.testing import RedisServer, wait_until

from .conftest import FAST, run_in_child, url_list
from .test_failover import mark

_names = iter(range(10**6))


@pytest_asyncio.fixture
async def make_async() -> AsyncIterator[Callable[..., AsyncFailoverRedis]]:
    made: list[AsyncFailoverRedis] = []

    def make(servers: list[RedisServer], **options: Any) -> AsyncFailoverRedis:
        name = options.pop("name", f"async{next(_names)}")
        client = AsyncFailoverRedis.from_url(url_list(servers), name=name, **{**FAST, **options})
        made.append(client)
        return client

    yield make
    for client in made:
        client.geofailover.close()
        await client.aclose()
    registry.close_all()


async def until(predicate: Callable[[], Any], timeout: float = 5.0, message: str = "condition not met") -> Any:
    """Await ``predicate()`` turning truthy, polling without blocking the loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{message} (waited {timeout} s)")
        await asyncio.sleep(0.01)


async def test_is_a_real_async_redis_on_the_same_engine_as_a_sync_client(two, make_async) -> None:
    client = make_async(two, name="shared-async", decode_responses=True)
    assert isinstance(client, redis.asyncio.Redis)
    assert isinstance(client.connection_pool, AsyncFailoverConnectionPool)
    assert await client.set("k", "v") and await client.get("k") == "v"
    sync = FailoverRedis(name="shared-async")
    try:
        assert sync.geofailover is client.geofailover  # one monitor, one set of breakers, one decision
        assert sync.get("k") == b"v"
    finally:
        sync.close()
    same = AsyncFailoverRedis(config={"name": "dict-async", "endpoints": [two[0].url, two[1].url], **FAST})
    try:
        assert await same.ping()
    finally:
        same.geofailover.close()
        await same.aclose()


async def test_clients_of_one_engine_may_differ_in_connection_options(two, make_async) -> None:
    first = make_async(two, name="per-client-async")
    await first.set("k", "v")
    other = AsyncFailoverRedis.from_url(url_list(two), name="per-client-async", **{**FAST, "socket_timeout": 5.0, "decode_responses": True})
    try:
        assert other.geofailover is first.geofailover
        assert await other.get("k") == "v" and await first.get("k") == b"v"
    finally:
        await other.aclose()


async def test_kill_fails_over_with_no_error_for_reads_and_unsent_writes(two, make_async) -> None:
    mark(two)
    client = make_async(two)
    assert await client.get("whoami") == b"0"
    two[0].kill()
    assert await client.get("whoami") == b"1"  # a read: re-sent on b
    assert await client.incr("counter") == 1  # a write that never reached a: sent to b
    assert client.geofailover.active == "b"


async def test_freeze_fails_over_and_a_write_in_flight_is_raised(two, make_async) -> None:
    client = make_async(two, socket_timeout=30.0, probe_interval=5.0, health_check_timeout=0.3)
    await client.ping()
    await until(lambda: client.geofailover.monitor.completed_rounds >= 1)
    two[0].freeze()
    try:
        with pytest.raises(ReplyLostError):
            await asyncio.wait_for(client.incr("counter"), 5)  # stall watch: far below the 30 s socket timeout
        assert client.geofailover.active == "b"
        assert await client.incr("counter") == 1
    finally:
        two[0].thaw()


async def test_a_frozen_region_read_is_resent(two, make_async) -> None:
    mark(two)
    client = make_async(two, socket_timeout=30.0, probe_interval=5.0, health_check_timeout=0.3)
    assert await client.get("whoami") == b"0"
    await until(lambda: client.geofailover.monitor.completed_rounds >= 1)
    two[0].freeze()
    try:
        assert await asyncio.wait_for(client.get("whoami"), 5) == b"1"
    finally:
        two[0].thaw()


async def test_retry_policy_none_raises_and_still_switches(two, make_async) -> None:
    client = make_async(two, retry_on_failover="none")
    await client.ping()
    two[0].kill()
    with pytest.raises(redis.exceptions.ConnectionError):
        await client.get("k")
    await until(lambda: client.geofailover.active == "b")
    assert await client.get("k") is None


async def test_pipeline_transaction_lock_and_scripts(two, make_async) -> None:
    client = make_async(two)
    async with client.pipeline() as pipe:
        pipe.set("p", 1).incr("p")
        assert await pipe.execute() == [True, 2]
    async with client.pipeline(transaction=False) as pipe:
        pipe.get("p").blpop(["nothing"], 1)  # a blocking command in a batch waits its own time
        assert await pipe.execute() == [b"2", None]

    async def bump(pipe: Any) -> None:
        value = int(await pipe.get("t") or 0)
        pipe.multi()
        pipe.set("t", value + 1)

    await client.transaction(bump, "t")
    assert await client.get("t") == b"1"
    async with client.lock("job", timeout=5):
        assert await client.exists("job")
    script = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert await script(keys=["s"], args=[5]) == 5
    two[0].kill()
    async with client.pipeline(transaction=False) as pipe:
        pipe.get("p")
        assert await pipe.execute() == [None]  # a read-only batch, re-sent on b
    assert await script(keys=["s"], args=[1]) == 1  # the script is loaded again on b


async def test_blpop_longer_than_the_socket_timeout_is_not_a_fault(two, make_async) -> None:
    client = make_async(two, socket_timeout=0.3)
    await client.ping()
    assert await client.blpop(["nothing"], timeout=1) is None
    assert client.geofailover.active == "a"
    assert client.geofailover.status()["endpoints"][0]["breaker_failures"] == 0


async def test_a_parked_blpop_moves_with_the_switch(two, make_async) -> None:
    client = make_async(two)
    await client.ping()
    task = asyncio.ensure_future(client.blpop(["jobs"], timeout=0))
    await until(lambda: two[0].client().info("clients")["blocked_clients"] == 1)
    client.geofailover.failover_to("b")
    await until(lambda: two[1].client().info("clients")["blocked_clients"] == 1, message="BLPOP did not move to b")
    two[1].client().rpush("jobs", "j1")
    assert await asyncio.wait_for(task, 5) == (b"jobs", b"j1")


async def test_all_down_raises_no_healthy_endpoint(two, make_async) -> None:
    client = make_async(two)
    await client.ping()
    for server in two:
        server.kill()
    await until(lambda: client.geofailover.active is None)
    with pytest.raises(NoHealthyEndpointError):
        await client.get("k")


async def test_pubsub_follows_every_switch_at_the_switch(two, make_async) -> None:
    client = make_async(two, failback_grace_period=0.3)
    ps = client.pubsub(ignore_subscribe_messages=True)
    await ps.subscribe("news")
    await until(lambda: two[0].client().pubsub_numsub("news")[0][1] == 1)
    client.geofailover.failover_to("b")
    # Nobody reads: the switch itself re-subscribes on b.
    await until(lambda: two[1].client().pubsub_numsub("news")[0][1] == 1, message="not re-subscribed on b at the switch")
    two[1].client().publish("news", "on-b")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3
    message = None
    while message is None and loop.time() < deadline:  # the re-subscription's confirmation comes first (ignored)
        message = await ps.get_message(timeout=0.2)
    assert message is not None and message["data"] == b"on-b"
    # A reader blocked in listen() follows a failback while b stays up.
    got: list[Any] = []

    async def listen() -> None:
        async for m in ps.listen():
            got.append(m)

    reader = asyncio.ensure_future(listen())
    await asyncio.sleep(0)
    client.geofailover.unpin()
    await until(lambda: client.geofailover.active == "a")
    await until(lambda: two[0].client().pubsub_numsub("news")[0][1] == 1, message="the blocked reader did not follow")

    def heard() -> bool:
        two[0].client().publish("news", "on-a")
        return any(m.get("data") == b"on-a" for m in got)

    await until(heard)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    await ps.aclose()


async def test_cancellation_never_leaves_a_half_read_connection(two, make_async) -> None:
    client = make_async(two)
    await client.set("k", "v")
    task = asyncio.ensure_future(client.blpop(["nothing"], timeout=5))
    await until(lambda: two[0].client().info("clients")["blocked_clients"] == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(20):  # the cancelled BLPOP's reply must never be read as another command's
        assert await client.get("k") == b"v"
    two[0].client().rpush("nothing", "late")
    assert await client.get("k") == b"v"
    assert client.geofailover.active == "a" and client.geofailover.status()["endpoints"][0]["breaker_failures"] == 0


async def test_aclose_returns_everything(two) -> None:
    client = AsyncFailoverRedis.from_url(url_list(two), name="closing-async", **FAST)
    await asyncio.gather(*(client.incr("n") for _ in range(20)))
    pool = client.connection_pool
    assert pool._in_use_connections == set() and pool._available_connections
    await client.aclose()
    assert client.geofailover.closed  # the last client of its engine: threads stopped, name free
    assert not any(c.is_connected for c in pool._available_connections)


def test_two_event_loops_in_one_process_share_the_engine(two) -> None:
    async def use(value: int) -> Any:
        client = AsyncFailoverRedis.from_url(url_list(two), name="loops", **FAST)
        try:
            await client.set("loop", value)
            return client.geofailover, await client.get("loop")
        finally:
            await client.aclose()

    keep = FailoverRedis.from_url(url_list(two), name="loops", **FAST)  # keeps the engine alive across runs
    try:
        first = asyncio.run(use(1))
        second = asyncio.run(use(2))
        assert first[0] is second[0] is keep.geofailover
        assert (first[1], second[1]) == (b"1", b"2")
        results: list[Any] = []
        thread = threading.Thread(target=lambda: results.append(asyncio.run(use(3))))
        thread.start()
        thread.join(10)
        assert results and results[0][1] == b"3"
    finally:
        keep.close()


def test_an_async_client_works_in_a_forked_child(two) -> None:
    async def once(name: str) -> Any:
        client = AsyncFailoverRedis(name=name)
        try:
            return await client.incr("forked"), client.geofailover.monitor.running
        finally:
            await client.aclose()

    keep = FailoverRedis.from_url(url_list(two), name="fork-async", **FAST)  # the parent's engine, running
    try:
        assert asyncio.run(once("fork-async")) == (1, True)

        def child() -> None:
            assert asyncio.run(once("fork-async")) == (2, True)  # the child's engine re-armed

        run_in_child(child)
        wait_until(lambda: two[0].client().get("forked") == b"2", timeout=2)
    finally:
        keep.close()
