"""Fleet control plane: operator overrides and process heartbeats.

Why it exists: ``manage.py geofailover failover``, ``flask geofailover failover``
and ``geofailover failover`` each run in a new process, while the traffic is in
dozens of web and worker processes. So an operator action is written as an
*override record* to every reachable endpoint, and every process reads it each
interval and applies it locally through the engine's manual API
(``failover_to``/``pin``/``unpin``/``failback``). Each process also publishes a
small *heartbeat* with a TTL so ``status`` can list the fleet.

Keys (prefix = ``config.control_key_prefix``, name = ``config.name``):
    ``{prefix}:{name}:override``           the override record (JSON string)
    ``{prefix}:{name}:fleet``              a hash: field ``host:pid`` -> heartbeat JSON
                                             (one HSET per interval; expired entries are
                                             pruned by readers using the record's ``at`` +
                                             ``ttl``, so listing needs no SCAN of the keyspace)
Conflicting copies of the override on different endpoints resolve by ``at``
(latest wins). Disabled entirely with ``control_plane=False``.

Cost per process and health-check interval: one pipelined round trip to the
active endpoint (TIME, GET override, HSET heartbeat, PEXPIRE) and one to every
other healthy endpoint (TIME, GET override), on the monitor's existing probe
connections. The I/O runs on a control thread woken after each monitor round,
so a slow endpoint never delays failure detection or a command waiting for a
probe verdict.

Clock skew. Nothing here compares a record with the reader's own clock alone:

* ordering: a new override is stamped ``max(now, newest seen + 1 ms)``, so an
  operator whose clock is behind still supersedes what is stored;
* pin and ``--for`` expiry: the store script stamps each copy with the
  endpoint's own clock (``stored_at``), and readers measure a record's age on
  that same clock (``TIME``), so every process lapses it at the same moment
  whatever its own clock says;
* heartbeat age: each heartbeat carries its writer's offset to the endpoint's
  clock, so readers compute ages (and liveness) on the endpoint's clock and
  ``status`` can flag a host whose clock is off.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
import weakref
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import pybreaker
import redis

from .errors import ConfigurationError, UnhealthyEndpointError, UnknownEndpointError
from .health import HealthStatus

if TYPE_CHECKING:
    from .endpoint import EndpointState
    from .engine import FailoverEngine

logger = logging.getLogger("geofailover")

Action = Literal["failover", "failback", "pin", "unpin"]
ACTIONS: tuple[str, ...] = get_args(Action)

_HOST = socket.gethostname()
_RECORD_VERSION = 1
# A clock further than this from an endpoint's is flagged in status.
SKEW_WARNING = 1.0

# Store an override copy unless the endpoint already holds a newer one
# (compare-and-set by (at, id)), stamping it with the endpoint's clock minus
# the record's known age so that every copy ages on a server clock.
_STORE_SCRIPT = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, old = pcall(cjson.decode, cur)
  if ok and type(old) == 'table' and tonumber(old['at']) then
    local at, new_at = tonumber(old['at']), tonumber(ARGV[2])
    local old_id = tostring(old['id'])
    if at == new_at and old_id == ARGV[3] then
      return 2
    end
    if at > new_at or (at == new_at and old_id > ARGV[3]) then
      return 0
    end
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('SET', KEYS[1], string.sub(ARGV[1], 1, -2) .. ',"stored_at":' .. string.format('%.6f', now - tonumber(ARGV[4])) .. '}')
return 1
"""


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _opt_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"{key} must be a string or null, got {type(value).__name__}")


