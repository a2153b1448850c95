"""The per-engine control plane: reads operators' overrides and publishes this
process's heartbeat, on a thread of its own woken after every probe round.

It attaches to an engine from above (:func:`attach_control_plane`, called by
the registry when the configuration has ``control_plane`` on) through the
engine's round and close hooks; the engine knows it only as its ``control``
slot.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any

import redis

from ..config import FailoverConfig
from ..connection import direct_client, probe_params
from ..endpoint import EndpointState
from ..engine import FailoverEngine
from ..errors import UnhealthyEndpointError, UnknownEndpointError
from ..forking import after_fork_in_child
from ..health import HealthStatus
from .records import (
    HOST,
    MAX_CLOCK_SKEW,
    MAX_HEARTBEAT_BYTES,
    MAX_NOTE,
    MAX_RECORD_BYTES,
    MAX_TEXT,
    TARGETED,
    Copy,
    FleetEntry,
    Heartbeat,
    InvalidHeartbeat,
    Override,
    clip,
    heartbeat_ttl,
    newest_copy,
    parse_copy,
    server_time,
)

logger = logging.getLogger("geofailover")

# Store an override copy unless the endpoint already holds a newer one
# (compare-and-set by (at, id)), stamping it with the endpoint's clock minus
# the record's known age so that every copy ages on a server clock. What is
# stored there does not count as newer when it is not a sane record (another
# type, too large, no finite ``at`` within the skew bound), when it is exactly
# the rejected record the caller read (ARGV[5], its SHA-1), or when the caller
# overwrites whatever is there (ARGV[5] = '*': ``failback --force``, ``override clear``).
# ARGV: record, at, id, age, replace, max bytes, max skew.
_STORE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if ARGV[5] ~= '*' and redis.call('TYPE', KEYS[1])['ok'] == 'string'
    and redis.call('STRLEN', KEYS[1]) <= tonumber(ARGV[6]) then
  local cur = redis.call('GET', KEYS[1])
  if redis.sha1hex(cur) ~= ARGV[5] then
    local ok, old = pcall(cjson.decode, cur)
    if ok and type(old) == 'table' and type(old['at']) == 'number' then
      local at, new_at = old['at'], tonumber(ARGV[2])
      if at == at and at <= now + tonumber(ARGV[7]) then
        local old_id = tostring(old['id'])
        if at == new_at and old_id == ARGV[3] then
          return 2
        end
        if at > new_at or (at == new_at and old_id > ARGV[3]) then
          return 0
        end
      end
    end
  end
end
redis.call('SET', KEYS[1], string.sub(ARGV[1], 1, -2) .. ',"stored_at":' .. string.format('%.6f', now - tonumber(ARGV[4])) .. '}')
return 1
"""


_instances: weakref.WeakSet[ControlPlane] = weakref.WeakSet()


