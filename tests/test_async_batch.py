"""Auto-pipelining (``AsyncFailoverRedis.auto_pipeline``) on real servers and real faults:
fewer round trips, and for each command exactly what it would have had alone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from geofailover_core.asyncio import AsyncFailoverPipeline

from .test_async_client import make_async, until
from .test_failover import mark

__all__ = ["make_async"]  # the fixture


@pytest.fixture
def pipelines(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every pipeline the client executes."""
    sizes: list[int] = []
    execute = AsyncFailoverPipeline.execute

    async def counting(self: AsyncFailoverPipeline, raise_on_error: bool = True) -> Any:
        sizes.append(len(self.command_stack))
        return await execute(self, raise_on_error)

    monkeypatch.setattr(AsyncFailoverPipeline, "execute", counting)
    return sizes


async def test_concurrent_commands_share_one_round_trip_and_each_gets_its_reply(two, make_async, pipelines) -> None:
    client = make_async(two, decode_responses=True)
    batch = client.auto_pipeline
    await client.lpush("a-list", "x")
    assert await asyncio.gather(*(batch.set(f"k{i}", i) for i in range(50))) == [True] * 50
    replies = await asyncio.gather(*(batch.get(f"k{i}") for i in range(50)), batch.get("a-list"), return_exceptions=True)
    assert replies[:50] == [str(i) for i in range(50)]
    assert isinstance(replies[50], redis.exceptions.ResponseError) and "WRONGTYPE" in str(replies[50])  # only its caller
    assert pipelines == [50, 51]
    assert await batch.get("k7") == "7" and pipelines == [50, 51], "a command alone in its turn goes alone"


async def test_one_callers_bad_arguments_fail_only_that_caller(two, make_async) -> None:
    client = make_async(two, decode_responses=True)
    batch = client.auto_pipeline
    replies = await asyncio.gather(batch.set("good", 1), batch.set("bad", None), batch.get("good"), return_exceptions=True)
    assert replies[0] is True and isinstance(replies[1], redis.exceptions.DataError)
    assert await client.get("good") == "1" and client.geofailover.active == "a"


async def test_a_blocking_command_is_never_batched(two, make_async, pipelines) -> None:
    client = make_async(two, decode_responses=True)
    batch = client.auto_pipeline
    await client.set("k", "v")
    waiting = asyncio.ensure_future(batch.blpop(["jobs"], timeout=0))
    await until(lambda: two[0].client().info("clients")["blocked_clients"] == 1)
    gets = asyncio.gather(*(batch.get("k") for _ in range(3)))
    assert await asyncio.wait_for(gets, 5) == ["v"] * 3, "not held behind the BLPOP"
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await until(lambda: two[0].client().info("clients")["blocked_clients"] == 0)
    two[0].client().rpush("jobs", "job")
    assert await client.lpop("jobs") == "job", "the cancelled wait took nothing"
    assert pipelines == [3]


async def test_a_timeout_without_a_switch_is_not_resent(two, make_async) -> None:
    client = make_async(two, socket_timeout=0.3, failure_threshold=100, health_checks=[lambda ctx: True])
    batch = client.auto_pipeline
    await batch.ping()
    two[0].freeze()
    try:
        replies = await asyncio.gather(*(batch.get("k") for _ in range(3)), return_exceptions=True)
    finally:
        two[0].thaw()
    assert all(isinstance(r, redis.exceptions.TimeoutError) for r in replies), replies
    assert client.geofailover.active == "a"
    assert client.geofailover.status()["endpoints"][0]["counters"]["command_failures"] == 1, "one batch, one failure, no re-sends"


async def test_a_cancelled_caller_leaves_the_others_served(two, make_async) -> None:
    client = make_async(two, decode_responses=True)
    batch = client.auto_pipeline
    await client.set("k", "v")
    doomed = asyncio.ensure_future(batch.blpop(["nothing"], timeout=5))
    others = [asyncio.ensure_future(batch.get("k")) for _ in range(5)]
    await asyncio.sleep(0)
    doomed.cancel()
    assert await asyncio.gather(*others) == ["v"] * 5
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert [await batch.get("k") for _ in range(3)] == ["v"] * 3


async def test_kill_mid_batch_reads_are_resent_and_writes_follow_the_policy(two, make_async) -> None:
    mark(two)
    client = make_async(two)
    batch = client.auto_pipeline
    assert await batch.get("whoami") == b"0"
    two[0].kill()
    replies = await asyncio.gather(*(batch.get("whoami") for _ in range(10)), batch.incr("n"), return_exceptions=True)
    assert replies[:10] == [b"1"] * 10, "reads in a failed batch are re-sent on b"
    assert replies[10] == 1 or isinstance(replies[10], redis.exceptions.ConnectionError)
    assert client.geofailover.active == "b"
    assert await asyncio.gather(*(batch.incr("m") for _ in range(5))) == [1, 2, 3, 4, 5]


async def test_retry_policy_none_raises_every_command_of_a_failed_batch(two, make_async) -> None:
    client = make_async(two, retry_on_failover="none")
    batch = client.auto_pipeline
    await batch.ping()
    two[0].kill()
    replies = await asyncio.gather(*(batch.get("k") for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, redis.exceptions.ConnectionError) for r in replies), replies
    await until(lambda: client.geofailover.active == "b")


async def test_a_member_turned_replica_refuses_batched_writes_that_are_then_sent_to_b(two, make_async) -> None:
    client = make_async(two, decode_responses=True)
    batch = client.auto_pipeline
    await batch.ping()
    two[0].client().replicaof(two[1].host, two[1].port)
    try:
        await until(lambda: two[0].client().info("replication")["master_link_status"] == "up")
        replies = await asyncio.gather(*(batch.set(f"w{i}", i) for i in range(10)), batch.get("w0"))
        assert replies[:10] == [True] * 10, "refused (READONLY), so not applied: each re-sent alone, on b"
        assert client.geofailover.active == "b"
        assert two[1].client().mget([f"w{i}" for i in range(10)]) == [str(i).encode() for i in range(10)]
    finally:
        two[0].client().replicaof("no", "one")
