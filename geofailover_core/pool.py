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

import socket
from queue import Empty, Full
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.connection import AbstractConnection
from redis.retry import Retry

from .endpoint import EndpointState
from .engine import FailoverEngine

try:  # redis-py >= 7: opt out of maintenance notifications, an extra round trip
    from redis.maint_notifications import MaintNotificationsConfig

    def quiet_connection_defaults() -> dict[str, Any]:
        """Connection kwargs geofailover sets unless the user did: no
        maintenance-notification handshake (Redis Cloud's MOVING notices would
        fight with our own routing) and no redis-py retries."""
        return {"maint_notifications_config": MaintNotificationsConfig(enabled=False), "socket_keepalive": True}

except ImportError:  # pragma: no cover - older redis-py

    def quiet_connection_defaults() -> dict[str, Any]:
        return {"socket_keepalive": True}
from .errors import NoHealthyEndpointError

# redis-py >= 6 has a dedicated class; earlier versions raised ConnectionError.
_MAX_CONNECTIONS_ERROR: type[Exception] = getattr(redis.exceptions, "MaxConnectionsError", redis.exceptions.ConnectionError)
_GEN = "_geofailover_gen"
_ENDPOINT = "_geofailover_endpoint"
BLOCKING_FLAG = "_geofailover_blocking"
WOKEN_FLAG = "_geofailover_woken"


def _mark_unsent(exc: BaseException) -> None:
    try:
        exc._geofailover_unsent = True  # type: ignore[attr-defined]
    except AttributeError:  # pragma: no cover - exceptions with __slots__
        pass


def _shutdown(conn: AbstractConnection) -> None:
    setattr(conn, WOKEN_FLAG, True)
    sock = getattr(conn, "_sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class FailoverPoolMixin:
    """Shared behaviour of the plain and the blocking failover pools."""

    _engine: FailoverEngine
    _client_options: dict[str, Any]
    _endpoint_params: dict[str, tuple[type[AbstractConnection], dict[str, Any]]]

    def _init_failover(self, engine: FailoverEngine, client_options: dict[str, Any]) -> None:
        self._engine = engine
        self._client_options = client_options
        self._endpoint_params = {}
        # Bound once: the command path calls it for every command.
        self._base_get_connection: Any = super().get_connection  # type: ignore[misc]
        engine.register_pool(self)

    @property
    def engine(self) -> FailoverEngine:
        return self._engine

    def _params_for(self, ep: EndpointState) -> tuple[type[AbstractConnection], dict[str, Any]]:
        params = self._endpoint_params.get(ep.name)
        if params is None:
            base = {**self._engine.config.base_connection_options(), **self._client_options}
            conn_class, kwargs = ep.config.connection_params({**quiet_connection_defaults(), **base})
            # Retrying is the engine's job: redis-py's nested retries turn one
            # blackholed region into minutes of blocking.
            kwargs["retry"] = Retry(NoBackoff(), 0)
            params = self._endpoint_params[ep.name] = (conn_class, kwargs)
        return params

    def _new_connection(self) -> AbstractConnection:
        ep, generation = self._engine.route()
        conn_class, kwargs = self._params_for(ep)
        conn = conn_class(**kwargs)
        setattr(conn, _GEN, generation)
        setattr(conn, _ENDPOINT, ep.name)
        base_connect = conn.connect

        def connect() -> None:
            # redis-py (re)connects inside get_connection() and send_command();
            # stamp failures with this socket's generation for the breaker.
            try:
                base_connect()
            except BaseException as exc:
                exc._geofailover_gen = generation  # type: ignore[attr-defined]
                raise

        conn.connect = connect  # type: ignore[method-assign]
        return conn

    def owns_connection(self, connection: Any) -> bool:
        # Every connection in this pool was made by _new_connection, so the stamp exists.
        return bool(connection.pid == self.pid and connection._geofailover_gen == self._engine._generation)  # type: ignore[attr-defined]

    def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        try:
            conn = self._base_get_connection()
        except BaseException as exc:
            _mark_unsent(exc)  # nothing was sent: always safe to retry elsewhere
            raise
        if conn._geofailover_gen == self._engine._generation:
            return conn
        return self._replace_stale(conn)

    def _replace_stale(self, conn: Any) -> Any:
        """A connection made just before a switch: discard it and take a fresh one."""
        engine = self._engine
        for _ in range(3):
            self.release(conn)  # type: ignore[attr-defined]  # stale: discarded, not pooled
            try:
                conn = super().get_connection()  # type: ignore[misc]
            except BaseException as exc:
                _mark_unsent(exc)
                raise
            if getattr(conn, _GEN, None) == engine._generation:
                return conn
        self.release(conn)  # type: ignore[attr-defined]
        raise NoHealthyEndpointError(f"geofailover[{engine.name}]: endpoint kept changing while connecting")

    def active_endpoint_of(self, connection: Any) -> str | None:
        """Endpoint name a connection of this pool talks to."""
        return getattr(connection, _ENDPOINT, None)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self._engine.name!r} active={self._engine.active!r}>"


