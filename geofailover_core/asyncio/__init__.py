"""geofailover for ``redis.asyncio``: :class:`AsyncFailoverRedis`, a real
``redis.asyncio.Redis`` on the same engine as the sync client.

Not imported by ``geofailover_core`` itself: import it where you need it
(``from geofailover_core.asyncio import AsyncFailoverRedis``).
"""

from __future__ import annotations

from .client import AsyncFailoverPipeline, AsyncFailoverRedis
from .loops import LoopClients
from .pool import AsyncFailoverConnectionPool
from .pubsub import AsyncFailoverPubSub

__all__ = ["AsyncFailoverConnectionPool", "AsyncFailoverPipeline", "AsyncFailoverPubSub", "AsyncFailoverRedis", "LoopClients"]
