"""Consuming without a window for loss (the ``reliable_pop`` option).

kombu's ``BRPOP`` removes a message before its reply travels: an endpoint
that dies in between takes the message with it. Here the blocking command
only says "there is something" (``BLMOVE key key RIGHT RIGHT``, a no-op
move), and :data:`POP_LUA` takes the message and writes kombu's unacked
record in one atomic step, so kombu's ``visibility_timeout`` brings back a
taken message that nobody acknowledges.
"""

# mypy: disallow-untyped-calls=False

from __future__ import annotations

import logging
import time
import uuid
from queue import Empty
from typing import TYPE_CHECKING, Any

import redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from .draining import DRAIN_TAG

if TYPE_CHECKING:
    from .channel import GeoChannel

logger = logging.getLogger("geofailover.celery")

# Pop the first message of the queue keys KEYS[3..] (kombu's BRPOP order) and
# record it in the unacked hash KEYS[2] / index KEYS[1] (score ARGV[1], now)
# under its delivery tag, as kombu's QoS.append would. ARGV[2j] is the queue
# of KEYS[j + 2], ARGV[2j + 1] "1" if consumed with acks; the last ARGV is the
# tag of a message that has none. Returns {j, message, tag} or false.
POP_LUA = """
for i = 3, #KEYS do
  local m = redis.call('RPOP', KEYS[i])
  if m then
    local j = i - 2
    local tag = ''
    if ARGV[2 * j + 1] == '1' then
      local ok, decoded = pcall(cjson.decode, m)
      if ok and type(decoded) == 'table' and type(decoded['properties']) == 'table' then
        tag = decoded['properties']['delivery_tag']
      end
      if type(tag) ~= 'string' or tag == '' then
        tag = ARGV[#ARGV]
      end
      redis.call('ZADD', KEYS[1], ARGV[1], tag)
      redis.call('HSET', KEYS[2], tag, '[' .. m .. ',"",' .. cjson.encode(ARGV[2 * j]) .. ']')
    end
    return {j, m, tag}
  end
end
return false
"""


class ReliablePop:
    """One channel's wait and pop; the channel's kombu hooks call it."""

    def __init__(self, channel: GeoChannel, enabled: bool) -> None:
        self.channel = channel
        self.enabled = enabled
        self.recorded: set[str] = set()  # tags the script recorded: kombu's QoS must not write them again
        self.acks: dict[str, bool] = {}  # queue -> consumed with acknowledgements
        self.recording_get = False  # a basic_get with acknowledgements is under way
        self._wait_keys: list[str] = []

    def start_wait(self, timeout: float | None) -> None:
        """Send the wait, on the first key in kombu's order (rotating over the queues):
        a message on another key is found when it times out (``brpop_timeout``)."""
        chan = self.channel
        queues = chan._queue_cycle.consume(len(chan.active_queues))
        if not queues:
            return
        self._wait_keys = [chan._q_for_pri(queue, pri) for pri in chan.priority_steps for queue in queues]
        doorbell = chan.global_keyprefix + self._wait_keys[0]
        chan._in_poll = chan.client.connection
        chan._brpop_sent_at = time.monotonic()  # type: ignore[assignment]  # kombu: None when idle
        seconds = chan.brpop_timeout if timeout is None else timeout
        chan.client.connection.send_command("BLMOVE", doorbell, doorbell, "RIGHT", "RIGHT", seconds or 0)

    def read_wait(self, **options: Any) -> bool:
        """Read the wait's reply, then take a message with the script and deliver it."""
        chan = self.channel
        try:
            try:
                chan.client.parse_response(chan.client.connection, "BLMOVE", **options)
            except chan.connection_errors:
                chan.client.connection.disconnect()
                raise
            except chan.ResponseError as exc:
                if "unknown command" not in str(exc).lower():
                    raise
                logger.warning(
                    "geofailover[%s]: endpoint %s has no BLMOVE (Redis < 6.2): consuming with plain BRPOP, "
                    "which can lose a message popped just before the endpoint fails", chan.geo.engine.name, chan.endpoint,
                )
                self.enabled = False
                raise Empty() from None
            queue, payload = self.pop(self._wait_keys)
            chan._queue_cycle.rotate(queue)
            chan.connection._deliver(payload, queue)
            return True
        finally:
            chan._in_poll = None
            chan._flush_brpop_reauth()

    def get(self, queue: str) -> Any:
        """``basic_get`` with acknowledgements: take and record in one step."""
        chan = self.channel
        try:
            return self.pop([chan._q_for_pri(queue, pri) for pri in chan.priority_steps], record_all=True)[1]
        finally:
            with chan.conn_or_acquire() as client:
                chan._maybe_update_queues_expire(client, queue)

    def pop(self, keys: list[str], record_all: bool = False) -> tuple[str, Any]:
        """Run the pop script over ``keys``: ``(queue, payload)``; :class:`Empty` when all are empty."""
        chan = self.channel
        prefix = chan.global_keyprefix
        argv: list[Any] = [time.time()]
        for key in keys:
            queue = key.rsplit(chan.sep, 1)[0]
            argv += [queue, "1" if record_all or self.acks.get(queue, True) else "0"]
        argv.append(f"{DRAIN_TAG}pop-{uuid.uuid4().hex}")
        reply = redis.Redis(connection_pool=chan.pool).eval(
            POP_LUA, 2 + len(keys), prefix + chan.unacked_index_key, prefix + chan.unacked_key,
            *(prefix + key for key in keys), *argv,
        )  # fmt: skip
        if not reply:
            raise Empty()
        index, raw, tag = int(reply[0]), reply[1], bytes_to_str(reply[2])
        queue = keys[index - 1].rsplit(chan.sep, 1)[0]
        try:
            payload = loads(bytes_to_str(raw))
        except (TypeError, ValueError):
            logger.error("geofailover[%s]: cannot decode a message of %s; left unacknowledged on %s under tag %s: %r",
                         chan.geo.engine.name, queue, chan.endpoint, tag, bytes(raw)[:200])
            raise Empty() from None
        if tag:
            self.recorded.add(tag)
        return queue, payload