class ControlPlane:
    """Per-engine control plane (see :func:`attach_control_plane`); ``sync()`` runs
    on the control thread after every monitor round."""

    def __init__(self, engine: FailoverEngine) -> None:
        self.engine = engine
        prefix = f"{engine.config.control_key_prefix}:{engine.name}"
        self.override_key = f"{prefix}:override"
        self.fleet_key = f"{prefix}:fleet"
        self._observer = False
        self._closed = False
        self._offsets: dict[str, float] = {}
        self._applied: Override | None = None
        self._note: str | None = None
        self._expiry: tuple[str, float] | None = None  # (endpoint, monotonic deadline) of a timed failover
        self._warned: set[str] = set()
        self._rounds = 0
        self._syncs = 0
        self._next_prune = random.randint(5, 60)
        self._after_fork()
        _instances.add(self)
        self._observer = engine.observer
        engine.add_round_hook(self._on_round)
        engine.add_close_hook(lambda _engine: self.close())
        engine.control = self

    def _after_fork(self) -> None:
        # Locks held by a parent thread at fork() time stay held in the child;
        # the parent's sockets are the parent's.
        self._clients: dict[str, redis.Redis] = {}
        self._dbs: dict[str, int] = {}
        self._lock = threading.RLock()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pending = False
        self._stopping = False
        self._written_to: set[str] = set()

    # -- settings ----------------------------------------------------------------

    @property
    def observer(self) -> bool:
        """An observer (a CLI or management command) reads and publishes overrides but
        is not part of the serving fleet: it sends no heartbeat and applies nothing
        on its own."""
        return self._observer

    @observer.setter
    def observer(self, value: bool) -> None:
        self._observer = bool(value)
        if value:
            self._forget_heartbeat()

    @property
    def heartbeat_ttl(self) -> float:
        return heartbeat_ttl(self.engine.config.probe_interval)

    @property
    def syncs(self) -> int:
        """How many syncs this process has completed (tests count them instead of sleeping)."""
        return self._syncs

    @property
    def applied(self) -> Override | None:
        """The newest override this process has acted on."""
        return self._applied

    # -- the control thread --------------------------------------------------------

    def _on_round(self, engine: FailoverEngine) -> None:
        if self._observer or self._closed:
            return
        with self._cond:
            if self._stopping:
                return
            self._pending = True
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=f"geofailover-control[{engine.name}]", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                self._pending = False
            try:
                self.sync()
            except Exception:  # the control thread must outlive any bug in one sync
                logger.exception("geofailover[%s]: control-plane sync failed", self.engine.name)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the control thread and remove this process's heartbeat, so ``status``
        stops listing a process that exited cleanly."""
        with self._cond:
            self._closed = True
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._forget_heartbeat()
        clients, self._clients = self._clients, {}
        for client in clients.values():
            client.connection_pool.disconnect()

    # -- sync: the per-interval work -------------------------------------------------

    def sync(self) -> None:
        """Read the override (apply it if newer and not yet applied), write our heartbeat."""
        engine = self.engine
        if engine.closed or self._observer:
            return
        self._rounds += 1
        self._expire_timed_failover()
        active = engine.active_endpoint()
        copies: list[Copy] = []
        wrote: str | None = None
        for ep in self._readable(include=active):
            beat = self.heartbeat(ep.name) if ep is active and ep.name in self._offsets else None
            copy = self._exchange(ep, beat)
            copies.append(copy)
            if beat is not None and copy.error is None:
                wrote = ep.name
        newest = newest_copy(copies)
        changed = False
        if newest is not None and newest.override is not None:
            self._repair(newest, copies)
            changed = self._consider(newest.override, newest.age or 0.0)
        now_active = engine.active_endpoint()
        failed = {c.endpoint for c in copies if c.error is not None}
        if now_active is not None and now_active.name not in failed and (changed or wrote != now_active.name):
            self._write_heartbeat(now_active)
        if self._rounds >= self._next_prune and now_active is not None:
            self._prune(now_active)
        self._syncs += 1

    def _readable(self, include: EndpointState | None = None) -> list[EndpointState]:
        """Endpoints worth a round trip now: the last probe found them healthy (a
        dead one would cost a timeout on every sync), plus ``include``."""
        return [
            ep
            for ep in self.engine.states()
            if ep is include or ep.answering()
        ]

    def _client(self, ep: EndpointState) -> redis.Redis:
        """The client of ``ep``'s control database (see :meth:`database`)."""
        client = self._clients.get(ep.name)
        if client is None:
            with self._lock:
                client = self._clients.get(ep.name)
                if client is None:
                    client = self._connect(ep, self.database(ep))
                    if ep.name in self._dbs:  # the database is known: keep it (else ask again next time)
                        self._clients[ep.name] = client
        return client

    def database(self, ep: EndpointState) -> int:
        """Where the control keys live on ``ep``: ``control_db``, or by default
        database 15 (14 when the application uses 15), so the application's
        ``KEYS``/``SCAN``/``FLUSHDB`` never meet them; the application's own
        database on a server that has only one (Redis Software, Redis Cloud)."""
        db = self._dbs.get(ep.name)
        if db is None:
            configured = self.engine.config.control_db
            app_db = _app_db(self.engine.config, ep)
            db = configured if configured is not None else (15 if app_db != 15 else 14)
        return db

    def _connect(self, ep: EndpointState, db: int) -> redis.Redis:
        conn_class, kwargs = probe_params(self.engine.config, ep.config)
        kwargs["db"] = db
        client = direct_client(conn_class, kwargs, max_connections=4)
        try:
            client.ping()  # connects and SELECTs: refused where the server has one database
        except redis.exceptions.ResponseError as exc:
            if not _one_database(exc):
                raise
            app_db = _app_db(self.engine.config, ep)
            logger.info(
                "geofailover[%s]: %s has no database %d (%s); the control-plane keys %s* share the application's database %d",
                self.engine.name, ep.name, db, exc, self.override_key.rsplit(":", 1)[0], app_db,
            )
            client.connection_pool.disconnect()
            kwargs["db"] = app_db
            client = direct_client(conn_class, kwargs, max_connections=4)
            self._dbs[ep.name] = app_db
        except (redis.RedisError, OSError):
            pass  # unreachable now: the first command reports it (and the next call asks again)
        else:
            self._dbs[ep.name] = db
        return client

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key in self._warned:
            logger.debug(message, *args)
        else:
            self._warned.add(key)
            logger.warning(message, *args)

    def _ok(self, key: str) -> None:
        self._warned.discard(key)

    def _error(self, ep: EndpointState, exc: BaseException) -> str:
        return ep.mask(f"{type(exc).__name__}: {exc}")

    def _exchange(self, ep: EndpointState, beat: Heartbeat | None) -> Copy:
        """One pipelined round trip: the endpoint's clock, its override copy (at most
        one byte beyond the cap, so an oversized record costs nobody more) and, on
        the active endpoint, our heartbeat."""
        pipe = self._client(ep).pipeline(transaction=False)
        pipe.time()
        pipe.getrange(self.override_key, 0, MAX_RECORD_BYTES)
        if beat is not None:
            pipe.hset(self.fleet_key, beat.key, beat.to_json())
            pipe.pexpire(self.fleet_key, self._fleet_expiry_ms())
        started = time.time()
        try:
            replies = pipe.execute(raise_on_error=False)
        except (redis.RedisError, OSError) as exc:
            # Connectivity is the health monitor's to report; this would only repeat it.
            error = self._error(ep, exc)
            logger.debug("geofailover[%s]: control plane cannot reach %s: %s", self.engine.name, ep.name, error)
            return Copy(ep.name, error=error)
        finished = time.time()
        wrong = [i for i, reply in enumerate(replies) if _wrong_type(reply)]
        if 2 in wrong:  # the fleet key is not a hash: ours to repair, or nobody could report
            self._warn_once(f"type:{ep.name}", "geofailover[%s]: %s on %s is not a hash; replacing it", self.engine.name, self.fleet_key, ep.name)
            with contextlib.suppress(redis.RedisError, OSError):
                self._client(ep).delete(self.fleet_key)
        for i, reply in enumerate(replies):
            if isinstance(reply, Exception) and i not in wrong:
                error = self._error(ep, reply)
                hint = f" (check the ACL for keys {self.override_key.rsplit(':', 1)[0]}*)" if isinstance(reply, redis.exceptions.NoPermissionError) else ""
                self._warn_once(
                    f"io:{ep.name}", "geofailover[%s]: control-plane command refused by %s: %s%s", self.engine.name, ep.name, error, hint,
                )
                return Copy(ep.name, error=error)
        self._ok(f"io:{ep.name}")
        if beat is not None and 2 not in wrong:
            self._written_to.add(ep.name)
        server_now = server_time(replies[0])
        self._offsets[ep.name] = (started + finished) / 2 - server_now
        if 1 in wrong:
            return self._rejected(ep, "malformed override record: the key holds another type than a string", None, server_now)
        return self._parse_copy(ep, replies[1], server_now)

    def _parse_copy(self, ep: EndpointState, raw: bytes | str, server_now: float) -> Copy:
        if not raw:
            self._ok(f"bad:{ep.name}")
            return Copy(ep.name, server_now=server_now)
        data = raw.encode() if isinstance(raw, str) else raw
        try:
            override, stored_at = parse_copy(data, server_now)
        except ValueError as exc:
            digest = hashlib.sha1(data).hexdigest() if len(data) <= MAX_RECORD_BYTES else None
            return self._rejected(ep, str(exc), digest, server_now)
        self._ok(f"bad:{ep.name}")
        # Written without the store script (no stored_at): fall back to the writer's clock.
        age = max(0.0, server_now - stored_at) if stored_at is not None else max(0.0, time.time() - override.at)
        return Copy(ep.name, override, age, server_now=server_now)

    def _rejected(self, ep: EndpointState, why: str, digest: str | None, server_now: float) -> Copy:
        self._warn_once(f"bad:{ep.name}", "geofailover[%s]: ignoring the override record on %s: %s", self.engine.name, ep.name, why)
        return Copy(ep.name, invalid=why, digest=digest, server_now=server_now)

    def _fleet_expiry_ms(self) -> int:
        # The hash outlives every heartbeat in it; it vanishes once the whole fleet is gone.
        return int(max(3 * self.heartbeat_ttl, 60.0) * 1000)

    def heartbeat(self, endpoint: str | None = None) -> Heartbeat:
        """This process's heartbeat as it would publish it now (``status`` run inside a
        serving process lists the process itself even before its first write)."""
        engine = self.engine
        status = engine.status()
        hold = status["hold"]
        if hold is not None and hold["reason"]:
            hold = {**hold, "reason": clip(hold["reason"], MAX_NOTE)}
        last = status["last_event"]
        if last is not None:
            last = {
                "kind": last["kind"], "from_endpoint": last.get("from_endpoint"), "to_endpoint": last.get("to_endpoint"),
                "reason": clip(str(last.get("reason") or ""), 64) or None, "detail": clip(last.get("detail") or "", MAX_NOTE),
                "timestamp": last["timestamp"],
            }
        applied = self._applied
        offset = self._offsets.get(endpoint or "", next(iter(self._offsets.values()), 0.0))
        beat = Heartbeat(
            host=clip(HOST, MAX_TEXT),
            pid=os.getpid(),
            config=engine.name,
            app=clip(engine.config.app_label, MAX_TEXT),
            active=status["active"],
            since=status["active_since"],
            pinned=hold["endpoint"] if hold and hold["pinned"] else None,
            hold=hold,
            version=_version(),
            last_failover=last,
            at=time.time(),
            ttl=self.heartbeat_ttl,
            clock_offset=round(offset, 6),
            override=applied.id if applied else None,
            note=None if self._note is None else clip(self._note, MAX_NOTE),
            override_at=applied.at if applied else None,
            view={e["name"]: [e["health"], e["breaker"]] for e in status["endpoints"]},
        )
        if len(beat.to_json().encode()) > MAX_HEARTBEAT_BYTES:
            beat = beat.compact()
        return beat

    def _write_heartbeat(self, ep: EndpointState) -> None:
        """Publish our heartbeat on ``ep`` now (after a switch: on the new active endpoint)."""
        if ep.name not in self._offsets:
            self._exchange(ep, None)  # learn the endpoint's clock first
        self._exchange(ep, self.heartbeat(ep.name))

    def _forget_heartbeat(self) -> None:
        written, self._written_to = self._written_to, set()
        key = f"{HOST}:{os.getpid()}"
        for ep in self.engine.states():
            if ep.name not in written:
                continue
            try:
                self._client(ep).hdel(self.fleet_key, key)
            except (redis.RedisError, OSError) as exc:
                logger.debug("geofailover[%s]: could not remove heartbeat from %s: %s", self.engine.name, ep.name, self._error(ep, exc))

    # -- overrides: deciding and applying --------------------------------------------

    def _consider(self, override: Override, age: float) -> bool:
        """Apply ``override`` if it is newer than what we acted on; True if state changed."""
        with self._lock:
            applied = self._applied
            if applied is not None and override.order <= applied.order:
                return False
            if applied is None and not self._fleet_still_holds(override, age):
                self._applied = override
                self._note = "not followed: the fleet has dropped this override (its target failed earlier); automatic rules apply"
                logger.info(
                    "geofailover[%s]: not following the standing override (%s): no running process holds it any more",
                    self.engine.name, override.describe(),
                )
                return True
            return self._apply_locked(override, age)

    def _fleet_still_holds(self, override: Override, age: float) -> bool:
        """For a process that starts while a failover or pin is on record: join it only if
        it is fresh (the fleet may not have applied it yet), nobody else is running, or
        some running process still holds it. Otherwise the operator's target failed
        since and the fleet went back to automatic rules; following the stale record
        would split the fleet."""
        if override.action not in TARGETED or age < self.heartbeat_ttl:
            return True
        me = f"{HOST}:{os.getpid()}"
        peers = [e.heartbeat for e in self._read_fleet(self._readable()) if e.heartbeat.key != me]
        if not peers:
            return True
        return any(
            hb.override == override.id and hb.hold is not None and hb.hold.get("endpoint") == override.endpoint for hb in peers
        )

    def apply(self, override: Override, age: float = 0.0) -> str | None:
        """Act on ``override`` in this process now, as its control thread would next
        round (a command run inside a serving process); returns the note explaining
        why it was not followed, or None. An observer applies nothing."""
        if self._observer:
            return None
        with self._lock:
            if self._applied is None or override.order > self._applied.order:
                self._apply_locked(override, age)
            return self._note

    def _apply_locked(self, override: Override, age: float) -> bool:
        # Every field was validated and size-capped when the record was parsed: the
        # engine's string work on the reason (masking, outside its lock) is bounded.
        engine = self.engine
        why = f"{override.reason} (fleet override by {override.who})" if override.reason else f"fleet override by {override.who}"
        remaining = None if override.duration is None else override.duration - age
        note: str | None = None
        if override.action != "clear":  # a cleared record leaves this process as it is
            self._expiry = None
        try:
            if remaining is not None and remaining <= 0:
                note = f"{override.action} had already lapsed when it arrived"
                if self._applied is not None:
                    engine.unpin()
            elif override.action == "failover":
                assert override.endpoint is not None
                engine.failover_to(override.endpoint, force=override.force, reason=why)
                if remaining is not None:
                    self._expiry = (override.endpoint, time.monotonic() + remaining)
            elif override.action == "pin":
                assert override.endpoint is not None
                engine.pin(override.endpoint, duration=remaining, force=override.force, reason=why)
            elif override.action == "failback":
                engine.failback()
            elif override.action == "unpin":
                engine.unpin()
        except UnknownEndpointError:
            note = f"not followed: this process has no endpoint named {override.endpoint!r} (configurations differ)"
        except UnhealthyEndpointError:
            target = engine.endpoint(override.endpoint or "")
            detail = f"{override.endpoint} is {target.health} from here (breaker {target.breaker_state}): {target.health_detail}"
            if override.action == "pin":
                # A pin is sticky by definition: keep it pending and retry every round.
                if self._note != f"pin waiting: {detail}":
                    logger.warning("geofailover[%s]: fleet pin to %s is waiting: %s", engine.name, override.endpoint, detail)
                self._note = f"pin waiting: {detail}"
                return False
            note = f"not followed: {detail}"
        self._applied = override
        self._note = note
        if note:
            logger.warning("geofailover[%s]: fleet override %s: %s", engine.name, override.describe(), note)
        else:
            logger.info("geofailover[%s]: applied fleet override: %s", engine.name, override.describe())
        return True

    def _expire_timed_failover(self) -> None:
        """End a ``failover --for`` whose time is up (a pin's expiry is the engine's own)."""
        expiry = self._expiry
        if expiry is None or time.monotonic() < expiry[1]:
            return
        with self._lock:
            if self._expiry is not expiry:  # a newer record replaced it meanwhile
                return
            self._expiry = None
            hold = self.engine.hold()
            if hold is not None and not hold["pinned"] and hold["endpoint"] == expiry[0]:
                logger.info("geofailover[%s]: fleet failover to %s lapsed; automatic rules resume", self.engine.name, expiry[0])
                self.engine.unpin()

    # -- overrides: reading and writing ------------------------------------------------

    def _store(self, ep: EndpointState, override: Override, age: float, replace: str = "") -> int:
        """1 stored, 2 already there, 0 a newer record is stored there. ``replace``: the
        SHA-1 of a rejected record to overwrite, or ``*`` to overwrite whatever is there."""
        client = self._client(ep)
        record = override.to_json()
        try:
            result = client.eval(
                _STORE_SCRIPT, 1, self.override_key, record, repr(override.at), override.id, repr(age), replace,
                str(MAX_RECORD_BYTES), repr(MAX_CLOCK_SKEW),
            )
        except redis.exceptions.ResponseError as exc:
            text = str(exc).lower()
            # A key this user may only read (the operators' ACL keeps the record out of the
            # applications' reach) is not ours to write; a refused EVAL command is.
            if not ("unknown command" in text or "noscript" in text or "'eval'" in text):
                raise
            # Scripting unavailable here: a plain SET (the newest write wins by arrival).
            self._warn_once(f"eval:{ep.name}", "geofailover[%s]: EVAL refused by %s (%s); storing the override with SET", self.engine.name, ep.name, exc)
            client.set(self.override_key, record)
            return 1
        return int(result)

    def _repair(self, newest: Copy, copies: list[Copy]) -> None:
        """Give the newest record to reachable endpoints that lack it (one that was down
        or restarted empty when the operator wrote, or holds a rejected record), so
        every copy converges."""
        assert newest.override is not None
        for copy in copies:
            if copy.error is not None or (copy.override is not None and copy.override.order >= newest.override.order):
                continue
            ep = self.engine.endpoint(copy.endpoint)
            try:
                if self._store(ep, newest.override, newest.age or 0.0, copy.digest or "") == 1:
                    logger.info("geofailover[%s]: copied the current override to %s (it had %s)", self.engine.name, ep.name,
                                "an older one" if copy.override else "a rejected one" if copy.invalid else "none")
            except (redis.RedisError, OSError) as exc:
                logger.debug("geofailover[%s]: override repair on %s failed: %s", self.engine.name, ep.name, self._error(ep, exc))

    def publish(self, override: Override, copies: Iterable[Copy] = (), *, overwrite: bool = False) -> tuple[list[str], dict[str, str]]:
        """Write ``override`` to every reachable endpoint; (written, failed). A rejected
        record seen in ``copies`` is replaced; ``overwrite`` replaces even a newer one."""
        replace = {c.endpoint: c.digest for c in copies if c.invalid is not None and c.digest}
        written: list[str] = []
        failed: dict[str, str] = {}
        for ep in self.engine.states():
            try:
                result = self._store(ep, override, 0.0, "*" if overwrite else replace.get(ep.name, ""))
            except (redis.RedisError, OSError) as exc:
                failed[ep.name] = self._error(ep, exc)
                continue
            if result:
                written.append(ep.name)
            else:
                failed[ep.name] = "a newer override is already stored there (another operator acted meanwhile; --force overwrites it)"
        return written, failed

    def _read_copies(self, endpoints: Iterable[EndpointState]) -> list[Copy]:
        return [self._exchange(ep, None) for ep in endpoints]

    def read_copies(self) -> list[Copy]:
        """Every reachable endpoint's copy of the override record (or its read error,
        or why it was rejected)."""
        return self._read_copies(self._known_reachable())

    def read_override(self) -> Override | None:
        """Latest valid override across reachable endpoints (by ``at``), or None."""
        newest = newest_copy(self._read_copies(self._known_reachable()))
        return newest.override if newest is not None else None

    def _known_reachable(self) -> list[EndpointState]:
        """Every endpoint the last probe did not find down (readers outside the monitor)."""
        return [ep for ep in self.engine.states() if ep.health is not HealthStatus.UNHEALTHY]

    # -- the fleet ---------------------------------------------------------------------

    def _read_fleet(
        self, endpoints: Iterable[EndpointState], unreachable: dict[str, str] | None = None,
        invalid: list[InvalidHeartbeat] | None = None,
    ) -> list[FleetEntry]:
        """Live heartbeats, newest per process, across ``endpoints``. A fleet member
        prunes expired and invalid entries; an observer reports invalid ones (``invalid``)
        and leaves them for the fleet's housekeeping, so two ``status`` runs agree."""
        newest: dict[str, FleetEntry] = {}
        for ep in endpoints:
            client = self._client(ep)
            pipe = client.pipeline(transaction=False)
            pipe.time()
            pipe.hgetall(self.fleet_key)
            try:
                clock, entries = pipe.execute()
            except (redis.RedisError, OSError) as exc:
                if unreachable is not None:
                    unreachable[ep.name] = self._error(ep, exc)
                continue
            server_now = server_time(clock)
            expired: list[bytes] = []
            for field, raw in entries.items():
                try:
                    hb = Heartbeat.from_json(raw)
                    age = server_now - (hb.at - hb.clock_offset)
                    if age < -MAX_CLOCK_SKEW:
                        raise ValueError(f"malformed heartbeat: written {-age:.0f}s ahead of the endpoint's clock")
                except ValueError as exc:
                    expired.append(field)
                    if invalid is not None:
                        invalid.append(InvalidHeartbeat(clip(field.decode("utf-8", "replace"), 100), ep.name, str(exc)))
                    continue
                if age > 2 * hb.ttl:
                    expired.append(field)
                if age > hb.ttl:
                    continue
                seen = newest.get(hb.key)
                if seen is None or hb.at > seen.heartbeat.at:
                    newest[hb.key] = FleetEntry(hb, max(0.0, age), ep.name)
            if expired and not self._observer:
                with contextlib.suppress(redis.RedisError, OSError):
                    client.hdel(self.fleet_key, *expired)
        return sorted(newest.values(), key=lambda e: (e.heartbeat.host, e.heartbeat.pid))

    def fleet(self) -> list[Heartbeat]:
        """Live heartbeats (not expired) merged across reachable endpoints, newest per process."""
        return [e.heartbeat for e in self._read_fleet(self._known_reachable())]

    def fleet_entries(self, unreachable: dict[str, str] | None = None, invalid: list[InvalidHeartbeat] | None = None) -> list[FleetEntry]:
        """Like :meth:`fleet`, with each heartbeat's age and the endpoint it was read from."""
        return self._read_fleet(self._known_reachable(), unreachable, invalid)

    def _prune(self, ep: EndpointState) -> None:
        """Housekeeping: drop dead processes' heartbeats even if nobody runs ``status``.
        Spread so that the whole fleet prunes about once a minute."""
        live = self._read_fleet([ep])
        self._rounds = 0
        self._next_prune = random.randint(30, 90) * max(1, len(live))