class FailoverConnectionPool(FailoverPoolMixin, redis.ConnectionPool):
    """``redis.ConnectionPool`` whose connections go to the engine's active endpoint."""

    def __init__(self, engine: FailoverEngine, max_connections: int | None = None, **client_options: Any) -> None:
        self._init_failover(engine, dict(client_options))
        if max_connections is None:  # a pool size given in the settings dict
            max_connections = client_options.get("max_connections", engine.config.client_options.get("max_connections"))
        super().__init__(max_connections=max_connections, **self._common_kwargs(engine, client_options))

    @staticmethod
    def _common_kwargs(engine: FailoverEngine, client_options: dict[str, Any]) -> dict[str, Any]:
        # What redis.Redis and host libraries read off ``connection_kwargs``
        # (encoding, protocol...). Endpoint addresses and secrets stay out of it.
        merged = {**quiet_connection_defaults(), **engine.config.base_connection_options(), **client_options}
        for key in ("password", "username", "credential_provider", "ssl_password", "host", "port", "path", "ssl", "max_connections"):
            merged.pop(key, None)
        return merged

    def make_connection(self) -> Any:
        if self._created_connections >= self.max_connections:
            raise _MAX_CONNECTIONS_ERROR("Too many connections")
        conn = self._new_connection()
        self._created_connections += 1
        return conn

    def _geofailover_switched(self, generation: int) -> None:
        with self._lock:
            stale = [c for c in self._available_connections if getattr(c, _GEN, None) != generation]
            if not stale and not self._in_use_connections:
                return
            self._available_connections = [c for c in self._available_connections if getattr(c, _GEN, None) == generation]
            self._created_connections -= len(stale)
            parked = [c for c in self._in_use_connections if getattr(c, BLOCKING_FLAG, False) and getattr(c, _GEN, None) != generation]
        for conn in stale:
            conn.disconnect()
        for conn in parked:
            _shutdown(conn)


class FailoverBlockingConnectionPool(FailoverPoolMixin, redis.BlockingConnectionPool):
    """``redis.BlockingConnectionPool`` variant: waits up to ``timeout`` for a free connection."""

    def __init__(self, engine: FailoverEngine, max_connections: int = 50, timeout: float = 20, **client_options: Any) -> None:
        self._init_failover(engine, dict(client_options))
        super().__init__(
            max_connections=max_connections, timeout=timeout,
            **FailoverConnectionPool._common_kwargs(engine, client_options),
        )

    def make_connection(self) -> Any:
        try:
            conn = self._new_connection()
        except BaseException:
            self.pool.put_nowait(None)  # give back the slot get_connection() took
            raise
        self._connections.append(conn)
        return conn

    def _geofailover_switched(self, generation: int) -> None:
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
            elif getattr(item, _GEN, None) != generation:
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
        for conn in list(self._connections):
            if getattr(conn, BLOCKING_FLAG, False) and getattr(conn, _GEN, None) != generation:
                _shutdown(conn)
