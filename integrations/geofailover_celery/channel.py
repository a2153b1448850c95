"""A kombu redis channel pinned to the endpoint that was active when it was made.

kombu keeps per-endpoint state next to a queue (binding tables, the
``unacked`` hash), so a channel re-pointed mid-life would ack on the wrong
server, or publish through bindings missing there (kombu then drops the
message without a word). A switch moves producers and reconnects consumers.
"""

# mypy: disallow-untyped-calls=False

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import redis

from geofailover_core.commands import refuses_service
from geofailover_core.connection import PinnedConnection, endpoint_params, managed_class
from geofailover_core.errors import GeoFailoverError

from .qos import GeoQoS
from .reliable_pop import BELL, ReliableChannel

if TYPE_CHECKING:
    from .settings import Resolved
    from .transport import Transport

logger = logging.getLogger("geofailover.celery")

# kombu's transport options that are connection options; they apply when set.
_KOMBU_CONNECTION_OPTIONS = ("socket_timeout", "socket_connect_timeout", "socket_keepalive", "socket_keepalive_options",
                             "health_check_interval", "retry_on_timeout", "client_name")


class EndpointSwitched(GeoFailoverError):
    """The endpoint this channel is pinned to is no longer the active one (or refuses to serve
    its consumer: a role change, loading, out of memory). One of the
    transport's ``connection_errors``, so that ``ensure()`` and Celery's consumer reconnect;
    not a ``redis.ConnectionError``, which redis-py's own retries would swallow."""


class ChannelConnection(PinnedConnection):
    """A channel's socket; its errors feed the engine (see :class:`PinnedConnection`).
    ``on_disconnect`` marks the one a consumer waits on: kombu's hook takes it off the poller."""

    def __init__(self, *args: Any, on_disconnect: Callable[[Any], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_disconnect = on_disconnect

    def disconnect(self, *args: Any, **kwargs: Any) -> None:
        super().disconnect(*args, **kwargs)  # type: ignore[misc]
        if self.on_disconnect is not None:
            self.on_disconnect(self)


class GeoChannel(ReliableChannel):
    """A redis channel pinned to the endpoint that was active when it was made."""

    QoS = GeoQoS

    def __init__(self, connection: Transport, **kwargs: Any) -> None:
        self.geo: Resolved = connection.geo
        self.endpoint = self._pin()
        connection.show(self.endpoint)
        self.reliable = bool(self.geo.options["reliable_pop"])
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

    @contextlib.contextmanager
    def _served(self, who: str) -> Iterator[None]:
        """An error reply that says the server cannot serve (``READONLY`` or ``UNBLOCKED`` after a
        role change, ``OOM``) becomes a connection error: the consumer reconnects instead of ending
        the worker, and a publish (refused, so not applied) is retried by kombu where the engine points."""
        try:
            yield
        except redis.ResponseError as exc:
            if not refuses_service(exc):
                raise
            raise EndpointSwitched(f"geofailover[{self.geo.engine.name}]: broker endpoint {self.endpoint} "
                                   f"cannot serve the {who} ({type(exc).__name__}: {exc}); reconnecting") from exc

    def _brpop_read(self, **options: Any) -> bool:
        with self._served("consumer"):
            return super()._brpop_read(**options)  # type: ignore[no-any-return]

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
        self.connection.show(self.endpoint)
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

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        """kombu's publish, then a ring of the queue's doorbell (:mod:`.reliable_pop`), in one round trip."""
        batch = kwargs.pop("_publish_batch", None)  # kombu's batched publish: the ring joins the batch
        with self.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            add = batch.add if batch is not None else lambda cmd, *args: getattr(pipe, cmd)(*args)
            super()._put(queue, message, _publish_batch=SimpleNamespace(add=add))
            if self.reliable:
                add("lpush", BELL + queue, 1)
            with self._served("producer"):
                pipe.execute()

    def _do_restore_message(self, payload: Any, exchange: str, routing_key: str, pipe: Any, leftmost: bool = False) -> None:
        super()._do_restore_message(payload, exchange, routing_key, pipe, leftmost)
        for queue in self._lookup(exchange, routing_key) if self.reliable else ():
            pipe.lpush(BELL + queue, 1)

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        self._check()
        return super().basic_get(queue, no_ack, **kwargs)

    def close(self) -> None:
        if not self.closed and self.reliable:
            self._drop_wait()  # a doorbell at most (the pop script takes messages): no need to read it
        if not self.closed and self.stale() and not self.geo.engine.endpoint(self.endpoint).answering():
            self._abandon()
        super().close()

    def _abandon(self) -> None:
        """Close without talking to an endpoint that failed: kombu's ``close()`` would read a
        pending wait, restore unacked messages and delete auto-delete queues there, each a socket
        timeout against a hung region. The unacked stay there, redelivered once it is back."""
        pending = len(self._qos._delivered) if self._qos is not None else 0
        logger.log(
            logging.INFO if pending else logging.DEBUG,
            "geofailover[%s]: closing the channel on failed endpoint %s without waiting on it; "
            "its %d unacknowledged message(s) are redelivered once it is back (visibility_timeout, restore_unacked_after)",
            self.geo.engine.name, self.endpoint, pending,
        )
        self._drop_wait()
        self.do_restore = False
        self.auto_delete_queues = set()

    def _drop_wait(self) -> None:
        connection, self._in_poll = self._in_poll, None
        if connection:
            connection.disconnect()