def _opt_num(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number or null, got {type(value).__name__}")
    return float(value)


def _num(data: dict[str, Any], key: str) -> float:
    value = _opt_num(data, key)
    if value is None:
        raise ValueError(f"{key} is missing")
    return value


def _str(data: dict[str, Any], key: str) -> str:
    value = _opt_str(data, key)
    if value is None:
        raise ValueError(f"{key} is missing")
    return value


def _load_object(text: str | bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(_text(text))
    except ValueError as exc:
        raise ValueError(f"malformed {what}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"malformed {what}: expected a JSON object")
    return data


@dataclass(frozen=True)
class Override:
    """An operator's instruction to the fleet."""

    id: str  # uuid4 hex; a process applies each id once
    action: Action
    endpoint: str | None  # target for failover/pin
    until: float | None  # wall-clock expiry of a pin or a timed failover (None: until the next action)
    reason: str | None
    who: str  # "user@host" of the operator
    at: float  # wall-clock time written; latest wins
    force: bool = False

    @property
    def order(self) -> tuple[float, str]:
        """Total order of records: by ``at``, ties broken by ``id`` (same rule as the store script)."""
        return (self.at, self.id)

    @property
    def duration(self) -> float | None:
        """Length of a timed pin/failover, from the writer's own clock (a difference, so skew-free)."""
        return None if self.until is None else self.until - self.at

    def describe(self) -> str:
        """One line for people: ``failover to eu-west by alice@ops1 for 10m ("maintenance")``."""
        what = {"failover": "failover to", "pin": "pin to", "failback": "failback", "unpin": "unpin"}[self.action]
        target = f" {self.endpoint}" if self.endpoint and self.action in ("failover", "pin") else ""
        span = f" for {format_duration(self.duration)}" if self.duration is not None else ""
        forced = " (forced)" if self.force else ""
        why = f' ("{self.reason}")' if self.reason else ""
        return f"{what}{target}{span}{forced} by {self.who}{why}"

    def to_json(self) -> str:
        data = {"v": _RECORD_VERSION, **asdict(self)}
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Override:
        """Parse a stored record. Unknown keys (a newer writer, ``stored_at``) are ignored."""
        data = _load_object(text, "override record")
        try:
            action = _str(data, "action")
            if action not in ACTIONS:
                raise ValueError(f"unknown action {action!r}")
            force = data.get("force", False)
            if not isinstance(force, bool):
                raise ValueError("force must be true or false")
            return cls(
                id=_str(data, "id"),
                action=action,  # type: ignore[arg-type]
                endpoint=_opt_str(data, "endpoint"),
                until=_opt_num(data, "until"),
                reason=_opt_str(data, "reason"),
                who=_str(data, "who"),
                at=_num(data, "at"),
                force=force,
            )
        except ValueError as exc:
            raise ValueError(f"malformed override record: {exc}") from None


@dataclass(frozen=True)
class Heartbeat:
    """What one process reports about itself each interval."""

    host: str
    pid: int
    config: str
    app: str  # config.app_label
    active: str | None
    since: float  # wall clock: active endpoint since
    pinned: str | None
    hold: dict[str, Any] | None  # engine.status()["hold"]
    version: str  # geofailover version
    last_failover: dict[str, Any] | None  # engine.status()["last_event"]
    at: float  # wall clock of this heartbeat
    ttl: float  # seconds this heartbeat stays valid (3 x health_check_interval, >= 3 s)
    clock_offset: float = 0.0  # this process's clock minus the endpoint's clock (seconds)
    override: str | None = None  # id of the last override this process has acted on
    note: str | None = None  # why that override was not (yet) followed here

    @property
    def key(self) -> str:
        return f"{self.host}:{self.pid}"

    def to_json(self) -> str:
        return json.dumps({"v": _RECORD_VERSION, **asdict(self)}, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Heartbeat:
        data = _load_object(text, "heartbeat")
        try:
            pid = data.get("pid")
            if isinstance(pid, bool) or not isinstance(pid, int):
                raise ValueError("pid must be an integer")
            for key in ("hold", "last_failover"):
                if data.get(key) is not None and not isinstance(data[key], dict):
                    raise ValueError(f"{key} must be an object or null")
            return cls(
                host=_str(data, "host"),
                pid=pid,
                config=_str(data, "config"),
                app=_opt_str(data, "app") or "",
                active=_opt_str(data, "active"),
                since=_num(data, "since"),
                pinned=_opt_str(data, "pinned"),
                hold=data.get("hold"),
                version=_opt_str(data, "version") or "?",
                last_failover=data.get("last_failover"),
                at=_num(data, "at"),
                ttl=_num(data, "ttl"),
                clock_offset=_opt_num(data, "clock_offset") or 0.0,
                override=_opt_str(data, "override"),
                note=_opt_str(data, "note"),
            )
        except ValueError as exc:
            raise ValueError(f"malformed heartbeat: {exc}") from None


@dataclass(frozen=True)
class ActionResult:
    """Outcome of a fleet-wide action, for the CLI's report and exit code."""

    override: Override
    written_to: list[str]  # endpoint names that stored the record
    failed: dict[str, str]  # endpoint name -> masked error
    moved: list[Heartbeat]  # processes whose heartbeat shows the requested state
    stragglers: list[Heartbeat]  # live processes that did not move before the deadline
    ok: bool  # written somewhere and no stragglers
    waited: float = 0.0  # seconds spent waiting for the fleet


@dataclass(frozen=True)
class _Copy:
    """One endpoint's answer to a read: its override copy and its clock."""

    endpoint: str
    override: Override | None = None
    age: float | None = None  # seconds since the record was first stored, on that endpoint's clock
    error: str | None = None  # masked; the endpoint could not be read


@dataclass(frozen=True)
class FleetEntry:
    """A live heartbeat with its age measured on the endpoint's clock."""

    heartbeat: Heartbeat
    age: float
    endpoint: str


def heartbeat_ttl(interval: float) -> float:
    """Three intervals (at least 3 s): one lost write never makes a live process look gone."""
    return max(3.0 * interval, 3.0)


def format_duration(seconds: float | None) -> str:
    """``0.4s``, ``12s``, ``3m12s``, ``2h05m``: short enough for a table cell."""
    if seconds is None:
        return "-"
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        minutes, secs = divmod(int(seconds), 60)
        return f"{minutes}m{secs:02d}s"
    hours, rest = divmod(int(seconds), 3600)
    if hours < 48:
        return f"{hours}h{rest // 60:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def default_who() -> str:
    """``user@host`` of whoever runs the command (environment first, as ``getpass`` does)."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in a container
        user = "unknown"
    return f"{user}@{_HOST}"


_instances: weakref.WeakSet[ControlPlane] = weakref.WeakSet()


class ControlPlane:
    """Per-engine control plane. Created by the engine when ``config.control_plane``;
    ``sync()`` runs on the control thread after every monitor round."""

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
        self._expiry: tuple[str, float] | None = None  # (override id, monotonic deadline) of a timed failover
        self._warned: set[str] = set()
        self._rounds = 0
        self._next_prune = random.randint(5, 60)
        self._after_fork()
        _instances.add(self)
        engine.round_hooks.append(self._on_round)

    def _after_fork(self) -> None:
        # Locks held by a parent thread at fork() time stay held in the child.
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
        return heartbeat_ttl(self.engine.config.health_check_interval)

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

    # -- sync: the per-interval work -------------------------------------------------

    def sync(self) -> None:
        """Read the override (apply it if newer and not yet applied), write our heartbeat."""
        engine = self.engine
        if engine.closed or self._observer:
            return
        self._rounds += 1
        self._expire_timed_failover()
        active = engine._active
        copies: list[_Copy] = []
        wrote: str | None = None
        for ep in self._readable(include=active):
            beat = self._heartbeat(ep.name) if ep is active and ep.name in self._offsets else None
            copy = self._exchange(ep, beat)
            copies.append(copy)
            if beat is not None and copy.error is None:
                wrote = ep.name
        newest = _newest(copies)
        changed = False
        if newest is not None and newest.override is not None:
            self._repair(newest, copies)
            changed = self._consider(newest.override, newest.age or 0.0)
        now_active = engine._active
        failed = {c.endpoint for c in copies if c.error is not None}
        if now_active is not None and now_active.name not in failed and (changed or wrote != now_active.name):
            self._write_heartbeat(now_active)
        if self._rounds >= self._next_prune and now_active is not None:
            self._prune(now_active)

    def _readable(self, include: EndpointState | None = None) -> list[EndpointState]:
        """Endpoints worth a round trip now: the last probe found them healthy (a
        dead one would cost a timeout on every sync), plus ``include``."""
        return [
            ep
            for ep in self.engine._states
            if ep is include or (ep.health is HealthStatus.HEALTHY and ep.breaker.current_state == pybreaker.STATE_CLOSED)
        ]

    def _client(self, ep: EndpointState) -> redis.Redis:
        return ep.probe_client(self.engine.config)

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

    def _exchange(self, ep: EndpointState, beat: Heartbeat | None) -> _Copy:
        """One pipelined round trip: the endpoint's clock, its override copy and,
        on the active endpoint, our heartbeat."""
        pipe = self._client(ep).pipeline(transaction=False)
        pipe.time()
        pipe.get(self.override_key)
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
            return _Copy(ep.name, error=error)
        finished = time.time()
        for reply in replies:
            if isinstance(reply, Exception):
                error = self._error(ep, reply)
                self._warn_once(
                    f"io:{ep.name}", "geofailover[%s]: control-plane command refused by %s: %s (check the ACL for keys %s*)",
                    self.engine.name, ep.name, error, self.override_key.rsplit(":", 1)[0],
                )
                return _Copy(ep.name, error=error)
        self._ok(f"io:{ep.name}")
        if beat is not None:
            self._written_to.add(ep.name)
        server_now = _server_time(replies[0])
        self._offsets[ep.name] = (started + finished) / 2 - server_now
        return self._parse_copy(ep, replies[1], server_now)

    def _parse_copy(self, ep: EndpointState, raw: Any, server_now: float) -> _Copy:
        if raw is None:
            return _Copy(ep.name)
        try:
            override = Override.from_json(raw)
            stored_at = _load_object(raw, "override record").get("stored_at")
        except ValueError as exc:
            self._warn_once(f"bad:{ep.name}", "geofailover[%s]: ignoring the override record on %s: %s", self.engine.name, ep.name, exc)
            return _Copy(ep.name)
        self._ok(f"bad:{ep.name}")
        if isinstance(stored_at, (int, float)) and not isinstance(stored_at, bool):
            age = max(0.0, server_now - float(stored_at))
        else:  # written without the store script: fall back to the writer's clock
            age = max(0.0, time.time() - override.at)
        return _Copy(ep.name, override, age)

    def _fleet_expiry_ms(self) -> int:
        # The hash outlives every heartbeat in it; it vanishes once the whole fleet is gone.
        return int(max(3 * self.heartbeat_ttl, 60.0) * 1000)

    def _heartbeat(self, endpoint: str) -> Heartbeat:
        engine = self.engine
        status = engine.status()
        hold = status["hold"]
        applied = self._applied
        return Heartbeat(
            host=_HOST,
            pid=os.getpid(),
            config=engine.name,
            app=engine.config.app_label,
            active=status["active"],
            since=status["active_since"],
            pinned=hold["endpoint"] if hold and hold["pinned"] else None,
            hold=hold,
            version=_version(),
            last_failover=status["last_event"],
            at=time.time(),
            ttl=self.heartbeat_ttl,
            clock_offset=round(self._offsets.get(endpoint, 0.0), 6),
            override=applied.id if applied else None,
            note=self._note,
        )

    def _write_heartbeat(self, ep: EndpointState) -> None:
        """Publish our heartbeat on ``ep`` now (after a switch: on the new active endpoint)."""
        if ep.name not in self._offsets:
            self._exchange(ep, None)  # learn the endpoint's clock first
        self._exchange(ep, self._heartbeat(ep.name))

    def _forget_heartbeat(self) -> None:
        written, self._written_to = self._written_to, set()
        key = f"{_HOST}:{os.getpid()}"
        for ep in self.engine._states:
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
        if override.action not in ("failover", "pin") or age < self.heartbeat_ttl:
            return True
        me = f"{_HOST}:{os.getpid()}"
        peers = [e.heartbeat for e in self._read_fleet(self._readable()) if e.heartbeat.key != me]
        if not peers:
            return True
        return any(
            hb.override == override.id and hb.hold is not None and hb.hold.get("endpoint") == override.endpoint for hb in peers
        )

    def apply(self, override: Override, age: float = 0.0) -> str | None:
        """Act on ``override`` in this process now (the CLI does this for itself);
        returns the note explaining why it was not followed, or None."""
        with self._lock:
            if self._applied is None or override.order > self._applied.order:
                self._apply_locked(override, age)
            return self._note

    def _apply_locked(self, override: Override, age: float) -> bool:
        engine = self.engine
        why = f"{override.reason} (fleet override by {override.who})" if override.reason else f"fleet override by {override.who}"
        remaining = None if override.duration is None else override.duration - age
        note: str | None = None
        self._expiry = None
        try:
            if override.action in ("failover", "pin") and override.endpoint is None:
                note = "not followed: the record names no endpoint"
            elif remaining is not None and remaining <= 0:
                note = f"{override.action} had already lapsed when it arrived"
                if self._applied is not None:
                    engine.unpin()
            elif override.action == "failover":
                assert override.endpoint is not None
                engine.failover_to(override.endpoint, force=override.force, reason=why)
                if remaining is not None:
                    self._expiry = (override.id, time.monotonic() + remaining)
            elif override.action == "pin":
                assert override.endpoint is not None
                engine.pin(override.endpoint, duration=remaining, force=override.force, reason=why)
            elif override.action == "failback":
                engine.failback()
            else:
                engine.unpin()
        except UnknownEndpointError:
            note = f"not followed: this process has no endpoint named {override.endpoint!r} (configurations differ)"
        except UnhealthyEndpointError:
            target = engine._by_name[override.endpoint or ""]
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
        applied = self._applied
        if expiry is None or applied is None or time.monotonic() < expiry[1]:
            return
        with self._lock:
            self._expiry = None
            if applied.id != expiry[0]:
                return
            hold = self.engine.status()["hold"]
            if hold is not None and not hold["pinned"] and hold["endpoint"] == applied.endpoint:
                logger.info("geofailover[%s]: fleet failover to %s lapsed; automatic rules resume", self.engine.name, applied.endpoint)
                self.engine.unpin()

    # -- overrides: reading and writing ------------------------------------------------

    def _store(self, ep: EndpointState, override: Override, age: float) -> int:
        """1 stored, 2 already there, 0 a newer record is stored there."""
        client = self._client(ep)
        try:
            result = client.eval(_STORE_SCRIPT, 1, self.override_key, override.to_json(), repr(override.at), override.id, repr(age))
        except redis.exceptions.ResponseError as exc:
            if "unknown command" not in str(exc).lower() and "noscript" not in str(exc).lower() and "noperm" not in str(exc).lower():
                raise
            # Scripting unavailable here: a plain SET (the newest write wins by arrival).
            self._warn_once(f"eval:{ep.name}", "geofailover[%s]: EVAL refused by %s (%s); storing the override with SET", self.engine.name, ep.name, exc)
            client.set(self.override_key, override.to_json())
            return 1
        return int(result)

    def _repair(self, newest: _Copy, copies: list[_Copy]) -> None:
        """Give the newest record to reachable endpoints that lack it (one that was down
        or restarted empty when the operator wrote), so every copy converges."""
        assert newest.override is not None
        for copy in copies:
            if copy.error is not None or (copy.override is not None and copy.override.order >= newest.override.order):
                continue
            ep = self.engine._by_name[copy.endpoint]
            try:
                if self._store(ep, newest.override, newest.age or 0.0) == 1:
                    logger.info("geofailover[%s]: copied the current override to %s (it had %s)", self.engine.name, ep.name,
                                "an older one" if copy.override else "none")
            except (redis.RedisError, OSError) as exc:
                logger.debug("geofailover[%s]: override repair on %s failed: %s", self.engine.name, ep.name, self._error(ep, exc))

    def publish(self, override: Override) -> tuple[list[str], dict[str, str]]:
        """Write ``override`` to every reachable endpoint; (written, failed)."""
        written: list[str] = []
        failed: dict[str, str] = {}
        for ep in self.engine._states:
            try:
                result = self._store(ep, override, 0.0)
            except (redis.RedisError, OSError) as exc:
                failed[ep.name] = self._error(ep, exc)
                continue
            if result:
                written.append(ep.name)
            else:
                failed[ep.name] = "a newer override is already stored there (another operator acted at the same time)"
        return written, failed

    def _read_copies(self, endpoints: Iterable[EndpointState]) -> list[_Copy]:
        return [self._exchange(ep, None) for ep in endpoints]

    def read_override(self) -> Override | None:
        """Latest override across reachable endpoints (by ``at``), or None."""
        newest = _newest(self._read_copies(self._known_reachable()))
        return newest.override if newest is not None else None

    def _known_reachable(self) -> list[EndpointState]:
        """Every endpoint the last probe did not find down (readers outside the monitor)."""
        return [ep for ep in self.engine._states if ep.health is not HealthStatus.UNHEALTHY]

    # -- the fleet ---------------------------------------------------------------------

    def _read_fleet(self, endpoints: Iterable[EndpointState], unreachable: dict[str, str] | None = None) -> list[FleetEntry]:
        """Live heartbeats, newest per process, across ``endpoints``; prunes expired ones."""
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
            server_now = _server_time(clock)
            expired: list[bytes] = []
            for field, raw in entries.items():
                try:
                    hb = Heartbeat.from_json(raw)
                except ValueError:
                    expired.append(field)  # unreadable: nobody can use it
                    continue
                age = server_now - (hb.at - hb.clock_offset)
                if age > 2 * hb.ttl:
                    expired.append(field)
                if age > hb.ttl:
                    continue
                seen = newest.get(hb.key)
                if seen is None or hb.at > seen.heartbeat.at:
                    newest[hb.key] = FleetEntry(hb, max(0.0, age), ep.name)
            if expired:
                with contextlib.suppress(redis.RedisError, OSError):
                    client.hdel(self.fleet_key, *expired)
        return sorted(newest.values(), key=lambda e: (e.heartbeat.host, e.heartbeat.pid))

    def fleet(self) -> list[Heartbeat]:
        """Live heartbeats (not expired) merged across reachable endpoints, newest per process."""
        return [e.heartbeat for e in self._read_fleet(self._known_reachable())]

    def fleet_entries(self, unreachable: dict[str, str] | None = None) -> list[FleetEntry]:
        """Like :meth:`fleet`, with each heartbeat's age and the endpoint it was read from."""
        return self._read_fleet(self._known_reachable(), unreachable)

    def _prune(self, ep: EndpointState) -> None:
        """Housekeeping: drop dead processes' heartbeats even if nobody runs ``status``.
        Spread so that the whole fleet prunes about once a minute."""
        live = self._read_fleet([ep])
        self._rounds = 0
        self._next_prune = random.randint(30, 90) * max(1, len(live))


def _server_time(reply: Any) -> float:
    seconds, micros = reply
    return int(seconds) + int(micros) / 1_000_000


def _newest(copies: Iterable[_Copy]) -> _Copy | None:
    best: _Copy | None = None
    for copy in copies:
        if copy.override is not None and (best is None or best.override is None or copy.override.order > best.override.order):
            best = copy
    return best


def _version() -> str:
    from . import __version__

    return __version__


def _after_fork_in_child() -> None:
    for plane in list(_instances):
        plane._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


# -- the public operations ----------------------------------------------------------------


def _plane(engine: FailoverEngine) -> ControlPlane:
    plane: ControlPlane | None = getattr(engine, "control", None)
    if plane is None:
        raise ConfigurationError(
            "control_plane",
            f"is off for configuration {engine.name!r}, so a fleet-wide action cannot reach other processes",
            "set control_plane=True in the configuration of the apps and of this command, "
            "or call engine.failover_to()/pin()/failback() inside the process itself",
        )
    return plane


def request(
    engine: FailoverEngine,
    action: Action,
    endpoint: str | None = None,
    *,
    duration: float | None = None,
    reason: str | None = None,
    force: bool = False,
    wait: float = 10.0,
    who: str | None = None,
) -> ActionResult:
    """Validate (unknown endpoint -> UnknownEndpointError; unhealthy target without
    force -> UnhealthyEndpointError, checked by probing once), publish the override,
    apply it in this process too, then wait up to ``wait`` seconds until every live
    heartbeat shows the requested state; report stragglers."""
    plane = _plane(engine)
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    target: EndpointState | None = None
    if action in ("failover", "pin"):
        if not endpoint:
            raise ValueError(f"{action} needs an endpoint name")
        target = engine._endpoint(endpoint)
    else:
        endpoint = None
    if duration is not None:
        if action not in ("failover", "pin"):
            raise ValueError(f"a duration applies to failover and pin, not {action}")
        if duration <= 0:
            raise ValueError("duration must be positive (seconds)")
    engine.check_now()
    if target is not None and not target.eligible() and not force:
        raise UnhealthyEndpointError(
            f"geofailover[{engine.name}]: {target.name} is {target.health} from here (breaker {target.breaker_state}; "
            f"{target.health_detail or 'no detail'}); pass force=True (--force) to send the fleet there anyway"
        )
    newest = plane.read_override()
    at = time.time()
    if newest is not None and newest.at >= at:
        at = newest.at + 0.001  # our clock is behind the last writer's: still supersede it
    override = Override(
        id=uuid.uuid4().hex, action=action, endpoint=endpoint, until=at + duration if duration else None,
        reason=reason, who=who or default_who(), at=at, force=force,
    )
    written, failed = plane.publish(override)
    if not written:
        return ActionResult(override, [], failed, [], [], False)
    plane.apply(override)
    expected = endpoint
    if action == "failback":
        best = next((ep for ep in engine._ranked if ep.eligible()), None)
        expected = best.name if best is not None else None

    def moved(hb: Heartbeat) -> bool:
        if hb.override != override.id:
            return False
        if action in ("failover", "pin"):
            return hb.active == expected and hb.note is None
        if action == "failback":
            return hb.hold is None and (expected is None or hb.active == expected)
        return hb.hold is None

    started = time.monotonic()
    if wait <= 0:
        return ActionResult(override, written, failed, [], [], True)
    poll = 0.1  # one HGETALL per endpoint: cheap, and the report's timing is this fine
    deadline = started + wait
    while True:
        live = plane.fleet()
        done = [hb for hb in live if moved(hb)]
        late = [hb for hb in live if not moved(hb)]
        now = time.monotonic()
        if not late or now >= deadline:
            return ActionResult(override, written, failed, done, late, not late, now - started)
        time.sleep(min(poll, max(0.0, deadline - now)))


def fleet_status(engine: FailoverEngine) -> dict[str, Any]:
    """``engine.status()`` plus ``"fleet"`` (list of heartbeat dicts with ``age``),
    ``"override"`` (the record in force or None) and ``"disagreements"`` (processes
    whose active endpoint differs from the majority). JSON-serialisable, no secrets."""
    status = engine.status()
    plane: ControlPlane | None = getattr(engine, "control", None)
    status["app_label"] = engine.config.app_label
    if plane is None:
        status.update(
            control_plane={"enabled": False, "prefix": engine.config.control_key_prefix},
            fleet=[], override=None, disagreements=[],
        )
        return status
    unreachable: dict[str, str] = {}
    entries = plane.fleet_entries(unreachable)
    copies = plane._read_copies(plane._known_reachable())
    for copy in copies:
        if copy.error is not None:
            unreachable.setdefault(copy.endpoint, copy.error)
    skipped = [ep.name for ep in engine._states if ep.health is HealthStatus.UNHEALTHY]
    fleet = [
        {
            **asdict(e.heartbeat),
            "key": e.heartbeat.key,
            "age": round(e.age, 3),
            "seen_on": e.endpoint,
            "clock_skewed": abs(e.heartbeat.clock_offset) > SKEW_WARNING,
        }
        for e in entries
    ]
    votes = Counter(p["active"] for p in fleet)
    majority = votes.most_common(1)[0][0] if votes else None
    disagreements = [
        {"key": p["key"], "app": p["app"], "active": p["active"], "majority": majority, "note": p["note"]}
        for p in fleet
        if p["active"] != majority
    ]
    newest = _newest(copies)
    override: dict[str, Any] | None = None
    if newest is not None and newest.override is not None:
        ov = newest.override
        age = newest.age or 0.0
        remaining = None if ov.duration is None else ov.duration - age
        holders = [p["key"] for p in fleet if p["override"] == ov.id and p["note"] is None]
        override = {
            **asdict(ov),
            "description": ov.describe(),
            "age": round(age, 3),
            "remaining": None if remaining is None else round(max(0.0, remaining), 3),
            "in_force": ov.action in ("failover", "pin") and (remaining is None or remaining > 0),
            "applied_by": holders,
            "copies": {
                c.endpoint: "unreachable" if c.error else "missing" if c.override is None
                else "current" if c.override.id == ov.id else "older"
                for c in copies
            },
        }
    status.update(
        control_plane={
            "enabled": True,
            "prefix": engine.config.control_key_prefix,
            "keys": {"override": plane.override_key, "fleet": plane.fleet_key},
            "heartbeat_ttl": plane.heartbeat_ttl,
            "unreachable": unreachable,  # read failed
            "skipped": skipped,  # not read: the last probe found them unhealthy
        },
        fleet=fleet,
        override=override,
        disagreements=disagreements,
    )
    return status


def check(engine: FailoverEngine) -> tuple[int, dict[str, Any]]:
    """Run every health check once. Exit code 0 = every endpoint healthy,
    1 = degraded (some unhealthy, one serves), 2 = none healthy; plus the report."""
    finished = engine.check_now()
    status = engine.status()
    endpoints = [
        {k: e[k] for k in ("name", "url", "weight", "active", "health", "health_detail", "breaker", "latency_ms")}
        for e in status["endpoints"]
    ]
    healthy = [e["name"] for e in endpoints if e["health"] == HealthStatus.HEALTHY]
    bad = [e for e in endpoints if e["health"] != HealthStatus.HEALTHY]
    if not healthy:
        code, state = 2, "down"
        summary = "no endpoint is healthy: " + "; ".join(f"{e['name']} {e['health']} ({e['health_detail'] or 'no detail'})" for e in bad)
    elif bad:
        code, state = 1, "degraded"
        summary = (
            "; ".join(f"{e['name']} {e['health']} ({e['health_detail'] or 'no detail'})" for e in bad)
            + f"; traffic can use {', '.join(healthy)}"
        )
    else:
        code, state = 0, "ok"
        summary = f"all {len(endpoints)} endpoints healthy"
    if not finished:
        summary += " (the probe round did not finish in time: results are partial)"
    report = {
        "name": engine.name,
        "code": code,
        "state": state,
        "summary": summary,
        "active": status["active"],
        "endpoints": endpoints,
    }
    return code, report


__all__ = [
    "ACTIONS",
    "Action",
    "ActionResult",
    "ControlPlane",
    "FleetEntry",
    "Heartbeat",
    "Override",
    "check",
    "default_who",
    "fleet_status",
    "format_duration",
    "heartbeat_ttl",
    "request",
]
