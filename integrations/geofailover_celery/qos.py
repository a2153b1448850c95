"""Messages in flight when a channel's endpoint fails or the channel moves."""

# mypy: disallow-untyped-calls=False

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import base as virtual_base
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps

from geofailover_core.masking import mask_text

if TYPE_CHECKING:
    from .channel import GeoChannel

logger = logging.getLogger("geofailover.celery")


class GeoQoS(kombu_redis.QoS):  # type: ignore[misc]
    """kombu's redis QoS: a message the pop script took is already recorded on the
    server; one plain BRPOP took from an endpoint that died before its record
    was written is re-queued where the engine moved (:func:`rescue`); a planned
    move leaves running ``acks_late`` tasks to ack on their own endpoint."""

    channel: GeoChannel

    def append(self, message: Any, delivery_tag: str) -> None:
        recorded = self.channel.reliable.recorded
        if delivery_tag in recorded:
            recorded.discard(delivery_tag)
            virtual_base.QoS.append(self, message, delivery_tag)
            return
        try:
            super().append(message, delivery_tag)
        except self.channel.connection_errors as exc:
            rescue(self.channel, message, exc)
            raise

    def restore_unacked(self, client: Any = None) -> None:
        if keep := running_acks_late(self.channel, self._delivered):
            logger.info("geofailover[%s]: leaving %d running acks_late task(s) unacknowledged on %s; they ack there when done",
                        self.channel.geo.engine.name, len(keep), self.channel.endpoint)
            for tag in keep:
                self._delivered.pop(tag, None)
        super().restore_unacked(client)


def running_acks_late(channel: GeoChannel, delivered: Iterable[str]) -> set[str]:
    """Tags of running ``acks_late`` tasks to leave unacknowledged at a planned move (the endpoint
    still answers): they ack there when done, so they do not run twice. Unless Celery cancels them."""
    if not channel.stale() or not channel.geo.engine.endpoint(channel.endpoint).answering():
        return set()  # closing for another reason (failure, shutdown): restore all, as kombu does
    state = sys.modules.get("celery.worker.state")
    if state is None:
        return set()
    tags = set(delivered)
    keep: set[str] = set()
    for request in list(state.active_requests):
        message = getattr(request, "message", None)
        if message is None or getattr(message, "channel", None) is not channel or message.delivery_tag not in tags:
            continue
        if request.acknowledged or not request.task.acks_late:
            continue
        if request.app.conf.worker_cancel_long_running_tasks_on_connection_loss:
            return set()  # restored, so that they run again
        keep.add(message.delivery_tag)
    return keep


def rescue(channel: GeoChannel, message: Any, exc: BaseException) -> None:
    """Re-queue on the active endpoint a message whose unacked record could not be written."""
    engine = channel.geo.engine
    info = message.delivery_info or {}
    try:
        active, generation = engine.routing
        if active is not None and active.name == channel.endpoint:
            engine.confirm(generation)  # the failure is reported: let the engine move before choosing
        target, _ = engine.route()
        client = target.direct_client(engine.config)
        queues = _lookup_on(channel, client, info.get("exchange") or "", info.get("routing_key") or "")
        if not queues:
            raise LookupError(f"no queue bound to exchange {info.get('exchange')!r} on {target.name}")
        priority = channel._get_message_priority(message._raw, reverse=False)
        with client.pipeline() as pipe:
            for queue in queues:
                pipe.rpush(channel.global_keyprefix + channel._q_for_pri(queue, priority), dumps(message._raw))
            pipe.execute()
    except Exception as err:  # noqa: BLE001 - logged loudly, then the original error propagates
        logger.error(
            "geofailover[%s]: message %s was taken from %s, which failed before it could be recorded (%s), "
            "and could not be re-queued elsewhere (%s); it runs again only if its producer re-sends it",
            engine.name, message.delivery_tag, channel.endpoint, mask_text(str(exc)), mask_text(f"{type(err).__name__}: {err}"),
        )
        return
    logger.warning("geofailover[%s]: message %s was taken from %s, which failed before it could be recorded (%s); re-queued on %s",
                   engine.name, message.delivery_tag, channel.endpoint, mask_text(str(exc)), target.name)


def _lookup_on(channel: GeoChannel, client: redis.Redis, exchange: str, routing_key: str) -> list[str]:
    """kombu's ``_lookup`` on ``client``'s endpoint, or on this process's bindings if none are there yet."""
    if not exchange:
        return [routing_key] if routing_key else []
    members = client.smembers(channel.global_keyprefix + channel.keyprefix_queue % exchange)
    table = [tuple(bytes_to_str(value).split(channel.sep)) for value in members]
    if not table:
        table = list(channel.state.exchanges.get(exchange, {}).get("table") or [])
    return sorted(channel.typeof(exchange).lookup(table, exchange, routing_key, None) or [])
