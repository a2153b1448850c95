"""Connection pools that follow the active endpoint.

Modelled on redis-py's Sentinel pool: the endpoint is resolved when a
connection is *made*, not when the client is built, so one ``redis.Redis``
keeps working across failovers, and every library that reaches below the
command API (``connection_pool``, ``get_connection()``, ``lock()``,
pub/sub, pipelines) follows too.

Each connection is stamped with the engine's generation. On a switch, idle
connections to the old endpoint are closed at once; connections in use by
another thread are left alone (closing a socket under a reader is redis-py
MultiDBClient's R7 bug) and are discarded when released. The only in-use
sockets touched are those parked in a blocking command (BLPOP and friends),
which are shut down so the waiting thread wakes and retries on the new
endpoint instead of waiting on a dead region.
"""

from __future__ import annotations

import functools
import inspect
import os
import socket
import time
from queue import Empty, Full
from typing import TYPE_CHECKING, Any

import redis
from redis.connection import AbstractConnection

from .connection import endpoint_params, managed_class, quiet_connection_defaults, stamp
from .endpoint import EndpointState
from .engine import FailoverEngine
from .errors import NoHealthyEndpointError
from .stamps import endpoint_of, generation_of, is_blocking, mark_unsent, set_woken

if TYPE_CHECKING:
    from .config import FailoverConfig

_monotonic = time.monotonic
_COMMAND_NAME_REQUIRED = inspect.signature(redis.ConnectionPool.get_connection).parameters["command_name"].default is inspect.Parameter.empty

# redis-py >= 6 has a dedicated class; earlier versions raised ConnectionError.
_MAX_CONNECTIONS_ERROR: type[Exception] = getattr(redis.exceptions, "MaxConnectionsError", redis.exceptions.ConnectionError)

#: Connection kwargs that name an endpoint or a secret: they never go in a
#: pool's ``connection_kwargs`` (which host libraries read and log).
_ENDPOINT_KWARGS = ("password", "username", "credential_provider", "ssl_password", "host", "port", "path", "ssl", "max_connections")


