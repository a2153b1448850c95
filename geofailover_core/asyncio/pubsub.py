"""Async pub/sub that follows every switch at the switch (the twin of
:class:`geofailover_core.client.FailoverPubSub`).

The engine announces a switch on whatever thread made it; the subscriber's
own event loop then re-subscribes on the new endpoint (a task scheduled with
``call_soon_threadsafe``) and wakes a reader awaiting the old socket, so a
subscriber that is not reading at that moment is already subscribed on the
new endpoint when the next message is published there.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import redis.asyncio.client as aclient

from ..stamps import generation_of, set_blocking
from .pool import engine_of, recover, wake_async


class AsyncFailoverPubSub(aclient.PubSub):
    """``redis.asyncio`` PubSub that moves to the active endpoint and re-subscribes there."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._geo_loop: asyncio.AbstractEventLoop | None = None
        self._geo_lock: asyncio.Lock | None = None
        self._geo_moving = False
        self._geo_readers = 0
        self._geo_retired: list[Any] = []
        self._geo_task: asyncio.Future[None] | None = None
        engine_of(self.connection_pool).add_switch_listener(self)

    def _stale(self) -> bool:
        conn = self.connection
        return conn is not None and generation_of(conn) != engine_of(self.connection_pool).generation

    def _lock_for_loop(self) -> asyncio.Lock:
        if self._geo_lock is None:
            self._geo_loop = asyncio.get_running_loop()
            self._geo_lock = asyncio.Lock()
        return self._geo_lock

    # -- following a switch ---------------------------------------------------------

    def on_switch(self, generation: int) -> None:
        loop = self._geo_loop
        if loop is None or loop.is_closed() or self.connection is None or not self.subscribed:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._schedule_follow)

    def on_close(self) -> None:
        loop, conn = self._geo_loop, self.connection
        if loop is not None and conn is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake_async, conn)

    def _schedule_follow(self) -> None:
        if self._geo_task is None or self._geo_task.done():
            self._geo_task = asyncio.ensure_future(self._follow())

    async def _follow(self) -> None:
        async with self._lock_for_loop():
            if self._stale() and engine_of(self.connection_pool).active is not None:
                await self._move()

    async def _move(self) -> None:
        """Re-subscribe on the active endpoint (caller holds the lock)."""
        old = self.connection
        if old is not None:
            old.deregister_connect_callback(self.on_connect)
            self.connection = None
            if self._geo_readers:
                self._geo_retired.append(old)
                wake_async(old)  # the reader releases it
            else:
                await self.connection_pool.release(old)
        conn = await self.connection_pool.get_connection()
        set_blocking(conn, True)  # a subscriber's wait is its own, never a stall
        self.connection = conn
        conn.register_connect_callback(self.on_connect)
        if self.push_handler_func is not None:
            conn._parser.set_pubsub_push_handler(self.push_handler_func)
        self._geo_moving = True  # on_connect re-subscribes through execute_command
        try:
            await self.on_connect(conn)
        finally:
            self._geo_moving = False

    async def _reconnect(self, conn: Any, *args: Any, **kwargs: Any) -> None:
        # A connection the engine switched away from must not be re-opened to the old endpoint.
        if conn is not self.connection or generation_of(conn) != engine_of(self.connection_pool).generation:
            await conn.disconnect()
            return
        await super()._reconnect(conn, *args, **kwargs)

    # -- commands and reads -----------------------------------------------------------

    async def execute_command(self, *args: Any) -> None:
        if self._geo_moving:
            await super().execute_command(*args)
            return
        engine = engine_of(self.connection_pool)
        async with self._lock_for_loop():
            if self._stale():
                await self._move()
            generation = engine.generation
            try:
                await super().execute_command(*args)
            except Exception as exc:
                if not await recover(engine, generation, exc, str(args[0]) if args else None):
                    raise
                await self._move()
            finally:
                if self.connection is not None:
                    set_blocking(self.connection, True)

    async def parse_response(self, block: bool = True, timeout: float = 0) -> Any:
        engine = engine_of(self.connection_pool)
        lock = self._lock_for_loop()
        for _ in range(len(engine.config.endpoints) + 1):
            async with lock:
                if self._stale():
                    await self._move()
                conn = self.connection
                generation = engine.generation
                self._geo_readers += 1
            try:
                return await super().parse_response(block, timeout)
            except Exception as exc:
                if conn is not self.connection:  # moved while we read: read the new socket
                    if not block:
                        return None
                    continue
                if not await recover(engine, generation, exc, None):
                    raise
                async with lock:
                    await self._move()
                if not block:
                    return None
            finally:
                self._geo_readers -= 1
                if not self._geo_readers:
                    retired, self._geo_retired = self._geo_retired, []
                    for old in retired:
                        await self.connection_pool.release(old)
        return None


__all__ = ["AsyncFailoverPubSub"]
