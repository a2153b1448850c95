"""A kombu transport that follows the geofailover engine: ``geofailover://``.

kombu's redis transport (``driver_type`` stays ``"redis"``: Celery branches
on it) with pinned channels (:mod:`.channel`). A check in the consumer's
event loop raises :class:`EndpointSwitched` once the engine moved, so Celery
reconnects onto the new endpoint at once, not after its growing backoff.
"""

# mypy: disallow-untyped-calls=False

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

from kombu.transport import redis as kombu_redis

from geofailover_core.connection import endpoint_params
from geofailover_core.engine import FailoverEngine
from geofailover_core.masking import mask_text

from . import signals
from .channel import EndpointSwitched, GeoChannel
from .draining import drain
from .settings import resolve

logger = logging.getLogger("geofailover.celery")


def _ticker(transport: Transport) -> Callable[[], None]:
    """``transport.tick`` for as long as the transport lives (timers must not keep it alive)."""
    ref = weakref.WeakMethod(transport.tick)
    return lambda: None if (tick := ref()) is None else tick()


class GeoPoller(kombu_redis.MultiChannelPoller):  # type: ignore[misc]
    """kombu's poller; without an event loop (``drain_events``) it also runs the switch check and draining."""

    def __init__(self, transport: Transport) -> None:
        super().__init__()
        self._geo_tick = _ticker(transport)

    def get(self, callback: Callable[..., Any], timeout: float | None = None) -> Any:
        self._geo_tick()
        return super().get(callback, timeout)


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    """``geofailover://`` broker transport (see the module docstring)."""

    Channel = GeoChannel
    can_parse_url = True
    connection_errors = (*kombu_redis.Transport.connection_errors, EndpointSwitched)
    channel_errors = kombu_redis.Transport.channel_errors

    def __init__(self, client: Any, **kwargs: Any) -> None:
        self.geo = resolve(client.alt or client.hostname, client.transport_options.get("geofailover"), "broker")
        # kombu would take a ';' URL for its own failover list and switch URLs on errors: the engine decides.
        # The whole URL stays in Connection.alt (clones and pickles rebuild from it); hostname: see show().
        client.cycle, client.alt, client.uri_prefix = None, list(client.alt or [client.hostname]), None
        super().__init__(client, **kwargs)
        self.show(self.geo.engine.active)
        self.cycle = GeoPoller(self)  # type: ignore[assignment]
        self.announced = False  # the first channel logs its endpoint
        self._geo_timer: Any = None
        self._geo_next_drain = 0.0
        self._geo_drain_generation = -1
        self._geo_closed = False
        signals.bridge(self.geo.engine)

    @property
    def engine(self) -> FailoverEngine:
        """The failover engine this transport follows."""
        return self.geo.engine

    def show(self, endpoint: str | None) -> None:
        """kombu's ``Connection.hostname``, ``port`` and ``virtual_host`` (so ``info()`` and ``host``):
        the endpoint in use, without credentials."""
        if endpoint is not None and self.client is not None:
            _, params = endpoint_params(self.geo.engine.config, endpoint)
            self.client.hostname, self.client.port = params.get("host") or params.get("path"), params.get("port")
            self.client.virtual_host = str(params.get("db", 0))

    def as_uri(self, uri: str, include_password: bool = False, mask: str = "**") -> str:
        """Every endpoint with its name and weight, passwords masked (banner, log lines)."""
        return self.geo.as_uri(include_password=include_password)

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        super().register_with_event_loop(connection, loop)
        self._geo_timer = loop.call_repeatedly(self.geo.options["switch_check_interval"], _ticker(self))

    def close_connection(self, connection: Any) -> None:
        self._geo_closed = True
        if self._geo_timer is not None:
            self._geo_timer.cancel()
            self._geo_timer = None
        super().close_connection(connection)

    def tick(self) -> None:
        """Raise :class:`EndpointSwitched` when a channel's endpoint is no longer active; drain when due."""
        if self._geo_closed:
            return
        channels: list[GeoChannel] = [c for c in list(self.channels) if not c.closed]
        for channel in channels:
            if channel.stale():
                message = channel.switch_message()
                logger.warning("%s (consumer)", message)
                raise EndpointSwitched(message)
        self._maybe_drain(channels)

    def _maybe_drain(self, channels: list[GeoChannel]) -> None:
        """A drain round every ``drain_interval``, and at once after a switch."""
        options = self.geo.options
        if not options["drain"]:
            return
        now = time.monotonic()
        generation = self.geo.engine.generation
        if now < self._geo_next_drain and generation == self._geo_drain_generation:
            return
        self._geo_next_drain = now + options["drain_interval"]
        self._geo_drain_generation = generation
        consumers = [c for c in channels if c.active_queues]
        if not consumers:
            return
        try:
            drain(consumers[0], sorted({q for c in consumers for q in c.active_queues}))
        except Exception as exc:  # noqa: BLE001 - a failed round is retried next interval; the consumer goes on
            logger.warning("geofailover[%s]: draining failed, retrying in %gs: %s",
                           self.geo.engine.name, options["drain_interval"], mask_text(f"{type(exc).__name__}: {exc}"))
