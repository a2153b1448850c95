"""Draining: nothing is stranded on an endpoint that is not the active one.

A consuming worker moves into its (active) endpoint, from the other
endpoints that answer, the ready messages of its queues and the unacked ones
whose visibility timeout passed (no consumer is left there to restore them).
At least once: a message is recorded in the source's ``unacked`` hash
(atomically with its pop), pushed, then forgotten at the source; a crash in
between moves it again.
"""

# mypy: disallow-untyped-calls=False

from __future__ import annotations

import contextlib
import functools
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from redis.commands.core import Script

from .qos import lookup_on, quarantine
from .reliable_pop import BELL

if TYPE_CHECKING:
    from .channel import GeoChannel

logger = logging.getLogger("geofailover.celery")

#: Delivery tags of messages staged by the drainer start with this.
DRAIN_TAG = "geofailover-drain-"

# Move up to ARGV[1] ready messages of the queue keys KEYS[3..] into the unacked
# hash KEYS[2] / index KEYS[1], visible now, in kombu's format with the queue
# (ARGV[i] for KEYS[i]) as routing key: a stock kombu consumer there would
# restore them. Returns how many entries are visible (score <= the last ARGV),
# so an idle round costs one round trip.
_DRAIN_LUA = b"""
local limit = tonumber(ARGV[1])
local moved = 0
for i = 3, #KEYS do
  while moved < limit do
    local m = redis.call('RPOP', KEYS[i])
    if not m then break end
    moved = moved + 1
    local tag = string.format('%s%08d', ARGV[2], moved)
    redis.call('ZADD', KEYS[1], 0, tag)
    redis.call('HSET', KEYS[2], tag, '[' .. m .. ',"",' .. cjson.encode(ARGV[i]) .. ']')
  end
end
local visible = redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[#KEYS + 1])
return {moved, visible}
"""
DRAIN = Script(None, _DRAIN_LUA)  # type: ignore[arg-type]  # no default client: each call names its own


def drain(channel: GeoChannel, queues: list[str]) -> None:
    """Move messages of ``queues`` from the other answering endpoints into ``channel``'s."""
    engine = channel.geo.engine
    for source in engine.eligible_endpoints(exclude=channel.endpoint, answering=True):
        if moved := _drain_from(channel, source.direct_client(engine.config), source.name, queues):
            logger.info("geofailover[%s]: moved %d message(s) of %s from %s to the active endpoint %s",
                        engine.name, moved, ", ".join(queues), source.name, channel.endpoint)


def _drain_from(channel: GeoChannel, src: redis.Redis, source: str, queues: list[str]) -> int:
    prefix = channel.global_keyprefix
    keys = list(dict.fromkeys((channel._q_for_pri(queue, pri), queue) for pri in channel.priority_steps for queue in queues))
    ceil = time.time() - (channel.geo.options["restore_unacked_after"] or channel.visibility_timeout)
    _staged, visible = DRAIN(
        [prefix + channel.unacked_index_key, prefix + channel.unacked_key, *(prefix + key for key, _ in keys)],
        [channel.geo.options["drain_batch"], f"{DRAIN_TAG}{uuid.uuid4().hex}-", *(queue for _, queue in keys), ceil], src,
    )
    return _restore_from(channel, src, source, ceil) if int(visible) else 0


def _restore_from(channel: GeoChannel, src: redis.Redis, source: str, ceil: float) -> int:
    """Push the visible unacked entries of ``src`` into ``channel``'s endpoint, then forget them
    there; under kombu's ``unacked_mutex`` of the source, so two workers never move one entry.
    An entry that cannot be decoded or routed is quarantined (:data:`DEAD_LETTER`), not retried forever."""
    prefix = channel.global_keyprefix
    index, table = prefix + channel.unacked_index_key, prefix + channel.unacked_key
    lookup = functools.cache(lambda exchange, routing_key: lookup_on(channel, src, exchange, routing_key))
    try:
        with kombu_redis.Mutex(src, prefix + channel.unacked_mutex_key, channel.unacked_mutex_expire):
            batch = channel.geo.options["drain_batch"]
            tags = [bytes_to_str(t) for t in src.zrange(index, "-inf", ceil, byscore=True, offset=0, num=batch)]
            pushes: list[tuple[str, str, str]] = []
            done: list[str] = []
            bad: dict[str, dict[str, Any]] = {}  # reason -> {tag: entry}
            for tag, raw in zip(tags, src.hmget(table, tags) if tags else [], strict=True):
                if raw is None:  # a stale index entry: just drop it
                    done.append(tag)
                    continue
                try:
                    payload, exchange, routing_key = loads(bytes_to_str(raw))
                    targets = lookup(exchange or "", routing_key or "")
                except (TypeError, ValueError):
                    targets = None
                if not targets:
                    bad.setdefault("have no queue to go to" if targets == [] else "cannot be decoded", {})[tag] = raw
                    continue
                if not tag.startswith(DRAIN_TAG):  # a delivery that was never acknowledged
                    with contextlib.suppress(KeyError, TypeError):
                        payload["headers"]["redelivered"] = True
                        payload["properties"]["delivery_info"]["redelivered"] = True
                body = dumps(payload)
                priority = channel._get_message_priority(payload, reverse=False)
                pushes.extend((queue, prefix + channel._q_for_pri(queue, priority), body) for queue in targets)
                done.append(tag)
            if pushes:
                with redis.Redis(connection_pool=channel.pool).pipeline(transaction=False) as pipe:
                    for _, key, body in reversed(pushes):  # oldest ends at the tail: consumed first
                        pipe.rpush(key, body)
                    for queue in {queue for queue, _, _ in pushes}:
                        pipe.lpush(prefix + BELL + queue, 1)
                    pipe.execute()
            for reason, entries in bad.items():
                quarantine(channel, src, entries, reason, source)
            if done:
                with src.pipeline() as pipe:
                    pipe.zrem(index, *done)
                    pipe.hdel(table, *done)
                    pipe.execute()
            return len(done)
    except kombu_redis.MutexHeld:
        return 0

