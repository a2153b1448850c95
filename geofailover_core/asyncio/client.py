"""``AsyncFailoverRedis``: a real ``redis.asyncio.Redis`` that follows the active endpoint.

Same constructors, options and retry policy as
:class:`geofailover_core.FailoverRedis`, on the same engine: a sync and an
async client with one name share one monitor, one set of breakers and one
decision. The engine's blocking work (probing, confirming a failure, events)
never runs on the event loop: a failed command waits for the engine's
verdict in a worker thread (``asyncio.to_thread``), and switches reach the
loop through ``call_soon_threadsafe``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio.client as aclient
import redis.exceptions

from ..client import EndpointSpec, acquire_for, client_config
from ..commands import BLOCKING, blocking_seconds, retry_allowed
from ..config import FailoverConfig, split_options
from ..engine import FailoverEngine
from ..errors import ConfigurationError
from ..registry import release
from ..stamps import exec_sent, generation_of, is_unsent, mark_exec_sent, mark_unsent, set_blocking, stamp_generation, was_woken
from .batch import AutoPipeline
from .pool import AsyncFailoverConnectionPool, engine_of, recover
from .pubsub import AsyncFailoverPubSub

_BLOCKING_NAMES = BLOCKING | {name.lower() for name in BLOCKING}
_EXECUTE = aclient.Redis.execute_command


@contextlib.asynccontextmanager
async def _blocking_wait(conn: Any, engine: FailoverEngine, wait: float | None) -> Any:
    """Around a command that waits server-side for ``wait`` seconds (0: forever):
    the read timeout grows by the wait, and a switch can wake it (see
    :func:`geofailover_core.client.blocking_socket`, its sync twin)."""
    await conn.connect()
    set_blocking(conn, True)
    socket_timeout = conn.socket_timeout
    try:
        if generation_of(conn) != engine.generation:
            stale = redis.exceptions.ConnectionError(f"geofailover[{engine.name}]: the endpoint changed before the command was sent")
            stamp_generation(stale, generation_of(conn, engine.generation) or 0)
            mark_unsent(stale)
            raise stale
        if wait is not None:
            conn.socket_timeout = None if wait == 0 else wait + (socket_timeout or 0)
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        if was_woken(conn):
            mark_unsent(exc)
        await conn.disconnect()
        raise
    finally:
        set_blocking(conn, False)
        conn.socket_timeout = socket_timeout


class AsyncFailoverRedis(aclient.Redis):
    """A ``redis.asyncio.Redis`` whose connection pool follows the best healthy endpoint.

    ``AsyncFailoverRedis(endpoints=[...], name="default", **options)``,
    ``AsyncFailoverRedis.from_url("redis://a/0?name=us&weight=2;redis://b/0?name=eu")``,
    ``AsyncFailoverRedis(config={...})`` or ``AsyncFailoverRedis(name=...)`` for
    an engine already configured in this process (by a sync client too).
    ``client.geofailover`` is the engine.
    """

    def __init__(
        self,
        endpoints: Sequence[EndpointSpec] | str | None = None,
        *,
        name: str | None = None,
        config: FailoverConfig | Mapping[str, Any] | str | None = None,
        max_connections: int | None = None,
        connection_pool: AsyncFailoverConnectionPool | None = None,
        single_connection_client: bool = False,
        **options: Any,
    ) -> None:
        owns_pool = connection_pool is None
        self._geofailover_share = False
        if connection_pool is None:
            engine_options, client_options = split_options(options)
            own = client_config(endpoints, name, config, engine_options)
            engine = acquire_for(own, name, own_connections=True)
            try:
                connection_pool = AsyncFailoverConnectionPool(engine, max_connections=max_connections, config=own, **client_options)
            except BaseException:
                release(engine)
                raise
            self._geofailover_share = True
        elif endpoints is not None or config is not None or options:
            raise ConfigurationError("connection_pool", "given together with endpoints or options", "pass either a pool or a configuration")
        self._geofailover_engine = engine_of(connection_pool)
        super().__init__(connection_pool=connection_pool, single_connection_client=single_connection_client)
        self.auto_close_connection_pool = owns_pool

    @classmethod
    def from_url(cls, url: str, **options: Any) -> AsyncFailoverRedis:  # type: ignore[override]
        """``AsyncFailoverRedis.from_url("redis://a/0?name=us&weight=2;redis://b/0?name=eu", **options)``."""
        return cls(url, **options)

    @property
    def geofailover(self) -> FailoverEngine:
        return self._geofailover_engine

    @functools.cached_property
    def auto_pipeline(self) -> AutoPipeline:
        """This client's commands, those that concurrent tasks issue in one turn of the
        event loop sent as one pipeline (:mod:`geofailover_core.asyncio.batch`):
        ``await client.auto_pipeline.get("k")``."""
        return AutoPipeline(self)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Return every connection and give back this client's share of the engine
        (closing the last client of an engine stops its threads and frees its name)."""
        await super().aclose(close_connection_pool)
        if self._geofailover_share:
            self._geofailover_share = False
            release(self._geofailover_engine)

    # -- command path ------------------------------------------------------------

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        engine = self._geofailover_engine
        generation = engine.generation
        pinned = self.connection
        if pinned is not None:  # single_connection_client: its socket may predate a switch
            generation = pinned._geofailover_gen  # type: ignore[attr-defined]
            if generation != engine.generation:
                await self._move_pinned_connection()
                generation = engine.generation
        try:
            if args and args[0] in _BLOCKING_NAMES:
                result = await self._execute_blocking(args, options)
            else:
                result = await _EXECUTE(self, *args, **options)
        except Exception as exc:  # noqa: BLE001 - re-raised by _retry_after; never CancelledError: a cancelled caller is no failed endpoint
            return await self._retry_after(exc, generation, args, options)
        if engine.suspect:
            engine.record_success(generation)
        return result

    async def _retry_after(self, exc: Exception, generation: int, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        engine = self._geofailover_engine
        command = str(args[0]) if args else ""
        for _ in range(len(engine.config.endpoints)):
            if not await recover(engine, generation, exc, command):
                raise exc
            if not retry_allowed(engine.config.retry_on_failover, [command], exc):
                raise exc
            if self.connection is not None:
                await self._move_pinned_connection()
            generation = engine.generation
            try:
                if args and args[0] in _BLOCKING_NAMES:
                    return await self._execute_blocking(args, options)
                return await _EXECUTE(self, *args, **options)
            except Exception as again:  # noqa: BLE001 - re-raised after the loop
                exc = again
        raise exc

    async def _move_pinned_connection(self) -> None:
        old, self.connection = self.connection, None
        if old is not None:
            await self.connection_pool.release(old)
        self.connection = await self.connection_pool.get_connection()

    async def _execute_blocking(self, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        """BLPOP & co.: the command waits as long as it asked, and a switch can wake it."""
        command_name = str(args[0])
        pool = self.connection_pool
        conn = self.connection or await pool.get_connection()
        try:
            async with _blocking_wait(conn, self._geofailover_engine, blocking_seconds(command_name, args)):
                return await self._send_command_parse_response(conn, command_name, *args, **options)
        finally:
            if self.connection is None:
                await pool.release(conn)

    # -- pipelines, pub/sub, single-connection clients ---------------------------------

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> AsyncFailoverPipeline:
        return AsyncFailoverPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)

    def pubsub(self, **kwargs: Any) -> AsyncFailoverPubSub:
        return AsyncFailoverPubSub(self.connection_pool, event_dispatcher=self._event_dispatcher, **kwargs)

    async def transaction(self, func: Any, *watches: Any, **kwargs: Any) -> Any:
        """``Redis.transaction``; re-run once on the new endpoint when the
        endpoint failed before EXEC was sent (WATCH-based transactions are
        designed to be re-run)."""
        engine = self._geofailover_engine
        generation = engine.generation
        try:
            return await super().transaction(func, *watches, **kwargs)
        except Exception as exc:
            if exec_sent(exc) and engine.config.retry_on_failover != "all":
                raise
            if engine.config.retry_on_failover == "none" or not await recover(engine, generation, exc, "MULTI"):
                raise
            return await super().transaction(func, *watches, **kwargs)

    def client(self) -> AsyncFailoverRedis:
        return type(self)(connection_pool=self.connection_pool, single_connection_client=True)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        engine = self._geofailover_engine
        return f"<AsyncFailoverRedis name={engine.name!r} active={engine.active!r}>"


class AsyncFailoverPipeline(aclient.Pipeline):
    """Pipeline that feeds failures to the breaker and re-sends the batch when
    the retry policy allows (a MULTI/EXEC block whose EXEC may have reached the
    failed endpoint only under ``retry_on_failover="all"``)."""

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        engine = engine_of(self.connection_pool)
        stack = list(self.command_stack)
        watching = self.watching
        generation = engine.generation
        try:
            result = await super().execute(raise_on_error)
        except Exception as exc:
            commands = [str(args[0]) for args, _ in stack]
            if self.is_transaction or self.explicit_transaction:
                mark_exec_sent(exc, not is_unsent(exc))
            if watching or not await recover(engine, generation, exc, commands[0] if commands else None):
                raise
            if not retry_allowed(engine.config.retry_on_failover, commands, exc):
                raise
            self.command_stack = stack
            return await super().execute(raise_on_error)  # type: ignore[no-any-return]
        if engine.suspect:
            engine.record_success(generation)
        return result  # type: ignore[no-any-return]

    async def _execute_transaction(self, connection: Any, commands: Any, raise_on_error: bool) -> Any:
        async with self._blocking(connection, commands):
            return await super()._execute_transaction(connection, commands, raise_on_error)

    async def _execute_pipeline(self, connection: Any, commands: Any, raise_on_error: bool) -> Any:
        async with self._blocking(connection, commands):
            return await super()._execute_pipeline(connection, commands, raise_on_error)

    def _blocking(self, connection: Any, commands: Any) -> contextlib.AbstractAsyncContextManager[None]:
        waits = [w for args, _ in commands if (w := blocking_seconds(str(args[0]), args)) is not None]
        if not waits:
            return contextlib.nullcontext()
        return _blocking_wait(connection, engine_of(self.connection_pool), 0.0 if 0.0 in waits else max(waits))  # type: ignore[no-any-return]


__all__ = ["AsyncFailoverPipeline", "AsyncFailoverRedis"]
