"""Messages in flight when a channel's endpoint fails or the channel moves, and messages that cannot be delivered."""

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

if TYPE_CHECKING:
    from .channel import GeoChannel
    from .reliable_pop import ReliableChannel

logger = logging.getLogger("geofailover.celery")

#: Messages that cannot be delivered (not decodable, or no queue to route them to) are
#: moved out of the unacked records into this hash, on the endpoint where they were found.
DEAD_LETTER = "_geofailover.dead_letter"


class GeoQoS(kombu_redis.QoS):  # type: ignore[misc]
    """kombu's redis QoS: a message the pop script took is already recorded on the
    server; a planned move leaves running ``acks_late`` tasks to ack on their own endpoint."""

    channel: GeoChannel

    def append(self, message: Any, delivery_tag: str) -> None:
        recorded = self.channel.recorded
        if delivery_tag in recorded:
            recorded.discard(delivery_tag)
            return virtual_base.QoS.append(self, message, delivery_tag)  # type: ignore[no-any-return]
        return super().append(message, delivery_tag)  # type: ignore[no-any-return]

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


def lookup_on(channel: GeoChannel, client: redis.Redis, exchange: str, routing_key: str) -> list[str]:
    """kombu's ``_lookup`` on ``client``'s endpoint (where a message was taken), or on this process's bindings."""
    if not exchange:
        return [routing_key] if routing_key else []
    members = client.smembers(channel.global_keyprefix + channel.keyprefix_queue % exchange)
    table = [tuple(bytes_to_str(v).split(channel.sep)) for v in members] or channel.state.exchanges.get(exchange, {}).get("table") or []
    return sorted(channel.typeof(exchange).lookup(table, exchange, routing_key, None) or [])


def quarantine(channel: ReliableChannel, client: redis.Redis, entries: dict[str, bytes], reason: str, where: str) -> None:
    """Move undeliverable entries out of the unacked records of ``client``'s endpoint into
    :data:`DEAD_LETTER` there (tag -> the message as found), with one warning that counts them."""
    prefix = channel.global_keyprefix
    with client.pipeline() as pipe:
        pipe.hset(prefix + DEAD_LETTER, mapping=entries)  # type: ignore[arg-type]
        pipe.zrem(prefix + channel.unacked_index_key, *entries)
        pipe.hdel(prefix + channel.unacked_key, *entries)
        pipe.execute()
    logger.warning("geofailover[%s]: %d message(s) on %s %s; moved to the hash %r there (delivery tag -> message)",
                   channel.geo.engine.name, len(entries), where, reason, prefix + DEAD_LETTER)
