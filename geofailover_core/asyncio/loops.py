"""One ``AsyncFailoverRedis`` per event loop, for adapters that serve async code
(Django's async cache and its Channels layer).

A redis.asyncio pool belongs to the loop that opened its sockets, and Django
may run a loop per request (an async view under WSGI runs in
``async_to_sync``), so each loop gets a client of its own on the shared
engine. It is closed just before its loop closes (as channels_redis closes
its pools), so no socket outlives its loop and no pool is kept for a dead one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from ..engine import FailoverEngine
from .client import AsyncFailoverRedis
from .pool import AsyncFailoverConnectionPool


class LoopClients:
    """The clients of one engine, by event loop; ``pool_kwargs`` go to each loop's pool."""

    def __init__(self, engine: Callable[[], FailoverEngine], **pool_kwargs: Any) -> None:
        self._engine = engine
        self._pool_kwargs = pool_kwargs
        self._clients: dict[asyncio.AbstractEventLoop, AsyncFailoverRedis] = {}

    def get(self) -> AsyncFailoverRedis:
        """This loop's client (made on first use, and again when its engine was closed)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None or client.geofailover.closed:
            if client is None:
                self._close_before(loop)
            pool = AsyncFailoverConnectionPool(self._engine(), **self._pool_kwargs)
            client = self._clients[loop] = AsyncFailoverRedis(connection_pool=pool)
        return client

    async def aclose(self) -> None:
        """Close this loop's connections (they open again on next use)."""
        client = self._clients.get(asyncio.get_running_loop())
        if client is not None:
            await client.aclose(close_connection_pool=True)

    def _close_before(self, loop: asyncio.AbstractEventLoop) -> None:
        close = loop.close

        def close_clients() -> None:
            client = self._clients.pop(loop, None)
            if client is not None and not loop.is_running() and not loop.is_closed():
                loop.run_until_complete(client.aclose(close_connection_pool=True))
            close()

        with contextlib.suppress(AttributeError):  # uvloop's loops take no attributes: theirs close with the process
            loop.close = close_clients  # type: ignore[method-assign]
