"""A kombu transport that follows the geofailover engine: ``geofailover://``.

It subclasses kombu's redis transport (``driver_type`` stays ``"redis"``,
which Celery branches on) and changes four things:

**Channels are pinned.** A channel talks to the endpoint that was active
when it was created, for its whole life: its BRPOP, publishes, acks,
rejects and unacked-restores all go there. A queue is data, and kombu keeps
per-endpoint state next to it (``_kombu.binding.*`` tables, the ``unacked``
hash and index), so a channel silently re-pointed mid-life would ack on the
wrong server or publish through bindings that do not exist there (kombu then
drops the message without a word).

**A switch moves producers and reconnects consumers.** When the engine's
active endpoint is no longer a channel's, a channel that only publishes
moves itself at its next publish (declaring the bindings kombu keeps in
memory on the new endpoint first). A channel that consumes is not moved
under its consumer: a timer in the consumer's event loop raises
:class:`EndpointSwitched` (one of the transport's ``connection_errors``) and
Celery's consumer restarts on a new connection, which lands on the new
endpoint at once, not after Celery's growing backoff. A channel being
created checks its endpoint with a PING first and, when that fails, lets the
engine confirm and retries on the endpoint it moved to.

**Nothing is stranded.** A consuming worker periodically *drains* every
healthy non-active endpoint into the active one: ready messages of the
queues it consumes, and unacknowledged messages whose visibility timeout has
passed there (nobody else would restore them, since no consumer is left on
that endpoint). So tasks published to the secondary during an outage are
consumed after failback, and a restarted primary's backlog is consumed even
before failback. Moving is at-least-once: a message is first recorded in the
source's ``unacked`` hash (atomically, in one script), then pushed to the
destination, then removed from the source; a crash in between leaves it
visible in the source's ``unacked`` hash, to be moved again (a possible
duplicate, never a loss). Turn draining off (``drain=False``) for
Active-Active databases whose lists replicate between regions.

**Nothing is only in flight.** kombu's ``BRPOP`` removes a message on the
server before its reply travels, so an endpoint that dies in between takes
the message with it. Consumers here wait with a non-destructive
``BLMOVE key key RIGHT RIGHT`` and take the message with a script that pops
it and writes kombu's unacked record in one atomic step
(``reliable_pop``, see :meth:`GeoChannel._brpop_start`).

Failover logic stays in the core: this module only maps kombu's channel and
consumer life cycle onto the engine's ``active``/``route()``/
``report_failure()``/``confirm()``.
"""

# kombu ships type hints but many of its methods are unannotated; calling
# them from typed code is the point of subclassing it.
# mypy: disallow-untyped-calls=False

from __future__ import annotations

import logging
import sys
import time
import uuid
import weakref
from collections.abc import Callable, Iterable
from queue import Empty
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import base as virtual_base
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from geofailover_core.errors import GeoFailoverError, NoHealthyEndpointError
from geofailover_core.masking import mask_text

from . import signals
from .endpoints import connection_params, endpoint_client, endpoint_views, other_endpoints
from .settings import Resolved, resolve

logger = logging.getLogger("geofailover.celery")

#: Delivery tags of messages staged by the drainer start with this.
DRAIN_TAG = "geofailover-drain-"

# Move up to ARGV[1] ready messages from the queue keys KEYS[3..] into the
# unacked hash KEYS[2] / index KEYS[1] with score 0 ("visible now"), so the
# move survives a crash of the drainer. The entry has kombu's own format,
# [payload, exchange, routing_key] with the anonymous exchange and the queue
# name (ARGV[i] for KEYS[i], i >= 3) as routing key, so a stock kombu
# consumer on this endpoint would restore it to the same queue. Also returns
# how many unacked entries are visible (score <= the last ARGV), so an idle
# round costs one round trip.
_DRAIN_LUA = """
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


# The reliable pop: take the first message of the queue keys KEYS[3..] (in
# kombu's BRPOP order) and, in the same atomic step, record it in the unacked
# hash KEYS[2] / index KEYS[1] (score ARGV[1], the time) under its own
# delivery tag, exactly as kombu's QoS.append would a moment later. ARGV[2j]
# is the queue name of KEYS[j + 2] and ARGV[2j + 1] "1" when that queue is
# consumed with acknowledgements ("0": no_ack consumers, nothing recorded).
# Returns {j, message, tag} or false. A message is thus never only in
# flight: if the reply is lost with the endpoint, the record brings it back
# after visibility_timeout.
_POP_LUA = """
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