def wake(conn: AbstractConnection) -> None:
    """Wake a thread blocked reading ``conn`` (shutdown, never close: the
    reader owns the socket and closes it itself). Only in the process that
    made the socket: a forked child shares its parent's sockets, and a
    shutdown there would break the parent's command."""
    if getattr(conn, "pid", None) != os.getpid():
        return
    set_woken(conn)
    sock = getattr(conn, "_sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class FailoverPoolMixin:
    """Shared behaviour of the plain and the blocking failover pools."""

    _engine: FailoverEngine
    _config: FailoverConfig
    _client_options: dict[str, Any]
    _endpoint_params: dict[str, tuple[type[AbstractConnection], dict[str, Any]]]

    def _init_failover(self, engine: FailoverEngine, client_options: dict[str, Any], config: FailoverConfig | None) -> None:
        self._engine = engine
        self._config = config if config is not None else engine.config
        self._client_options = client_options
        self._endpoint_params = {}
        # Bound once: the command path calls it for every command. redis-py < 5.3
        # requires a command name it then ignores.
        base = super().get_connection  # type: ignore[misc]
        self._base_get_connection: Any = functools.partial(base, "") if _COMMAND_NAME_REQUIRED else base
        engine.add_switch_listener(self)

    @property
    def engine(self) -> FailoverEngine:
        return self._engine

    def _params_for(self, ep: EndpointState) -> tuple[type[AbstractConnection], dict[str, Any]]:
        params = self._endpoint_params.get(ep.name)
        if params is None:
            conn_class, kwargs = endpoint_params(self._config, self._config.endpoint(ep.name), self._client_options)
            params = self._endpoint_params[ep.name] = (managed_class(conn_class), kwargs)
        return params

    def _new_connection(self) -> AbstractConnection:
        ep, generation = self._engine.route()
        conn_class, kwargs = self._params_for(ep)
        conn = conn_class(**kwargs)
        stamp(conn, generation, ep.name)
        return conn

    def owns_connection(self, connection: Any) -> bool:
        # Called by release() for every command: the command is over, and a
        # connection of an older generation is discarded.
        connection._geofailover_since = 0.0
        return bool(connection.pid == self.pid and connection._geofailover_gen == self._engine.generation)  # type: ignore[attr-defined]

    def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        try:
            conn = self._base_get_connection()
        except BaseException as exc:
            mark_unsent(exc)  # nothing was sent: always safe to retry elsewhere
            raise
        engine = self._engine
        if conn._geofailover_gen == engine.generation:  # every connection here is a ManagedConnection
            conn._geofailover_since = _monotonic()
            if not engine.stall_watch.armed:
                engine.stall_watch.arm()
            return conn
        return self._replace_stale(conn)

    def _lent(self) -> list[Any]:
        raise NotImplementedError

    def oldest_outstanding(self, generation: int) -> float | None:
        """Monotonic time the longest-running command on ``generation`` started
        (blocking commands and pub/sub excluded: their waits are their own)."""
        oldest: float | None = None
        for conn in self._lent():
            since = conn._geofailover_since
            if since and conn._geofailover_gen == generation and not is_blocking(conn) and (oldest is None or since < oldest):
                oldest = since
        return oldest

    def _wake_stale(self, lent: list[Any], generation: int) -> None:
        """After a switch, wake in-use sockets of older generations: blocking
        commands always (they wait on a region traffic left), commands in
        flight only when the old endpoint *failed* (a frozen region never
        answers them; after a manual switch they finish where they are)."""
        failed = self._engine.last_switch_failed
        for conn in lent:
            if generation_of(conn) != generation and (is_blocking(conn) or (failed and conn._geofailover_since)):
                wake(conn)

    def _replace_stale(self, conn: Any) -> Any:
        """A connection made just before a switch: discard it and take a fresh one."""
        engine = self._engine
        for _ in range(3):
            self.release(conn)  # type: ignore[attr-defined]  # stale: discarded, not pooled
            try:
                conn = self._base_get_connection()
            except BaseException as exc:
                mark_unsent(exc)
                raise
            if generation_of(conn) == engine.generation:
                conn._geofailover_since = _monotonic()
                engine.stall_watch.arm()
                return conn
        self.release(conn)  # type: ignore[attr-defined]
        raise NoHealthyEndpointError(f"geofailover[{engine.name}]: endpoint kept changing while connecting")

    def on_switch(self, generation: int) -> None:
        raise NotImplementedError  # each pool class drops its own stale sockets

    def on_close(self) -> None:
        self.disconnect()  # type: ignore[attr-defined]

    def active_endpoint_of(self, connection: Any) -> str | None:
        """Endpoint name a connection of this pool talks to."""
        return endpoint_of(connection)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self._engine.name!r} active={self._engine.active!r}>"


def _common_kwargs(config: FailoverConfig, client_options: dict[str, Any]) -> dict[str, Any]:
    """What redis.Redis and host libraries read off ``connection_kwargs``
    (encoding, protocol...). Endpoint addresses and secrets stay out of it."""
    merged = {**quiet_connection_defaults(), **config.base_connection_options(), **client_options}
    for key in _ENDPOINT_KWARGS:
        merged.pop(key, None)
    return merged


