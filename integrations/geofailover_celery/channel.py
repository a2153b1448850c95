"""A kombu redis channel pinned to the endpoint that was active when it was made.

kombu keeps per-endpoint state next to a queue (binding tables, the
``unacked`` hash), so a channel re-pointed mid-life would ack on the wrong
server, or publish through bindings missing there (kombu then drops the
message without a word). A switch moves producers and reconnects consumers.
"""

# mypy: disallow-untyped-calls=False

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kombu.transport import redis as kombu_redis

from geofailover_core.connection import PinnedConnection, endpoint_params, managed_class
from geofailover_core.errors import GeoFailoverError

from .qos import GeoQoS
from .reliable_pop import ReliablePop

if TYPE_CHECKING:
    from .settings import Resolved
    from .transport import Transport

logger = logging.getLogger("geofailover.celery")

# kombu's transport options that are connection options; they apply when set.
_KOMBU_CONNECTION_OPTIONS = ("socket_timeout", "socket_connect_timeout", "socket_keepalive", "socket_keepalive_options",
                             "health_check_interval", "retry_on_timeout", "client_name")


class EndpointSwitched(GeoFailoverError):
    """The endpoint this channel is pinned to is no longer the active one. One of the
    transport's ``connection_errors``, so that ``ensure()`` and Celery's consumer reconnect;
    not a ``redis.ConnectionError``, which redis-py's own retries would swallow."""