class EndpointSwitched(GeoFailoverError):
    """The endpoint this channel is pinned to is no longer the active one.

    A kombu *connection error* (it is in the transport's ``connection_errors``)
    so that ``Connection.ensure()`` and Celery's consumer reconnect, and
    deliberately not a ``redis.ConnectionError``: redis-py's own retry
    handling must never swallow it.
    """


def _reporting_class(base: type[Any], channel: GeoChannel, asynchronous: bool) -> type[Any]:
    """``base`` (the endpoint's redis-py connection class) feeding errors to the engine.

    Errors on the active endpoint count towards its circuit breaker, so a
    broker that dies under the worker is failed over from at once, as the
    core's own client does. Asynchronous (BRPOP) connections also learn their
    server-side client id, so a pending BRPOP can be released
    (``CLIENT UNBLOCK``) when the channel has to move.
    """
    ref = weakref.ref(channel)

    def report(exc: BaseException) -> None:
        chan = ref()
        if chan is not None:
            chan._geo_report(exc)

    class GeoConnection(base):  # type: ignore[valid-type,misc]
        _geo_client_id: int | None = None

        def connect_check_health(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().connect_check_health(*args, **kwargs)
            except Exception as exc:
                report(exc)
                raise

        def on_connect_check_health(self, *args: Any, **kwargs: Any) -> Any:
            result = super().on_connect_check_health(*args, **kwargs)
            if asynchronous:
                self.send_command("CLIENT", "ID", check_health=False)
                self._geo_client_id = int(self.read_response())
            return result

        def send_packed_command(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().send_packed_command(*args, **kwargs)
            except Exception as exc:
                report(exc)
                raise

        def read_response(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().read_response(*args, **kwargs)
            except Exception as exc:
                report(exc)
                raise

    GeoConnection.__name__ = GeoConnection.__qualname__ = f"Geo{base.__name__}"
    return GeoConnection


class GeoQoS(kombu_redis.QoS):  # type: ignore[misc]
    """kombu's redis QoS, plus what the reliable pop and a switch add.

    * A message taken by the pop script is already recorded as
      unacknowledged on the server: only kombu's in-memory bookkeeping runs.
    * A message plain BRPOP (``reliable_pop=False``) took from an endpoint
      that died before its unacked record could be written exists only in
      memory: it is re-queued on the endpoint the engine moved to instead of
      being lost.
    * When a channel closes because of a *planned* move (its endpoint is
      healthy, e.g. a failback), messages of tasks that are still running
      with ``acks_late`` are not restored: the task acks them on their own
      endpoint when it finishes, so it does not run twice. (With
      ``worker_cancel_long_running_tasks_on_connection_loss=True`` Celery
      cancels such tasks, so they are restored as usual and run again.)
    """

    channel: GeoChannel

    def append(self, message: Any, delivery_tag: str) -> None:
        if delivery_tag in self.channel._geo_recorded:
            # The pop script already wrote the unacked record atomically with the pop.
            self.channel._geo_recorded.discard(delivery_tag)
            virtual_base.QoS.append(self, message, delivery_tag)
            return
        try:
            super().append(message, delivery_tag)
        except self.channel.connection_errors as exc:
            self.channel._geo_rescue(message, exc)
            raise

    def restore_unacked(self, client: Any = None) -> None:
        keep = self.channel._geo_keep_unacked(self._delivered)
        if not keep:
            return super().restore_unacked(client)  # type: ignore[no-any-return]
        logger.info(
            "geofailover[%s]: leaving %d running acks_late task(s) unacknowledged on %s; they ack there when done",
            self.channel._geo.engine.name, len(keep), self.channel._geo_endpoint,
        )
        with self.channel.conn_or_acquire(client) as conn:
            for tag in self._delivered:
                if tag not in keep:
                    self.restore_by_tag(tag, client=conn)
        self._delivered.clear()
        return None


class GeoChannel(kombu_redis.Channel):  # type: ignore[misc]
    """A redis channel pinned to the endpoint that was active when it was made."""

    QoS = GeoQoS

    _geo: Resolved
    _geo_endpoint: str
    connection_errors: tuple[type[BaseException], ...]
    _in_poll: Any  # kombu: False, None or the connection a BRPOP (here: the wait) is pending on
    _brpop_sent_at: Any

    def __init__(self, connection: Transport, **kwargs: Any) -> None:
        self._geo = connection._geo
        self._geo_endpoint = self._geo_select()
        self._geo_recorded: set[str] = set()
        self._geo_no_ack: set[str] = set()
        self._geo_wait_keys: list[str] = []
        self._geo_get_records = False
        self._geo_reliable = bool(self._geo.options["reliable_pop"])
        super().__init__(connection, **kwargs)
        if not connection._geo_announced:
            connection._geo_announced = True
            logger.info("geofailover[%s]: broker connection uses endpoint %s", self._geo.engine.name, self._geo_endpoint)

    # -- which endpoint -----------------------------------------------------------

    def _geo_select(self) -> str:
        """The active endpoint, after checking that it answers.

        A consumer restarting right after its endpoint died would otherwise
        pin itself to the dead endpoint (the engine may not know yet) and wait
        for kombu's next retry; instead the failed PING is reported, the
        engine confirms with a probe, and we connect to where it moved.
        """
        engine = self._geo.engine
        last: BaseException | None = None
        for _ in range(len(engine.endpoint_names) + 1):
            state, generation = engine.route()  # NoHealthyEndpointError (a redis ConnectionError) when all are down
            try:
                endpoint_client(engine, state.name).ping()
                return state.name
            except Exception as exc:
                last = exc
                engine.report_failure(generation, exc, "PING")
                if not engine.confirm(generation):
                    raise
                logger.warning(
                    "geofailover[%s]: broker endpoint %s failed while connecting (%s); the engine moved to %s, connecting there",
                    engine.name, state.name, mask_text(f"{type(exc).__name__}: {exc}"), engine.active,
                )
        raise NoHealthyEndpointError(f"geofailover[{engine.name}]: endpoint kept changing while connecting") from last

    def _geo_stale(self) -> bool:
        return self._geo.engine.active != self._geo_endpoint

    def _geo_switch_message(self) -> str:
        engine = self._geo.engine
        active = engine.active
        event = engine.status().get("last_event") or {}
        where = f"now {active}" if active else "no endpoint is healthy"
        why = ""
        if event:
            why = f"; {event.get('kind')}, reason {event.get('reason')}"
            if event.get("detail"):
                why += f": {event['detail']}"
        return f"geofailover[{engine.name}]: broker endpoint {self._geo_endpoint} is no longer active ({where}{why}); reconnecting"

    def _geo_check(self) -> None:
        if not self.closed and self._geo_stale():
            raise EndpointSwitched(self._geo_switch_message())

    def _geo_report(self, exc: BaseException) -> None:
        engine = self._geo.engine
        generation = engine.generation  # read before comparing: a switch in between makes the report a no-op
        if engine.active == self._geo_endpoint:
            engine.report_failure(generation, exc)

    # -- connections --------------------------------------------------------------

    def _get_pool(self, asynchronous: bool = False) -> Any:
        # kombu formats the fanout prefix with the db in place, once; a
        # channel that moves to an endpoint with another db needs it again.
        template = self.__dict__.setdefault("_geo_fanout_template", self.keyprefix_fanout)
        self.keyprefix_fanout = template
        return super()._get_pool(asynchronous)

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        """Connection parameters of the pinned endpoint (kombu's documented seam).

        kombu's own transport options (``socket_timeout``, ``health_check_interval``...)
        apply when set; endpoint addresses, TLS and credentials come from the
        engine's configuration. Computed from the channel alone, so acks on a
        channel that has been closed still reach its endpoint.
        """
        overrides = {
            key: getattr(self, key)
            for key in ("socket_timeout", "socket_connect_timeout", "socket_keepalive", "socket_keepalive_options",
                        "health_check_interval", "retry_on_timeout", "client_name")
            if getattr(self, key, None) is not None
        }
        conn_class, params = connection_params(self._geo.engine, self._geo_endpoint, overrides)
        params.pop("decode_responses", None)  # kombu expects bytes
        if issubclass(conn_class, redis.UnixDomainSocketConnection):
            for key in ("socket_connect_timeout", "socket_keepalive", "socket_keepalive_options"):
                params.pop(key, None)
        params.setdefault("db", 0)
        params["max_connections"] = self.max_connections
        cls = _reporting_class(conn_class, self, asynchronous)
        if asynchronous:
            channel = self

            class Connection(cls):  # type: ignore[valid-type,misc]
                def disconnect(self, *args: Any, **kwargs: Any) -> None:
                    super().disconnect(*args, **kwargs)
                    if channel._registered:
                        channel._on_connection_disconnect(self)

            cls = Connection
        params["connection_class"] = cls
        return params

    # -- the operations a switch must interrupt -----------------------------------------

    def basic_publish(self, message: Any, exchange: str, routing_key: str, **kwargs: Any) -> Any:
        if not self.closed and self._geo_stale() and not self._geo_repin():
            raise EndpointSwitched(self._geo_switch_message())
        return super().basic_publish(message, exchange, routing_key, **kwargs)

    def _geo_repin(self) -> bool:
        """Move a channel that only publishes to the new active endpoint; False if it consumes.

        A producer channel has nothing tied to its old endpoint except the
        binding tables it declared there, which kombu also keeps in memory;
        they are declared again on the new endpoint first, so a publish
        through a named exchange is routed there (never dropped). So even a
        publish without retries (``retry=False``) simply goes to the new
        endpoint. A channel that consumes (or holds unacknowledged messages)
        is not moved: its acks belong to its endpoint, and the consumer
        reconnects instead.
        """
        if self._consumers or self.active_fanout_queues or self._in_poll or self._in_listen:
            return False
        if self._qos is not None and self._qos._delivered:
            return False
        endpoint = self._geo_select()  # raises (a connection error) when no endpoint is healthy
        old, self._geo_endpoint = self._geo_endpoint, endpoint
        self._disconnect_pools()
        self._close_clients()
        for attr in ("client", "subclient", "_refresh_binding", "_sweep_bindings"):
            self.__dict__.pop(attr, None)
        bindings = 0
        for exchange, meta in list(self.state.exchanges.items()):
            for binding in list(meta.get("table") or []):
                self._queue_bind(exchange, *binding)
                bindings += 1
        logger.info("geofailover[%s]: producer channel moved from %s to %s (%d binding(s) declared there)",
                    self._geo.engine.name, old, endpoint, bindings)
        return True

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        self._geo_check()
        if no_ack:
            self._geo_no_ack.add(queue)
        else:
            self._geo_no_ack.discard(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        self._geo_check()
        self._geo_get_records = not no_ack
        try:
            return super().basic_get(queue, no_ack, **kwargs)
        finally:
            self._geo_get_records = False

    # -- consuming without a window for loss ---------------------------------------------

    def _brpop_start(self, timeout: float | None = None) -> None:
        """Wait for work without taking it: ``BLMOVE key key RIGHT RIGHT`` (a no-op move).

        kombu's ``BRPOP`` removes the message on the server before the reply
        travels; an endpoint that dies in between takes the message with it
        (and with ``appendfsync always`` the pop is on disk, the reply never
        sent). Here the blocking command only says "there is something"; the
        message is then taken by :data:`_POP_LUA`, which records it as
        unacknowledged in the same atomic step. The wait watches the first
        key in kombu's order (the default queue at default priority, rotating
        over the consumed queues); messages on other keys are found when the
        wait times out (``brpop_timeout``, 1 s) or as soon as any message arrives.
        """
        if not self._geo_reliable:
            return super()._brpop_start(timeout)  # type: ignore[no-any-return]
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return None
        self._geo_wait_keys = [self._q_for_pri(queue, pri) for pri in self.priority_steps for queue in queues]
        doorbell = self.global_keyprefix + self._geo_wait_keys[0]
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        self.client.connection.send_command("BLMOVE", doorbell, doorbell, "RIGHT", "RIGHT", timeout or 0)
        return None

    def _brpop_read(self, **options: Any) -> bool:
        if not self._geo_reliable:
            return super()._brpop_read(**options)  # type: ignore[no-any-return]
        try:
            try:
                self.client.parse_response(self.client.connection, "BLMOVE", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            except self.ResponseError as exc:
                if "unknown command" not in str(exc).lower():
                    raise
                logger.warning(
                    "geofailover[%s]: endpoint %s has no BLMOVE (Redis < 6.2): consuming with plain BRPOP, "
                    "which can lose a message popped just before the endpoint fails", self._geo.engine.name, self._geo_endpoint,
                )
                self._geo_reliable = False
                raise Empty() from None
            popped = self._geo_pop(self._geo_wait_keys)
            if popped is None:
                raise Empty()
            dest, payload = popped
            self._queue_cycle.rotate(dest)
            self.connection._deliver(payload, dest)
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def _poll_error(self, type: str, **options: Any) -> Any:
        if type == "BRPOP" and self._geo_reliable:
            return self.client.parse_response(self.client.connection, "BLMOVE")
        return super()._poll_error(type, **options)

    def _get(self, queue: str, timeout: Any = None) -> Any:
        if not (self._geo_reliable and self._geo_get_records):
            return super()._get(queue)
        popped = self._geo_pop([self._q_for_pri(queue, pri) for pri in self.priority_steps], record_all=True)
        with self.conn_or_acquire() as client:
            self._maybe_update_queues_expire(client, queue)
        if popped is None:
            raise Empty()
        return popped[1]

    def _geo_pop(self, keys: list[str], record_all: bool = False) -> tuple[str, Any] | None:
        """Run the pop script over ``keys``; ``(queue, payload)`` or None when all are empty."""
        if not keys:
            return None
        prefix = self.global_keyprefix
        argv: list[Any] = [time.time()]
        for key in keys:
            queue = key.rsplit(self.sep, 1)[0]
            argv += [queue, "1" if record_all or queue not in self._geo_no_ack else "0"]
        argv.append(f"{DRAIN_TAG}pop-{uuid.uuid4().hex}")  # only for a message without a delivery tag
        reply = redis.Redis(connection_pool=self.pool).eval(
            _POP_LUA, 2 + len(keys), prefix + self.unacked_index_key, prefix + self.unacked_key,
            *(prefix + key for key in keys), *argv,
        )  # fmt: skip
        if not reply:
            return None
        index, raw, tag = int(reply[0]), reply[1], bytes_to_str(reply[2])
        queue = keys[index - 1].rsplit(self.sep, 1)[0]
        try:
            payload = loads(bytes_to_str(raw))
        except (TypeError, ValueError):
            logger.error("geofailover[%s]: cannot decode a message of %s; left unacknowledged on %s under tag %s: %r",
                         self._geo.engine.name, queue, self._geo_endpoint, tag, bytes(raw)[:200])
            raise Empty() from None
        if tag:
            self._geo_recorded.add(tag)
        return queue, payload

    def close(self) -> None:
        if not self.closed and self._geo_reliable and self._in_poll:
            # A pending wait carries no message (the pop script takes them):
            # drop it instead of waiting up to brpop_timeout for its reply.
            connection, self._in_poll = self._in_poll, None
            connection.disconnect()
        if not self.closed and self._geo_stale():
            if self._geo_endpoint_healthy():
                if self._in_poll:
                    self._geo_unblock()
            else:
                self._geo_abandon()
        super().close()

    def _geo_abandon(self) -> None:
        """Close without talking to an endpoint that failed.

        kombu's ``close()`` reads the reply of a pending BRPOP, restores
        unacknowledged messages and deletes auto-delete queues, all on the
        channel's endpoint: against a hung region each costs a socket
        timeout, and the reconnect waits for all of them. None can succeed
        there anyway, so skip them: a pending BRPOP has nothing (it only
        waits while the queue is empty, and the server frees the blocked
        client when it reads our close), and unacknowledged messages stay in
        that endpoint's ``unacked`` hash, to be redelivered after
        ``visibility_timeout`` once it is back (by the drainer, or by a
        consumer there).
        """
        pending = len(self._qos._delivered) if self._qos is not None else 0
        logger.log(
            logging.INFO if pending else logging.DEBUG,
            "geofailover[%s]: closing the channel on failed endpoint %s without waiting on it; "
            "its %d unacknowledged message(s) are redelivered after visibility_timeout once it is back",
            self._geo.engine.name, self._geo_endpoint, pending,
        )
        connection, self._in_poll = self._in_poll, None
        if connection:
            connection.disconnect()
        self.do_restore = False
        self.auto_delete_queues = set()

    def _geo_endpoint_healthy(self) -> bool:
        """Whether the engine last saw our (pinned) endpoint answer its probes."""
        return any(
            ep["name"] == self._geo_endpoint and ep["health"] == "healthy" and ep["breaker"] == "closed"
            for ep in endpoint_views(self._geo.engine)
        )

    def _geo_unblock(self) -> None:
        """Release our pending BRPOP on a healthy old endpoint.

        kombu's ``close()`` reads the reply of a pending BRPOP (it may carry a
        message already popped), which otherwise takes up to the BRPOP timeout
        and delays the reconnect; ``CLIENT UNBLOCK`` makes it reply now.
        """
        client_id = getattr(self._in_poll, "_geo_client_id", None)
        if client_id is None:
            return
        try:
            endpoint_client(self._geo.engine, self._geo_endpoint).client_unblock(client_id)
        except Exception as exc:  # noqa: BLE001 - the old endpoint may be down: then the read fails fast anyway
            logger.debug("geofailover: CLIENT UNBLOCK on %s failed: %r", self._geo_endpoint, exc)

    # -- in-flight messages -------------------------------------------------------------

    def _geo_keep_unacked(self, delivered: Iterable[str]) -> set[str]:
        """Tags of running ``acks_late`` tasks to leave unacknowledged at close (see :class:`GeoQoS`)."""
        if not self._geo_stale() or not self._geo_endpoint_healthy():
            return set()  # closing for another reason (failure, shutdown): restore all, as kombu does
        state = sys.modules.get("celery.worker.state")
        if state is None:
            return set()
        tags = set(delivered)
        keep: set[str] = set()
        for request in list(state.active_requests):
            message = getattr(request, "message", None)
            if message is None or getattr(message, "channel", None) is not self or message.delivery_tag not in tags:
                continue
            if request.acknowledged or not request.task.acks_late:
                continue
            if request.app.conf.worker_cancel_long_running_tasks_on_connection_loss:
                return set()  # Celery cancels them: restore so that they run again
            keep.add(message.delivery_tag)
        return keep

    def _geo_rescue(self, message: Any, exc: BaseException) -> None:
        """Re-queue on the active endpoint a message whose unacked record could not be written."""
        engine = self._geo.engine
        generation = engine.generation
        raw = message._raw
        info = message.delivery_info or {}
        try:
            if engine.active == self._geo_endpoint:
                engine.confirm(generation)
            target = engine.active
            if target is None:
                raise NoHealthyEndpointError(f"geofailover[{engine.name}]: no healthy endpoint")
            client = endpoint_client(engine, target)
            queues = self._geo_lookup_on(client, info.get("exchange") or "", info.get("routing_key") or "")
            if not queues:
                raise LookupError(f"no queue bound to exchange {info.get('exchange')!r} on {target}")
            priority = self._get_message_priority(raw, reverse=False)
            with client.pipeline() as pipe:
                for queue in queues:
                    pipe.rpush(self.global_keyprefix + self._q_for_pri(queue, priority), dumps(raw))
                pipe.execute()
        except Exception as err:  # noqa: BLE001 - logged loudly, then the original error propagates
            logger.error(
                "geofailover[%s]: message %s was taken from %s, which failed before it could be recorded (%s), "
                "and could not be re-queued elsewhere (%s); it runs again only if its producer re-sends it",
                engine.name, message.delivery_tag, self._geo_endpoint, mask_text(str(exc)), mask_text(f"{type(err).__name__}: {err}"),
            )
            return
        logger.warning(
            "geofailover[%s]: message %s was taken from %s, which failed before it could be recorded (%s); re-queued on %s",
            engine.name, message.delivery_tag, self._geo_endpoint, mask_text(str(exc)), target,
        )

    def _geo_lookup_on(self, client: redis.Redis, exchange: str, routing_key: str) -> list[str]:
        """kombu's ``_lookup`` against the binding tables of ``client``'s endpoint.

        Falls back on the bindings this process declared itself (kombu keeps
        them in memory too): nobody may have declared them on that endpoint yet.
        """
        if not exchange:
            return [routing_key] if routing_key else []
        members = client.smembers(self.global_keyprefix + self.keyprefix_queue % exchange)
        table = [tuple(bytes_to_str(value).split(self.sep)) for value in members]
        if not table:
            table = list(self.state.exchanges.get(exchange, {}).get("table") or [])
        return sorted(self.typeof(exchange).lookup(table, exchange, routing_key, None) or [])

    # -- draining -----------------------------------------------------------------------

    def _geo_drain(self, queues: list[str]) -> int:
        """Move messages of ``queues`` from healthy non-active endpoints to ours."""
        engine = self._geo.engine
        total = 0
        for source in other_endpoints(engine, self._geo_endpoint, require_healthy=True):
            moved = self._geo_drain_from(source, queues)
            if moved:
                logger.info(
                    "geofailover[%s]: moved %d message(s) of %s from %s to the active endpoint %s",
                    engine.name, moved, ", ".join(queues), source, self._geo_endpoint,
                )
            total += moved
        return total

    def _geo_drain_from(self, source: str, queues: list[str]) -> int:
        src = endpoint_client(self._geo.engine, source)
        prefix = self.global_keyprefix
        keys: list[tuple[str, str]] = []
        for pri in self.priority_steps:
            for queue in queues:
                key = self._q_for_pri(queue, pri)
                if (key, queue) not in keys:
                    keys.append((key, queue))
        ceil = time.time() - self.visibility_timeout
        tag_prefix = f"{DRAIN_TAG}{uuid.uuid4().hex}-"
        _staged, visible = src.eval(
            _DRAIN_LUA, 2 + len(keys),
            prefix + self.unacked_index_key, prefix + self.unacked_key, *(prefix + key for key, _ in keys),
            self._geo.options["drain_batch"], tag_prefix, *(queue for _, queue in keys), ceil,
        )  # fmt: skip
        if not int(visible):
            return 0
        return self._geo_restore_from(src, ceil)

    def _geo_restore_from(self, src: redis.Redis, ceil: float) -> int:
        """Push the visible unacked entries of ``src`` into our endpoint, then forget them there.

        Under the source's ``unacked_mutex`` (kombu's own lock for restores),
        so two workers never move the same entry.
        """
        prefix = self.global_keyprefix
        index, table = prefix + self.unacked_index_key, prefix + self.unacked_key
        dest = redis.Redis(connection_pool=self.pool)
        try:
            with kombu_redis.Mutex(src, prefix + self.unacked_mutex_key, self.unacked_mutex_expire):
                tags = [bytes_to_str(t) for t in src.zrange(index, "-inf", ceil, byscore=True, offset=0, num=self._geo.options["drain_batch"])]
                if not tags:
                    return 0
                pushes: list[tuple[str, str]] = []
                done: list[str] = []
                for tag, raw in zip(tags, src.hmget(table, tags), strict=True):
                    if raw is None:  # a stale index entry: just drop it
                        done.append(tag)
                        continue
                    payload, exchange, routing_key = loads(bytes_to_str(raw))
                    targets = self._lookup(exchange, routing_key)
                    if not targets:
                        logger.warning(
                            "geofailover[%s]: no queue for exchange %r routing key %r on %s; message left where it is",
                            self._geo.engine.name, exchange, routing_key, self._geo_endpoint,
                        )
                        continue
                    if not tag.startswith(DRAIN_TAG):  # a delivery that was never acknowledged
                        try:
                            payload["headers"]["redelivered"] = True
                            payload["properties"]["delivery_info"]["redelivered"] = True
                        except (KeyError, TypeError):
                            pass
                    priority = self._get_message_priority(payload, reverse=False)
                    body = dumps(payload)
                    pushes.extend((prefix + self._q_for_pri(queue, priority), body) for queue in targets)
                    done.append(tag)
                if pushes:
                    with dest.pipeline(transaction=False) as pipe:
                        for key, body in reversed(pushes):  # oldest ends at the tail: consumed first
                            pipe.rpush(key, body)
                        pipe.execute()
                if done:
                    with src.pipeline() as pipe:
                        pipe.zrem(index, *done)
                        pipe.hdel(table, *done)
                        pipe.execute()
                return len(done)
        except kombu_redis.MutexHeld:
            return 0


class GeoPoller(kombu_redis.MultiChannelPoller):  # type: ignore[misc]
    """kombu's poller; without an event loop (``drain_events``) it also runs the switch check and draining."""

    def __init__(self, transport: Transport) -> None:
        super().__init__()
        self._geo_transport = weakref.ref(transport)

    def get(self, callback: Callable[..., Any], timeout: float | None = None) -> Any:
        transport = self._geo_transport()
        if transport is not None:
            transport._geo_tick()
        return super().get(callback, timeout)


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    """``geofailover://`` broker transport (see the module docstring)."""

    Channel = GeoChannel
    can_parse_url = True
    connection_errors = (*kombu_redis.Transport.connection_errors, EndpointSwitched)
    channel_errors = kombu_redis.Transport.channel_errors

    def __init__(self, client: Any, **kwargs: Any) -> None:
        self._geo = resolve(client.alt or client.hostname, client.transport_options.get("geofailover"), "broker")
        # kombu treats a ';' URL as its own failover list and would re-parse the
        # next chunk on errors (it cannot take our name/weight keys). The
        # engine decides where to connect, so kombu must not switch URLs.
        client.cycle = None
        super().__init__(client, **kwargs)
        self.cycle = GeoPoller(self)  # type: ignore[assignment]
        self._geo_tref: Any = None
        self._geo_next_drain = 0.0
        self._geo_drain_generation = -1
        self._geo_closed = False
        self._geo_announced = False
        signals.bridge(self._geo.engine)

    @property
    def engine(self) -> Any:
        """The failover engine this transport follows."""
        return self._geo.engine

    def as_uri(self, uri: str, include_password: bool = False, mask: str = "**") -> str:
        """Every endpoint with its name and weight, passwords masked (banner, log lines)."""
        return self._geo.as_uri(include_password=include_password)

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        super().register_with_event_loop(connection, loop)
        ref = weakref.ref(self)

        def tick() -> None:
            transport = ref()
            if transport is not None:
                transport._geo_tick()

        self._geo_tref = loop.call_repeatedly(self._geo.options["switch_check_interval"], tick)

    def close_connection(self, connection: Any) -> None:
        self._geo_closed = True
        if self._geo_tref is not None:
            self._geo_tref.cancel()
            self._geo_tref = None
        super().close_connection(connection)

    def _geo_tick(self) -> None:
        """Raise :class:`EndpointSwitched` when a channel's endpoint is no longer active; drain when due."""
        if self._geo_closed:
            return
        channels = [c for c in list(self.channels) if not c.closed]
        for channel in channels:
            if channel._geo_stale():
                message = channel._geo_switch_message()
                logger.warning("%s (consumer)", message)
                raise EndpointSwitched(message)
        self._geo_maybe_drain(channels)

    def _geo_maybe_drain(self, channels: list[GeoChannel]) -> None:
        options = self._geo.options
        if not options["drain"]:
            return
        now = time.monotonic()
        generation = self._geo.engine.generation
        if now < self._geo_next_drain and generation == self._geo_drain_generation:
            return
        self._geo_next_drain = now + options["drain_interval"]
        self._geo_drain_generation = generation
        consumers = [c for c in channels if c.active_queues]
        if not consumers:
            return
        queues = sorted({q for c in consumers for q in c.active_queues})
        try:
            consumers[0]._geo_drain(queues)
        except Exception as exc:  # noqa: BLE001 - a failed round is retried next interval; the consumer goes on
            logger.warning("geofailover[%s]: draining failed, retrying in %gs: %s",
                           self._geo.engine.name, options["drain_interval"], mask_text(f"{type(exc).__name__}: {exc}"))
