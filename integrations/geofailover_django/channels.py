"""Django Channels layer: channels_redis's ``RedisChannelLayer`` whose ``hosts``
are failover members of one engine, never shards (docs/django.md).

The layer has one "host", the engine, reached through one ``AsyncFailoverRedis``
per event loop. A switch lands on a region that holds none of the group
memberships made on the old one (failover moves traffic, not data), so the
layer keeps the memberships its consumers added and writes them to the region
now serving: at the switch, and before a group operation there.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import redis.exceptions
from channels_redis.core import RedisChannelLayer  # type: ignore[import-untyped]
from django.core.exceptions import ImproperlyConfigured

from geofailover_core.adapters import SettingNames, engine_for, load_config
from geofailover_core.asyncio import AsyncFailoverRedis
from geofailover_core.asyncio.loops import LoopClients
from geofailover_core.engine import FailoverEngine
from geofailover_core.errors import ConfigurationError

_NAMES = SettingNames("CHANNEL_LAYERS[...]['CONFIG']['hosts']", "CHANNEL_LAYERS[...]['CONFIG']['GEOFAILOVER']")


class GeoFailoverChannelLayer(RedisChannelLayer):  # type: ignore[misc]
    """``CONFIG = {"hosts": [url, ...], "GEOFAILOVER": {...}, **RedisChannelLayer options}``."""

    def __init__(self, hosts: Any = None, GEOFAILOVER: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        defaults = {"name": f"channels.{kwargs.get('prefix', 'asgi')}", "app_label": "channels"}
        try:
            self._geo_config = load_config(hosts, GEOFAILOVER, _NAMES, defaults=defaults)
        except ConfigurationError as exc:
            raise ImproperlyConfigured(str(exc)) from None
        super().__init__(hosts=[self._geo_config.name], **kwargs)  # a ring of one
        self._geo_engine: FailoverEngine | None = None
        self._geo_clients = LoopClients(lambda: self.geofailover)
        self._geo_groups: dict[str, dict[str, float]] = {}  # group -> {channel: when added}
        self._geo_restored = self.geofailover.generation
        self._geo_loop: asyncio.AbstractEventLoop | None = None  # where the consumers live
        self._geo_tasks: set[asyncio.Future[None]] = set()

    @property
    def geofailover(self) -> FailoverEngine:
        """The failover engine (``active``, ``status()``, ``failover_to()``, ``on()``...)."""
        engine = self._geo_engine
        if engine is None or engine.closed:
            engine = self._geo_engine = engine_for(self._geo_config, _NAMES)
            engine.add_switch_listener(self)
        return engine

    def connection(self, index: int) -> AsyncFailoverRedis:
        return self._geo_clients.get()

    async def _unless_left(self, work: Awaitable[Any]) -> Any:
        """``work``, whose connection error on a region the engine has left since
        means what that region held is lost (failover moves traffic, not data):
        a send in flight there is dropped like the messages stored there, and a
        pop returns nothing, so ``receive_single`` pops again on the new region.
        A consumer is never closed by a failover."""
        generation = self.geofailover.generation
        try:
            return await work
        except redis.exceptions.ConnectionError:
            if self.geofailover.generation == generation:
                raise
            return None

    async def _brpop_with_clean(self, index: int, channel: str, timeout: float) -> Any:
        return await self._unless_left(super()._brpop_with_clean(index, channel, timeout))

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        await self._unless_left(super().send(channel, message))

    async def close_pools(self) -> None:
        await self.wait_received()
        await self._geo_clients.aclose()

    # -- group memberships follow the switch ----------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        self._geo_loop = asyncio.get_running_loop()
        self._geo_groups.setdefault(group, {})[channel] = time.time()  # first: a switch now restores it too
        await self._unless_left(self._restored_then(functools.partial(super().group_add, group, channel)))

    async def group_discard(self, group: str, channel: str) -> None:
        await super().group_discard(group, channel)
        members = self._geo_groups.get(group, {})
        members.pop(channel, None)
        if not members:
            self._geo_groups.pop(group, None)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await self._unless_left(self._restored_then(functools.partial(super().group_send, group, message)))

    async def _restored_then(self, work: Callable[[], Awaitable[None]]) -> None:
        await self._restore()
        await work()

    async def _restore(self) -> None:
        """Write this process's memberships to the region serving now, once per switch.
        Idempotent (ZADD), so concurrent callers on several loops do no harm."""
        generation = self.geofailover.generation
        if generation == self._geo_restored:
            return
        oldest = time.time() - self.group_expiry
        pipe = self.connection(0).pipeline(transaction=False)
        for group, members in list(self._geo_groups.items()):
            live = {channel: added for channel, added in members.items() if added > oldest}
            if live:
                pipe.zadd(self._group_key(group), live)
                pipe.expire(self._group_key(group), self.group_expiry)
        await pipe.execute()
        self._geo_restored = generation

    def on_switch(self, generation: int) -> None:
        """On the switching thread: restore on the consumers' loop, before anyone sends."""
        loop = self._geo_loop
        if loop is not None and not loop.is_closed() and self._geo_groups:
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(self._restore_soon)

    def _restore_soon(self) -> None:
        task = asyncio.ensure_future(self._restore())
        self._geo_tasks.add(task)  # held until done
        task.add_done_callback(self._restore_done)

    def _restore_done(self, task: asyncio.Future[None]) -> None:
        self._geo_tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved; the next group operation tries again

    def on_close(self) -> None:
        """Nothing to release: each loop's client closes with its loop."""
