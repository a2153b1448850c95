"""Auto-pipelining: the commands that concurrent tasks issue in one turn of the
event loop travel to the server as one pipeline.

Why: fifty tasks each awaiting one ``GET`` pay fifty pool checkouts, fifty
sends and fifty timeout scopes in ``redis.asyncio``; batched, they pay one of
each, and the per-command cost is packing and parsing (the way Lettuce and
ioredis pipeline by default). A command alone in its turn is sent as usual.

Nothing about a command changes but its company. A reply error reaches only
its caller. A reply that says the server refused to serve (``READONLY``,
``LOADING``...) re-sends that command alone, so it feeds the engine and
follows the retry policy exactly as if it had been sent alone. When the
batch fails as a whole (its endpoint died under it) and the pipeline could
not re-send it (a write whose reply was lost is in it), each command that the
retry policy allows is re-sent alone once traffic has moved; the others get
the error, as they would have alone. Blocking commands (``BLPOP``...) are
never batched. One command's bad arguments (a ``DataError`` while
packing, before anything is sent) send every command alone, so only its
caller sees the error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import redis.exceptions
from redis.commands.core import AsyncCoreCommands

from ..commands import BLOCKING, Failure, classify, retry_allowed

if TYPE_CHECKING:
    from .client import AsyncFailoverRedis

_Queued = tuple[tuple[Any, ...], dict[str, Any], "asyncio.Future[Any]"]


class AutoPipeline(AsyncCoreCommands):  # type: ignore[misc]
    """redis-py's command methods (``get``, ``set``, ``delete``...) on ``client``, batched
    per event-loop turn. Made by :meth:`AsyncFailoverRedis.auto_pipeline`; one per client,
    so per event loop, as the client is."""

    _event_dispatcher: Any = None  # redis-py's typing protocol for command mixins asks for one

    def __init__(self, client: AsyncFailoverRedis) -> None:
        self._client = client
        self._queue: list[_Queued] = []
        self._tasks: set[asyncio.Task[None]] = set()  # strong references while batches run

    def execute_command(self, *args: Any, **options: Any) -> Awaitable[Any]:
        if args and str(args[0]).upper() in BLOCKING:
            # A server-side wait would hold every command batched after it, and once sent it
            # cannot be taken back; alone, a cancelled caller drops its connection as usual.
            return self._client.execute_command(*args, **options)  # type: ignore[no-any-return]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queue:
            loop.call_soon(self._flush)
        self._queue.append((args, options, future))
        return future

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        task = asyncio.ensure_future(self._send(batch) if len(batch) > 1 else self._alone(batch[0]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _alone(self, queued: _Queued) -> None:
        args, options, future = queued
        if future.done():  # its caller was cancelled before it went out
            return
        try:
            result = await self._client.execute_command(*args, **options)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(result)

    async def _send(self, batch: list[_Queued]) -> None:
        try:
            await self._send_batch([queued for queued in batch if not queued[2].done()])
        finally:  # whatever went wrong, no caller is left waiting
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(RuntimeError("geofailover: the auto-pipeline batch ended without a reply for this command"))

    async def _send_batch(self, batch: list[_Queued]) -> None:
        generation = self._client.geofailover.generation
        pipe = self._client.pipeline(transaction=False)
        for args, options, _ in batch:
            pipe.execute_command(*args, **options)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            for _, _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - the batch failed as a whole: per command, as if alone
            policy = self._client.geofailover.config.retry_on_failover
            if isinstance(exc, redis.exceptions.DataError):  # one command's arguments: nothing was sent
                again = batch
            elif self._client.geofailover.generation == generation:  # no switch: alone, none would be re-sent
                again = []
            else:
                again = [queued for queued in batch if retry_allowed(policy, [str(queued[0][0])], exc)]
            for _, _, future in batch:
                if not future.done() and all(future is not f for _, _, f in again):
                    future.set_exception(exc)
            await asyncio.gather(*(self._alone(queued) for queued in again))
            return
        refused = []
        for queued, reply in zip(batch, replies, strict=True):
            future = queued[2]
            if isinstance(reply, Exception) and classify(reply, str(queued[0][0])) is not Failure.IGNORE:
                refused.append(queued)  # refused by the server, so not applied: alone, it reaches the engine
            elif future.done():
                continue
            elif isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
        if refused:
            await asyncio.gather(*(self._alone(queued) for queued in refused))


__all__ = ["AutoPipeline"]