class FailoverConnectionPool(FailoverPoolMixin, redis.ConnectionPool):
    """``redis.ConnectionPool`` whose connections go to the engine's active endpoint.

    ``config``: the configuration this pool's client was given, whose
    connection options (and the endpoints' URLs and options) its connections
    use; by default the engine's. Its engine options match the engine's (the
    registry made sure), its connection options are this client's own.
    """

    def __init__(
        self, engine: FailoverEngine, max_connections: int | None = None, *, config: FailoverConfig | None = None, **client_options: Any
    ) -> None:
        self._init_failover(engine, dict(client_options), config)
        if max_connections is None:  # a pool size given in the settings dict
            max_connections = client_options.get("max_connections", self._config.client_options.get("max_connections"))
        super().__init__(max_connections=max_connections, **_common_kwargs(self._config, client_options))

    def make_connection(self) -> Any:
        if self._created_connections >= self.max_connections:
            raise _MAX_CONNECTIONS_ERROR("Too many connections")
        conn = self._new_connection()
        self._created_connections += 1
        return conn

    def on_switch(self, generation: int) -> None:
        """The engine switched: drop idle sockets of older generations, wake parked blocking commands."""
        if self.pid != os.getpid():
            return  # a forked child: these are the parent's sockets (redis-py resets the pool on first use here)
        with self._lock:
            stale = [c for c in self._available_connections if generation_of(c) != generation]
            if not stale and not self._in_use_connections:
                return
            self._available_connections = [c for c in self._available_connections if generation_of(c) == generation]
            self._created_connections -= len(stale)
            lent = list(self._in_use_connections)
        for conn in stale:
            conn.disconnect()
        self._wake_stale(lent, generation)

    def _lent(self) -> list[Any]:
        return list(self._in_use_connections)


class FailoverBlockingConnectionPool(FailoverPoolMixin, redis.BlockingConnectionPool):
    """``redis.BlockingConnectionPool`` variant: waits up to ``timeout`` for a free connection."""

    def __init__(
        self,
        engine: FailoverEngine,
        max_connections: int = 50,
        timeout: float = 20,
        *,
        config: FailoverConfig | None = None,
        **client_options: Any,
    ) -> None:
        self._init_failover(engine, dict(client_options), config)
        super().__init__(max_connections=max_connections, timeout=timeout, **_common_kwargs(self._config, client_options))

    def make_connection(self) -> Any:
        try:
            conn = self._new_connection()
        except BaseException:
            self.pool.put_nowait(None)  # give back the slot get_connection() took
            raise
        self._connections.append(conn)
        return conn

    def on_switch(self, generation: int) -> None:
        """The engine switched: drop idle sockets of older generations, wake parked blocking commands."""
        if self.pid != os.getpid():
            return  # a forked child: these are the parent's sockets (redis-py resets the pool on first use here)
        stale: list[Any] = []
        fresh: list[Any] = []
        slots = 0
        while True:
            try:
                item = self.pool.get_nowait()
            except Empty:
                break
            if item is None:
                slots += 1
            elif generation_of(item) != generation:
                stale.append(item)
            else:
                fresh.append(item)
        for item in [None] * (slots + len(stale)) + fresh:  # LIFO: fresh connections first
            try:
                self.pool.put_nowait(item)
            except Full:  # pragma: no cover - cannot exceed what we took out
                break
        stale_ids = {id(c) for c in stale}
        self._connections = [c for c in self._connections if id(c) not in stale_ids]
        for conn in stale:
            conn.disconnect()
        self._wake_stale(list(self._connections), generation)

    def _lent(self) -> list[Any]:
        return list(self._connections)


def failover_pool(
    engine: FailoverEngine,
    *,
    blocking_pool: bool = False,
    max_connections: int | None = None,
    pool_timeout: float = 20.0,
    config: FailoverConfig | None = None,
    **client_options: Any,
) -> FailoverPoolMixin:
    """The pool for a client's pool settings (``FailoverRedis``'s keyword
    arguments, which adapters expose as settings): blocking or not, its size.
    ``config``: the client's own configuration, whose connection options its
    connections use (by default the engine's)."""
    if blocking_pool:
        return FailoverBlockingConnectionPool(engine, max_connections=max_connections or 50, timeout=pool_timeout, config=config, **client_options)
    return FailoverConnectionPool(engine, max_connections=max_connections, config=config, **client_options)


__all__ = ["FailoverBlockingConnectionPool", "FailoverConnectionPool", "FailoverPoolMixin", "failover_pool", "wake"]
