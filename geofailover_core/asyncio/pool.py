"""An asyncio connection pool that follows the active endpoint.

The async twin of :mod:`geofailover_core.pool`, on the *same* engine: the
engine stays thread-based (its monitor, breakers and decisions are shared
with any sync client of the same name), and this pool only reads its
decisions. Nothing here blocks the event loop or holds a lock across an
``await``: routing is a lock-free read, and what a switch asks of the pool
(drop stale sockets, wake a command parked on the old endpoint) is handed to
the pool's own loop with ``call_soon_threadsafe``, because the switch happens
on another thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import time
from typing import Any

import redis.asyncio.connection as aconn
import redis.connection as sconn
import redis.exceptions
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

from ..config import FailoverConfig
from ..connection import endpoint_params, quiet_connection_defaults, stamp
from ..endpoint import EndpointState
from ..engine import FailoverEngine
from ..errors import NoHealthyEndpointError, ReplyLostError
from ..stamps import generation_of, is_blocking, mark_unsent, set_woken, stamp_generation, was_woken

_monotonic = time.monotonic

#: redis-py's sync connection class of an endpoint -> its asyncio twin.
_ASYNC_CLASSES: dict[type[Any], type[aconn.AbstractConnection]] = {
    sconn.Connection: aconn.Connection,
    sconn.SSLConnection: aconn.SSLConnection,
    sconn.UnixDomainSocketConnection: aconn.UnixDomainSocketConnection,
}

_ENDPOINT_KWARGS = ("password", "username", "credential_provider", "ssl_password", "host", "port", "path", "ssl", "max_connections")


class AsyncManagedConnection:
    """Mixin for a redis.asyncio connection: made for one engine generation and
    one endpoint (see :class:`geofailover_core.connection.ManagedConnection`)."""

    _geofailover_gen: int = -1
    _geofailover_endpoint: str | None = None
    _geofailover_since: float = 0.0
    _geofailover_loop: asyncio.AbstractEventLoop | None = None
    is_connected: bool
    socket_timeout: float | None

    async def connect(self) -> None:
        if self.is_connected:
            return
        try:
            await super().connect()  # type: ignore[misc]
        except Exception as exc:
            stamp_generation(exc, self._geofailover_gen)
            mark_unsent(exc)
            raise

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        timeout = self.socket_timeout
        if not timeout:
            return await super().send_packed_command(command, check_health)  # type: ignore[misc,no-any-return]
        # redis-py bounds a send with asyncio.wait_for, a new Task per command on
        # Python 3.11; asyncio.timeout bounds it the same way without one.
        self.socket_timeout = None
        try:
            async with asyncio.timeout(timeout):
                await super().send_packed_command(command, check_health)  # type: ignore[misc]
        except TimeoutError:  # the send was cancelled, and redis-py disconnected
            raise redis.exceptions.TimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = timeout

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except (redis.exceptions.ConnectionError, OSError) as exc:
            if not was_woken(self):
                raise
            lost = ReplyLostError(f"no reply from {self._geofailover_endpoint} before it was failed over")
            stamp_generation(lost, self._geofailover_gen)
            raise lost from exc


_managed: dict[type[aconn.AbstractConnection], type[aconn.AbstractConnection]] = {}


def managed_async_class(base: type[aconn.AbstractConnection]) -> type[aconn.AbstractConnection]:
    cls = _managed.get(base)
    if cls is None:
        cls = _managed.setdefault(base, type(f"Managed{base.__name__}", (AsyncManagedConnection, base), {"__module__": __name__}))
    return cls


def _accepted(cls: type[Any]) -> frozenset[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None:
            names.update(p for p in inspect.signature(init).parameters if p not in ("self", "kwargs"))
    return frozenset(names)


def async_endpoint_params(config: FailoverConfig, ep: EndpointState, client_options: dict[str, Any]) -> tuple[type[aconn.AbstractConnection], dict[str, Any]]:
    """The same endpoint parameters as the sync pool's, for redis.asyncio's classes."""
    sync_class, kwargs = endpoint_params(config, config.endpoint(ep.name), client_options)
    base = next((a for s, a in _ASYNC_CLASSES.items() if issubclass(sync_class, s)), aconn.Connection)
    accepted = _accepted(base)
    params = {k: v for k, v in kwargs.items() if k in accepted}
    params["retry"] = AsyncRetry(NoBackoff(), 0)
    return managed_async_class(base), params


def wake_async(conn: Any) -> None:
    """Wake a coroutine awaiting a reply on ``conn`` (abort its transport: the
    reader sees the connection lost). Runs on the connection's own loop."""
    if getattr(conn, "_geofailover_pid", os.getpid()) != os.getpid():
        return
    set_woken(conn)
    writer = getattr(conn, "_writer", None)
    transport = getattr(writer, "transport", None)
    if transport is not None:
        transport.abort()


