"""One endpoint's redis-py connections: their parameters and their class.

Everything that opens a socket to an endpoint (the failover pools, the health
probes, the control plane, the Celery transport's pinned channels, the
replication-lag check) builds its parameters here, so an endpoint means the
same URL, TLS files, credentials and timeouts everywhere, and nothing
re-parses endpoint settings.

:class:`ManagedConnection` plays the part of redis-py's
``SentinelManagedConnection``: a connection that knows which engine
generation it was made for, so a failure to connect is never blamed on an
endpoint the engine switched to meanwhile, and is known not to have sent
anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import NoBackoff
from redis.connection import AbstractConnection
from redis.retry import Retry

from .errors import ReplyLostError
from .stamps import ENDPOINT, GENERATION, mark_unsent, stamp_generation, was_woken

if TYPE_CHECKING:
    from .config import EndpointConfig, FailoverConfig
    from .engine import FailoverEngine

try:  # redis-py >= 7: opt out of maintenance notifications, an extra round trip
    from redis.maint_notifications import MaintNotificationsConfig

    def quiet_connection_defaults() -> dict[str, Any]:
        """Connection kwargs geofailover sets unless the user did: no
        maintenance-notification handshake (Redis Cloud's MOVING notices would
        fight with our own routing) and TCP keepalive."""
        return {"maint_notifications_config": MaintNotificationsConfig(enabled=False), "socket_keepalive": True}

except ImportError:  # pragma: no cover - older redis-py

    def quiet_connection_defaults() -> dict[str, Any]:
        return {"socket_keepalive": True}


def no_retries() -> Retry:
    """Retrying is the engine's job: redis-py's nested retries turn one
    blackholed region into minutes of blocking."""
    return Retry(NoBackoff(), 0)


def endpoint_params(
    config: FailoverConfig, endpoint: EndpointConfig | str, client_options: Mapping[str, Any] | None = None
) -> tuple[type[AbstractConnection], dict[str, Any]]:
    """The connection class and kwargs for one endpoint of ``config``.

    Precedence, lowest first: geofailover's quiet defaults, the engine's
    global options, ``client_options`` (one client's own connection options),
    the endpoint's URL, the endpoint's own options. Never redis-py retries.
    """
    ep = config.endpoint(endpoint) if isinstance(endpoint, str) else endpoint
    base = {**quiet_connection_defaults(), **config.base_connection_options(), **(client_options or {})}
    conn_class, kwargs = ep.connection_params(base)
    kwargs["retry"] = no_retries()
    return conn_class, kwargs


def probe_params(config: FailoverConfig, endpoint: EndpointConfig | str) -> tuple[type[AbstractConnection], dict[str, Any]]:
    """Like :func:`endpoint_params`, for the monitor's own sockets: bounded by the
    probe timeout, bytes replies, and no redis-py health-check PINGs of their own."""
    conn_class, kwargs = endpoint_params(config, endpoint)
    kwargs.update(
        socket_timeout=config.health_check_timeout,
        socket_connect_timeout=config.health_check_timeout,
        decode_responses=False,
    )
    kwargs.pop("health_check_interval", None)
    return conn_class, kwargs


def direct_client(conn_class: type[AbstractConnection], kwargs: Mapping[str, Any], max_connections: int) -> redis.Redis:
    """A small ``redis.Redis`` whose sockets always go to one endpoint (side
    operations: probes, control records, draining, fallback reads)."""
    params = dict(kwargs)
    params.pop("max_connections", None)
    pool = redis.ConnectionPool(connection_class=conn_class, max_connections=max_connections, **params)
    return redis.Redis(connection_pool=pool)


class ManagedConnection:
    """Mixin for a redis-py connection class: a socket made for one engine
    generation and one endpoint.

    A failure to connect (in ``connect()``, or in the reconnect redis-py does
    inside ``send_packed_command``) is stamped with the socket's generation,
    so the engine never blames it on an endpoint it switched to meanwhile,
    and marked as never sent, so the retry policy may re-send even a write.
    """

    _geofailover_gen: int = -1
    _geofailover_endpoint: str | None = None
    # Monotonic time the pool lent this connection out (0.0: idle). The
    # engine's stall watch reads it to notice a command stuck on a frozen region.
    _geofailover_since: float = 0.0
    _sock: Any

    def connect(self) -> None:
        if self._sock is not None:  # the pool calls this at every checkout: keep it one attribute read
            return
        try:
            super().connect()  # type: ignore[misc]
        except BaseException as exc:
            stamp_generation(exc, self._geofailover_gen)
            mark_unsent(exc)
            raise

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except redis.exceptions.ConnectionError as exc:
            if not was_woken(self):
                raise
            # A switch shut this socket because its endpoint failed while the
            # reply was outstanding: say so, rather than "closed by server".
            lost = ReplyLostError(f"no reply from {self._geofailover_endpoint} before it was failed over")
            stamp_generation(lost, self._geofailover_gen)
            raise lost from exc

    def connect_check_health(self, *args: Any, **kwargs: Any) -> Any:
        if self._sock is not None:
            return None
        try:
            return super().connect_check_health(*args, **kwargs)  # type: ignore[misc]
        except BaseException as exc:
            stamp_generation(exc, self._geofailover_gen)
            mark_unsent(exc)
            raise


class PinnedConnection(ManagedConnection):
    """A managed connection to one named endpoint, in a pool that a host
    library owns (a kombu channel's) rather than a failover pool.

    No :class:`~geofailover_core.client.FailoverRedis` sees its errors, so it
    reports them itself, by the failover pools' rule: a socket counts against
    its endpoint only if that endpoint was active when it connected, and only
    until the engine switches. The engine and the endpoint come as connection
    kwargs (``geofailover_engine``, ``geofailover_endpoint``), the way a
    redis-py pool configures the sockets it makes.
    """

    def __init__(self, *args: Any, geofailover_engine: FailoverEngine, geofailover_endpoint: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.geofailover_engine = geofailover_engine
        self._geofailover_endpoint = geofailover_endpoint

    def reporting(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``call(*args, **kwargs)``, its error reported to the engine (a no-op once it switched)."""
        try:
            return call(*args, **kwargs)
        except Exception as exc:
            self.geofailover_engine.report_failure(self._geofailover_gen, exc)
            raise

    def connect_check_health(self, *args: Any, **kwargs: Any) -> Any:
        active, generation = self.geofailover_engine.routing
        self._geofailover_gen = generation if active is not None and active.name == self._geofailover_endpoint else -1
        return self.reporting(super().connect_check_health, *args, **kwargs)

    def send_packed_command(self, *args: Any, **kwargs: Any) -> Any:
        return self.reporting(super().send_packed_command, *args, **kwargs)  # type: ignore[misc]

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        return self.reporting(super().read_response, *args, **kwargs)  # type: ignore[misc]


_managed: dict[tuple[type[ManagedConnection], type[AbstractConnection]], type[AbstractConnection]] = {}


def managed_class(base: type[AbstractConnection], mixin: type[ManagedConnection] = ManagedConnection) -> type[AbstractConnection]:
    """``base`` with ``mixin`` mixed in (one class per pair): :class:`ManagedConnection`,
    :class:`PinnedConnection`, or an adapter's subclass of them that adds what
    its host library needs of a socket."""
    if issubclass(base, mixin):
        return base
    cls = _managed.get((mixin, base))
    if cls is None:
        prefix = "Managed" if mixin is ManagedConnection else mixin.__name__.removesuffix("Connection")
        cls = _managed.setdefault((mixin, base), type(f"{prefix}{base.__name__}", (mixin, base), {"__module__": mixin.__module__}))
    return cls


def stamp(connection: Any, generation: int, endpoint: str) -> None:
    """Record on ``connection`` the generation and endpoint it was made for."""
    setattr(connection, GENERATION, generation)
    setattr(connection, ENDPOINT, endpoint)


__all__ = [
    "ManagedConnection",
    "PinnedConnection",
    "direct_client",
    "endpoint_params",
    "managed_class",
    "no_retries",
    "probe_params",
    "quiet_connection_defaults",
    "stamp",
]