def _wrong_type(reply: Any) -> bool:
    return isinstance(reply, redis.exceptions.ResponseError) and str(reply).startswith("WRONGTYPE")


def _version() -> str:
    from .. import __version__

    return __version__


def _app_db(config: FailoverConfig, ep: EndpointState) -> int:
    _conn_class, kwargs = probe_params(config, ep.config)
    return int(kwargs.get("db") or 0)


def _one_database(exc: BaseException) -> bool:
    """The server refuses SELECT of any other database (a single-database server)."""
    text = str(exc).lower()
    return "out of range" in text or "select is not allowed" in text or "unknown command" in text


def attach_control_plane(engine: FailoverEngine) -> ControlPlane:
    """Give ``engine`` its control plane (once); the registry does this for
    every engine whose configuration has ``control_plane`` on."""
    plane = plane_of(engine)
    return plane if plane is not None else ControlPlane(engine)


def plane_of(engine: FailoverEngine) -> ControlPlane | None:
    """The control plane attached to ``engine``, if any."""
    plane = engine.control
    return plane if isinstance(plane, ControlPlane) else None


def _after_fork_in_child() -> None:
    for plane in list(_instances):
        plane._after_fork()


after_fork_in_child(_after_fork_in_child)


__all__ = ["ControlPlane", "attach_control_plane", "plane_of"]