def engine_of(pool: Any) -> FailoverEngine:
    if not isinstance(pool, AsyncFailoverConnectionPool):
        raise TypeError("geofailover async clients need an AsyncFailoverConnectionPool")
    return pool.engine


async def recover(engine: FailoverEngine, generation: int, exc: BaseException, command: str | None) -> bool:
    """``engine.recover`` off the event loop: it may wait up to ``confirm_timeout`` for a probe."""
    return await asyncio.to_thread(engine.recover, generation, exc, command)


class AsyncFailoverConnectionPool(aconn.ConnectionPool):
    """``redis.asyncio.ConnectionPool`` whose connections go to the engine's active endpoint.

    Bound to the event loop that makes its first connection (as every
    redis.asyncio pool is); clients on other loops need pools of their own
    (:class:`~geofailover_core.asyncio.AsyncFailoverRedis` makes one each)."""

    def __init__(
        self, engine: FailoverEngine, max_connections: int | None = None, *, config: FailoverConfig | None = None, **client_options: Any,
    ) -> None:
        self._engine = engine
        # The client's own configuration: its connection options may differ from the engine's.
        self._config = config if config is not None else engine.config
        self._client_options = dict(client_options)
        self._params: dict[str, tuple[type[aconn.AbstractConnection], dict[str, Any]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: set[asyncio.Future[None]] = set()  # disconnects in flight (held so they are not collected)
        merged = {**quiet_connection_defaults(), **self._config.base_connection_options(), **client_options}
        for key in _ENDPOINT_KWARGS:
            merged.pop(key, None)
        common = {k: v for k, v in merged.items() if k in _accepted(aconn.Connection)}
        if max_connections is None:
            max_connections = client_options.get("max_connections", self._config.client_options.get("max_connections"))
        super().__init__(max_connections=max_connections, **common)
        engine.add_switch_listener(self)

    @property
    def engine(self) -> FailoverEngine:
        return self._engine

    # -- making and lending connections ----------------------------------------------

    def make_connection(self) -> aconn.AbstractConnection:
        ep, generation = self._engine.route()
        params = self._params.get(ep.name)
        if params is None:
            params = self._params[ep.name] = async_endpoint_params(self._config, ep, self._client_options)
        conn_class, kwargs = params
        conn = conn_class(**kwargs)
        stamp(conn, generation, ep.name)
        conn._geofailover_pid = os.getpid()  # type: ignore[attr-defined]
        return conn

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        engine = self._engine
        for _ in range(3):
            try:
                conn = await super().get_connection()
            except Exception as exc:
                mark_unsent(exc)  # nothing was sent: always safe to retry elsewhere
                raise
            if conn._geofailover_gen == engine.generation:
                conn._geofailover_since = _monotonic()
                if not engine.stall_watch.armed:
                    engine.stall_watch.arm()
                return conn
            await self.release(conn)  # made just before a switch: discarded, not pooled
        raise NoHealthyEndpointError(f"geofailover[{engine.name}]: endpoint kept changing while connecting")

    async def release(self, connection: Any) -> None:
        connection._geofailover_since = 0.0
        if connection._geofailover_gen == self._engine.generation:
            await super().release(connection)
            return
        async with self._lock:
            self._in_use_connections.discard(connection)
        with contextlib.suppress(Exception):
            await connection.disconnect()

    # -- following the engine ------------------------------------------------------------

    def on_switch(self, generation: int) -> None:
        """Called on the switching thread, engine lock held: hand the work to our loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        failed = self._engine.last_switch_failed
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._switched, generation, failed)

    def _switched(self, generation: int, failed: bool) -> None:
        stale = [c for c in self._available_connections if generation_of(c) != generation]
        if stale:
            self._available_connections = [c for c in self._available_connections if generation_of(c) == generation]
            for conn in stale:
                self._background(conn.disconnect(nowait=True))
        for conn in list(self._in_use_connections):
            if generation_of(conn) != generation and (is_blocking(conn) or (failed and conn._geofailover_since)):  # type: ignore[attr-defined]
                wake_async(conn)

    def _background(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def on_close(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(lambda: self._background(self.disconnect()))

    def oldest_outstanding(self, generation: int) -> float | None:
        """See :meth:`geofailover_core.pool.FailoverPoolMixin.oldest_outstanding`."""
        oldest: float | None = None
        for conn in list(self._in_use_connections):
            since = conn._geofailover_since  # type: ignore[attr-defined]
            if since and conn._geofailover_gen == generation and not is_blocking(conn) and (oldest is None or since < oldest):  # type: ignore[attr-defined]
                oldest = since
        return oldest

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self._engine.name!r} active={self._engine.active!r}>"


__all__ = ["AsyncFailoverConnectionPool", "AsyncManagedConnection", "async_endpoint_params", "engine_of", "managed_async_class", "recover", "wake_async"]
