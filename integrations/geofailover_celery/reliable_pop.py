"""Consuming without a window for loss (the ``reliable_pop`` option).

kombu's ``BRPOP`` removes a message before its reply travels: an endpoint
that dies in between takes the message with it. Here the blocking command
takes only a *doorbell*: every publish pushes one onto its queue's doorbell
list in the same transaction as the message, and a consumer waits with
``BRPOP`` on the doorbells of all its queues, so a message on any queue or
priority wakes it at once. The :data:`POP` script then takes the message and writes
kombu's unacked record in one atomic step, so kombu's ``visibility_timeout``
brings back a taken message that nobody acknowledges. A doorbell is a hint:
the script keeps one ringing while a queue holds messages and clears stale
rings, so a lost one (or a message pushed by a plain ``redis://`` producer)
costs at most ``brpop_timeout`` of latency, never a message.
"""

# mypy: disallow-untyped-calls=False

from __future__ import annotations

import time
import uuid
from queue import Empty
from typing import TYPE_CHECKING, Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from redis.commands.core import Script

from .qos import quarantine

if TYPE_CHECKING:
    from .settings import Resolved

#: A queue's doorbell list is this prefix plus the queue name (after kombu's ``global_keyprefix``).
BELL = "_geofailover.bell."

# KEYS: unacked index, unacked hash, the n queues' doorbells, then the queue
# keys in kombu's BRPOP order (priority-major, so key i belongs to queue
# (i - 1) % n + 1). ARGV: now, the tag for a message that has none, then per
# queue its name and "1" if consumed with acks. Takes the first message and
# records it as kombu's QoS.append would (unless no_ack; the tag is looked up
# after "properties", as kombu writes it, so no header can pose as it). Then a
# queue that holds messages but no ring gets one; when nothing was there, the
# rings left were stale and go. Returns {i, message, tag} or false.
_POP_LUA = b"""
local n = (#ARGV - 2) / 2
local first = 3 + n
local taken = false
for i = first, #KEYS do
  local m = redis.call('RPOP', KEYS[i])
  if m then
    local q = (i - first) % n + 1
    local tag = ''
    if ARGV[2 + 2 * q] == '1' then
      local at = string.find(m, '"properties": {', 1, true)
      tag = at and string.match(m, '"delivery_tag": "([^"]+)"', at) or ARGV[2]
      redis.call('ZADD', KEYS[1], ARGV[1], tag)
      redis.call('HSET', KEYS[2], tag, '[' .. m .. ',"",' .. cjson.encode(ARGV[1 + 2 * q]) .. ']')
    end
    taken = {i - first + 1, m, tag}
    break
  end
end
if not taken then redis.call('DEL', unpack(KEYS, 3, first - 1)) return false end
for q = 1, n do
  if redis.call('LLEN', KEYS[2 + q]) == 0 then
    for i = first + q - 1, #KEYS, n do
      if redis.call('LLEN', KEYS[i]) > 0 then redis.call('RPUSH', KEYS[2 + q], 1) break end
    end
  end
end
return taken
"""
POP = Script(None, _POP_LUA)  # type: ignore[arg-type]  # no default client: each call names its own


class ReliableChannel(kombu_redis.Channel):  # type: ignore[misc]
    """kombu's redis channel, consuming on doorbells with the pop script (with ``reliable``
    off, kombu's own ``BRPOP``); :class:`~.channel.GeoChannel` adds the pinning."""

    reliable = True
    endpoint: str
    geo: Resolved
    connection_errors: tuple[type[BaseException], ...]
    _in_poll: Any  # kombu: False, None or the connection a wait is pending on

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.recorded: set[str] = set()  # tags the script recorded: kombu's QoS must not write them again
        self._acks: dict[str, bool] = {}  # queue -> consumed with acknowledgements
        self._recording_get = False  # a basic_get with acknowledgements is under way
        self._wait_queues: list[str] = []
        super().__init__(*args, **kwargs)

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        self._acks[queue] = not no_ack
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        self._recording_get = not no_ack
        try:
            return super().basic_get(queue, no_ack, **kwargs)
        finally:
            self._recording_get = False

    def _brpop_start(self, timeout: float | None = None) -> None:
        """Send the wait: ``BRPOP`` on the doorbells of the consumed queues, in kombu's (rotating) order."""
        if not self.reliable:
            return super()._brpop_start(timeout)  # type: ignore[no-any-return]
        self._wait_queues = self._queue_cycle.consume(len(self.active_queues))
        if self._wait_queues:
            self._in_poll = self.client.connection
            self._brpop_sent_at = time.monotonic()  # type: ignore[assignment]  # kombu: None when idle
            bells = (self.global_keyprefix + BELL + queue for queue in self._wait_queues)
            self.client.connection.send_command("BRPOP", *bells, (self.brpop_timeout if timeout is None else timeout) or 0)
        return None

    def _brpop_read(self, **options: Any) -> bool:
        """Read the wait's reply (a doorbell, or none at the timeout), then take a message and deliver it."""
        if not self.reliable:
            return super()._brpop_read(**options)  # type: ignore[no-any-return]
        try:
            try:
                self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            queue, payload = self._pop(self._wait_queues)
            self._queue_cycle.rotate(queue)
            self.connection._deliver(payload, queue)
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def _get(self, queue: str, timeout: Any = None) -> Any:
        """``basic_get`` with acknowledgements: take and record in one step."""
        if not (self.reliable and self._recording_get):
            return super()._get(queue)
        try:
            return self._pop([queue], record_all=True)[1]
        finally:
            with self.conn_or_acquire() as client:
                self._maybe_update_queues_expire(client, queue)

    def _pop(self, queues: list[str], record_all: bool = False) -> tuple[str, Any]:
        """Run the pop script over ``queues``: ``(queue, payload)``; :class:`Empty` when all are empty."""
        prefix = self.global_keyprefix
        keys = [prefix + self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        argv: list[Any] = [time.time(), f"geofailover-pop-{uuid.uuid4().hex}"]
        for queue in queues:
            argv += [queue, "1" if record_all or self._acks.get(queue, True) else "0"]
        client = redis.Redis(connection_pool=self.pool)
        bells = (prefix + BELL + queue for queue in queues)
        reply = POP([prefix + self.unacked_index_key, prefix + self.unacked_key, *bells, *keys], argv, client)
        if not reply:
            raise Empty()
        queue, raw, tag = queues[(int(reply[0]) - 1) % len(queues)], reply[1], bytes_to_str(reply[2])
        try:
            payload = loads(bytes_to_str(raw))
        except (TypeError, ValueError):
            quarantine(self, client, {tag or argv[1]: raw}, "cannot be decoded", self.endpoint)
            raise Empty() from None
        if tag:
            self.recorded.add(tag)
        return queue, payload
