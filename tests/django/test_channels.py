"""``GeoFailoverChannelLayer``: channels_redis's layer across failover members, on real servers and a real kill."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
import redis
from django.core.exceptions import ImproperlyConfigured

from geofailover_core import registry
from geofailover_core.testing import RedisServer

from ..conftest import FAST
from .conftest import location

pytest.importorskip("channels_redis")

from geofailover_django.channels import GeoFailoverChannelLayer

MakeLayer = Callable[..., GeoFailoverChannelLayer]


@pytest_asyncio.fixture
async def make_layer(django_settings: None) -> AsyncIterator[MakeLayer]:
    made: list[GeoFailoverChannelLayer] = []

    def make(servers: list[RedisServer], **config: Any) -> GeoFailoverChannelLayer:
        geo = {**FAST, "control_plane": False, **config.pop("GEOFAILOVER", {})}
        layer = GeoFailoverChannelLayer(hosts=location(servers), GEOFAILOVER=geo, **config)
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.close_pools()
    registry.close_all()


async def until(predicate: Callable[[], Any], timeout: float = 5.0, message: str = "condition not met") -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := predicate()):
        if loop.time() > deadline:
            raise AssertionError(f"{message} (waited {timeout} s)")
        await asyncio.sleep(0.005)
    return value


def test_hosts_are_failover_members_of_one_engine(django_settings: None, two: list[RedisServer]) -> None:
    layer = GeoFailoverChannelLayer(hosts=location(two), GEOFAILOVER={"failback_grace_period": 30, "control_plane": False}, prefix="chat", capacity=10)
    try:
        assert layer.ring_size == 1  # never shards
        assert layer.geofailover.endpoint_names == ["a", "b"]
        assert layer.geofailover.name == "channels.chat"
        assert layer.geofailover.config.failback_grace_period == 30
        assert layer.capacity == 10
        with pytest.raises(ImproperlyConfigured, match=r"CHANNEL_LAYERS\[\.\.\.\]\['CONFIG'\]\['GEOFAILOVER'\]\['failback_grace_perod'\]"):
            GeoFailoverChannelLayer(hosts=location(two), GEOFAILOVER={"failback_grace_perod": 30})
        with pytest.raises(ImproperlyConfigured, match="no endpoints"):
            GeoFailoverChannelLayer(hosts=[])
    finally:
        registry.close_all()


async def test_send_receive_groups_and_flush(two: list[RedisServer], make_layer: MakeLayer) -> None:
    layer = make_layer(two)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "hello", "n": 1})
    assert await asyncio.wait_for(layer.receive(channel), 5) == {"type": "hello", "n": 1}
    await layer.send("general", {"type": "plain"})
    assert await asyncio.wait_for(layer.receive("general"), 5) == {"type": "plain"}
    await layer.group_add("room", channel)
    await layer.group_send("room", {"type": "to.room"})
    assert await asyncio.wait_for(layer.receive(channel), 5) == {"type": "to.room"}
    assert two[0].client().keys("asgi*") and not two[1].client().keys("asgi*")  # one region serves
    await layer.group_discard("room", channel)
    await layer.flush()
    assert not two[0].client().keys("asgi*")


async def test_a_group_keeps_receiving_through_a_kill_of_the_active_region(two: list[RedisServer], make_layer: MakeLayer) -> None:
    """Three members, one sender every 5 ms, the active region SIGKILLed.

    Lost are only (1) a send whose command was in flight at the kill and (2)
    messages stored on the dead region that no member had popped yet; nobody
    sees an error. Every message sent once the layer is on the new region
    reaches every member, once."""
    layer = make_layer(two)
    members = [await layer.new_channel() for _ in range(3)]
    for channel in members:
        await layer.group_add("lobby", channel)
    received: dict[str, list[int]] = {channel: [] for channel in members}
    sent: list[tuple[int, int]] = []  # (n, generation the send started on)
    failed: list[tuple[int, str]] = []
    stop = asyncio.Event()

    async def member(channel: str) -> None:
        while True:
            received[channel].append((await layer.receive(channel))["n"])

    async def sender() -> None:
        n = 0
        while not stop.is_set() and n < 5000:
            n += 1
            generation = layer.geofailover.generation
            try:
                await layer.group_send("lobby", {"type": "tick", "n": n})
                sent.append((n, generation))
            except redis.exceptions.ConnectionError as exc:
                failed.append((n, type(exc).__name__))
            await asyncio.sleep(0.005)

    sending = asyncio.ensure_future(sender())
    tasks = [asyncio.ensure_future(member(c)) for c in members] + [sending]
    try:
        await until(lambda: all(len(r) >= 20 for r in received.values()), message="no traffic on a")
        before = layer.geofailover.generation
        two[0].kill()
        await until(lambda: layer.geofailover.active == "b", message="no switch to b")
        await until(lambda: len([n for n, g in sent if g > before]) >= 50, message="sender stalled after the switch")
        stop.set()
        await sending
        last = max(n for n, _ in sent)
        await until(lambda: all(last in r for r in received.values()), message="members stopped receiving after the switch")
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    after = [n for n, generation in sent if generation > before]
    for channel, got in received.items():
        assert len(got) == len(set(got)), f"duplicates at {channel}"
        missing = sorted(set(after) - set(got))
        assert missing == [], f"{channel} lost messages sent after the switch: {missing}"
        lost = sorted({n for n, _ in sent} - set(got))
        assert len(lost) <= 3, f"{channel} lost more than the messages in flight at the kill: {lost}"
    assert failed == []  # a send in flight at the kill is lost, not raised


async def test_a_process_that_only_receives_restores_its_groups_at_the_switch(two: list[RedisServer], make_layer: MakeLayer) -> None:
    """Two layers with engines of their own stand for two processes; the receiving
    one never sends, so only the switch itself can bring its members to region b."""
    receiver = make_layer(two, GEOFAILOVER={"name": "rx"})
    sender = make_layer(two, GEOFAILOVER={"name": "tx"})
    channel = await receiver.new_channel()
    await receiver.group_add("room", channel)
    got = asyncio.ensure_future(receiver.receive(channel))
    await sender.group_send("room", {"type": "m", "n": 1})
    assert (await asyncio.wait_for(got, 5))["n"] == 1
    pending = asyncio.ensure_future(receiver.receive(channel))  # parked on a
    await until(lambda: two[0].client().info("clients")["blocked_clients"] == 1, message="receive() is not parked on a")
    receiver.geofailover.failover_to("b")
    sender.geofailover.failover_to("b")
    await until(lambda: two[1].client().zcard("asgi:group:room") == 1, message="the receiving process did not restore its members on b")
    await until(lambda: two[1].client().info("clients")["blocked_clients"] == 1, message="receive() did not move to b")
    await sender.group_send("room", {"type": "m", "n": 2})
    assert (await asyncio.wait_for(pending, 5))["n"] == 2