class ChannelConnection(PinnedConnection):
    """A channel's socket; its errors feed the engine (see :class:`PinnedConnection`).
    ``on_disconnect`` marks the one a consumer waits on: kombu's hook takes it off the
    poller, and it learns its id, so that a wait can be released (``CLIENT UNBLOCK``)."""

    client_id: int | None = None

    def __init__(self, *args: Any, on_disconnect: Callable[[Any], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_disconnect = on_disconnect

    def on_connect_check_health(self, *args: Any, **kwargs: Any) -> Any:
        result = super().on_connect_check_health(*args, **kwargs)  # type: ignore[misc]
        if self.on_disconnect is not None:
            self.send_command("CLIENT", "ID", check_health=False)  # type: ignore[attr-defined]
            self.client_id = int(self.read_response())
        return result

    def disconnect(self, *args: Any, **kwargs: Any) -> None:
        super().disconnect(*args, **kwargs)  # type: ignore[misc]
        if self.on_disconnect is not None:
            self.on_disconnect(self)


class GeoChannel(kombu_redis.Channel):  # type: ignore[misc]
    """A redis channel pinned to the endpoint that was active when it was made."""

    QoS = GeoQoS

    connection_errors: tuple[type[BaseException], ...]
    _in_poll: Any  # kombu: False, None or the connection a wait is pending on

    def __init__(self, connection: Transport, **kwargs: Any) -> None:
        self.geo: Resolved = connection.geo
        self.endpoint = self._pin()
        self.reliable = ReliablePop(self, bool(self.geo.options["reliable_pop"]))
        super().__init__(connection, **kwargs)
        if not connection.announced:
            connection.announced = True
            logger.info("geofailover[%s]: broker connection uses endpoint %s", self.geo.engine.name, self.endpoint)

    def _pin(self) -> str:
        """The active endpoint, once a PING got through: the engine may not know yet that it just died."""
        engine = self.geo.engine
        return engine.route_checked(lambda ep: ep.direct_client(engine.config).ping()).name

    def stale(self) -> bool:
        return self.geo.engine.active != self.endpoint

    def switch_message(self) -> str:
        engine = self.geo.engine
        event = engine.status()["last_event"]
        why = f"; {event['kind']}, reason {event['reason']}" if event else ""
        why += f": {event['detail']}" if event and event.get("detail") else ""
        active = engine.active
        where = f"now {active}" if active else "no endpoint is healthy"
        return f"geofailover[{engine.name}]: broker endpoint {self.endpoint} is no longer active ({where}{why}); reconnecting"

    def _check(self) -> None:
        if not self.closed and self.stale():
            raise EndpointSwitched(self.switch_message())

    def _get_pool(self, asynchronous: bool = False) -> Any:
        # kombu formats the fanout prefix with the db in place, once; a
        # channel that moves to an endpoint with another db needs it again.
        self.keyprefix_fanout = self.__dict__.setdefault("_geo_fanout_template", self.keyprefix_fanout)
        return super()._get_pool(asynchronous)

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        """The pinned endpoint's parameters (kombu's seam), with kombu's connection options when
        set. From the channel alone, so acks on a closed channel still reach its endpoint."""
        engine = self.geo.engine
        overrides = {key: getattr(self, key) for key in _KOMBU_CONNECTION_OPTIONS if getattr(self, key, None) is not None}
        conn_class, params = endpoint_params(engine.config, self.endpoint, overrides)
        params.pop("decode_responses", None)  # kombu expects bytes
        params.setdefault("db", 0)
        params.update(
            max_connections=self.max_connections, connection_class=managed_class(conn_class, ChannelConnection),
            geofailover_engine=engine, geofailover_endpoint=self.endpoint,
            on_disconnect=self._on_wait_disconnect if asynchronous else None,
        )
        return params

    def _on_wait_disconnect(self, connection: Any) -> None:
        if self._registered:  # only a connection the poller knows can be taken off it
            self._on_connection_disconnect(connection)

    def basic_publish(self, message: Any, exchange: str, routing_key: str, **kwargs: Any) -> Any:
        if not self.closed and self.stale() and not self._repin():
            raise EndpointSwitched(self.switch_message())
        return super().basic_publish(message, exchange, routing_key, **kwargs)

    def _repin(self) -> bool:
        """Move a channel that only publishes to the active endpoint, declaring there first the
        bindings kombu keeps in memory, so even a publish without retries is routed, not dropped.
        False if it consumes: its acks belong to its endpoint; the consumer reconnects instead."""
        if self._consumers or self.active_fanout_queues or self._in_poll or self._in_listen:
            return False
        if self._qos is not None and self._qos._delivered:
            return False
        old, self.endpoint = self.endpoint, self._pin()  # raises (a connection error) when no endpoint is healthy
        self._disconnect_pools()
        self._close_clients()
        for attr in ("client", "subclient", "_refresh_binding", "_sweep_bindings"):
            self.__dict__.pop(attr, None)
        bindings = [
            (exchange, binding) for exchange, meta in self.state.exchanges.items() for binding in meta.get("table") or []
        ]
        for exchange, binding in bindings:
            self._queue_bind(exchange, *binding)
        logger.info("geofailover[%s]: producer channel moved from %s to %s (%d binding(s) declared there)",
                    self.geo.engine.name, old, self.endpoint, len(bindings))
        return True

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        self._check()
        self.reliable.acks[queue] = not no_ack
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        self._check()
        self.reliable.recording_get = not no_ack
        try:
            return super().basic_get(queue, no_ack, **kwargs)
        finally:
            self.reliable.recording_get = False

    def _brpop_start(self, timeout: float | None = None) -> None:
        if not self.reliable.enabled:
            return super()._brpop_start(timeout)  # type: ignore[no-any-return]
        self.reliable.start_wait(timeout)
        return None

    def _brpop_read(self, **options: Any) -> bool:
        if not self.reliable.enabled:
            return super()._brpop_read(**options)  # type: ignore[no-any-return]
        return self.reliable.read_wait(**options)

    def _poll_error(self, type: str, **options: Any) -> Any:
        if type == "BRPOP" and self.reliable.enabled:
            return self.client.parse_response(self.client.connection, "BLMOVE")
        return super()._poll_error(type, **options)

    def _get(self, queue: str, timeout: Any = None) -> Any:
        if not (self.reliable.enabled and self.reliable.recording_get):
            return super()._get(queue)
        return self.reliable.get(queue)

    def close(self) -> None:
        if not self.closed and self.reliable.enabled:
            self._drop_wait()  # it carries no message (the pop script takes them): no need to read its reply
        if not self.closed and self.stale():
            if not self.geo.engine.endpoint(self.endpoint).answering():
                self._abandon()
            elif self._in_poll:
                self._unblock()
        super().close()

    def _abandon(self) -> None:
        """Close without talking to an endpoint that failed: kombu's ``close()`` would read a
        pending wait, restore unacked messages and delete auto-delete queues there, each a socket
        timeout against a hung region. The unacked stay there, redelivered once it is back."""
        pending = len(self._qos._delivered) if self._qos is not None else 0
        logger.log(
            logging.INFO if pending else logging.DEBUG,
            "geofailover[%s]: closing the channel on failed endpoint %s without waiting on it; "
            "its %d unacknowledged message(s) are redelivered after visibility_timeout once it is back",
            self.geo.engine.name, self.endpoint, pending,
        )
        self._drop_wait()
        self.do_restore = False
        self.auto_delete_queues = set()

    def _drop_wait(self) -> None:
        connection, self._in_poll = self._in_poll, None
        if connection:
            connection.disconnect()

    def _unblock(self) -> None:
        """Make a pending BRPOP on an old endpoint that still answers reply now: kombu's
        ``close()`` reads that reply, which would delay the reconnect by up to its timeout."""
        client_id = getattr(self._in_poll, "client_id", None)
        if client_id is None:
            return
        engine = self.geo.engine
        try:
            engine.endpoint(self.endpoint).direct_client(engine.config).client_unblock(client_id)
        except Exception as exc:  # noqa: BLE001 - the old endpoint may be down: then the read fails fast anyway
            logger.debug("geofailover: CLIENT UNBLOCK on %s failed: %r", self.endpoint, exc)
