"""The control plane's records: what is stored in Redis and how it is read back.

An *override* is an operator's instruction to the fleet; a *heartbeat* is
what one process reports about itself each interval. Both are JSON written
by one process and read by every other, so parsing is strict: a record that
does not validate is ignored (and reported), never half-applied.
"""

from __future__ import annotations

import getpass
import json
import math
import re
import socket
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, get_args

Action = Literal["failover", "failback", "pin", "unpin", "clear"]
ACTIONS: tuple[str, ...] = get_args(Action)
TARGETED: tuple[str, ...] = ("failover", "pin")  # the actions that name an endpoint

HOST = socket.gethostname()
RECORD_VERSION = 1
# A clock further than this from an endpoint's is flagged in status.
SKEW_WARNING = 1.0

# Caps. Every process reads the override record each interval and copies its
# reason into its heartbeat, so an unbounded field would cost the whole fleet;
# a value beyond a cap is refused (by the writer) or rejected (by readers), never cut.
MAX_REASON = 500  # characters of an operator's reason
MAX_TEXT = 256  # characters of who, host, configuration name, app label
MAX_NOTE = 1000  # characters of a heartbeat's note or an event's detail
MAX_RECORD_BYTES = 8192  # an override record as stored (JSON, UTF-8); larger ones are not even decoded
MAX_HEARTBEAT_BYTES = 16384  # one heartbeat as stored
MAX_ENDPOINTS = 64  # entries of a heartbeat's per-endpoint view
# A record's ``at`` may be this far ahead of the endpoint's clock: writers stamp
# records with the endpoint's clock, so more than this is a broken clock or a forgery.
MAX_CLOCK_SKEW = 300.0
MAX_DURATION = 366 * 86400.0  # longest ``--for``
MAX_TTL = 86400.0  # longest heartbeat TTL (3 health-check intervals)
MAX_TIMESTAMP = 1e10  # wall-clock seconds (year 2286): beyond it a timestamp is garbage

_ID = re.compile(r"[0-9A-Za-z_-]{1,64}\Z")
_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,200}\Z")  # endpoint names, with the syntax the configuration accepts
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _show(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "...")


def check_text(value: str, what: str, limit: int) -> str:
    """One line of printable text of at most ``limit`` characters, else ValueError."""
    if len(value) > limit:
        raise ValueError(f"{what} is {len(value)} characters long; at most {limit} characters are accepted")
    if _CONTROL.search(value):
        raise ValueError(f"{what} contains control characters; write one line of printable text")
    return value


def check_reason(reason: str | None) -> str | None:
    """An operator's reason as it may be stored (``--reason``, ``request(reason=)``)."""
    return None if reason is None else check_text(reason, "the reason", MAX_REASON)


def clip(text: str, limit: int) -> str:
    """What a writer does with its own free text (an error message in a note, an
    in-process pin's reason): at most ``limit`` characters, one line."""
    short = text if len(text) <= limit else text[: limit - 3] + "..."
    return _CONTROL.sub(" ", short)


def _number(data: dict[str, Any], key: str, *, required: bool = True, low: float = -MAX_TIMESTAMP,
            high: float = MAX_TIMESTAMP) -> float | None:
    value = data.get(key)
    if value is None:
        if required:
            raise ValueError(f"{key} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a finite number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{key} must be a finite number, got {number}")
    if not low <= number <= high:
        raise ValueError(f"{key} is out of range: {number:g} (expected {low:g} to {high:g})")
    return number


def _num(data: dict[str, Any], key: str, *, low: float = -MAX_TIMESTAMP, high: float = MAX_TIMESTAMP) -> float:
    value = _number(data, key, low=low, high=high)
    assert value is not None
    return value


def _string(data: dict[str, Any], key: str, *, required: bool = True, limit: int = MAX_TEXT,
            pattern: re.Pattern[str] | None = None) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise ValueError(f"{key} is missing")
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, got {type(value).__name__}")
    check_text(value, key, limit)
    if pattern is not None and not pattern.match(value):
        raise ValueError(f"{key} {_show(value)} is not a valid name")
    return value


def _str(data: dict[str, Any], key: str, *, limit: int = MAX_TEXT, pattern: re.Pattern[str] | None = None) -> str:
    value = _string(data, key, limit=limit, pattern=pattern)
    assert value is not None
    return value


def _object(data: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = data.get(key)
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"{key} must be an object or null, got {type(value).__name__}")
    return value


def load_object(raw: str | bytes, what: str, limit: int) -> dict[str, Any]:
    """Decode one stored record: at most ``limit`` bytes of UTF-8 JSON holding an object."""
    size = len(raw) if isinstance(raw, bytes) else len(raw) if len(raw) > limit else len(raw.encode("utf-8", "replace"))
    if size > limit:
        raise ValueError(f"malformed {what}: larger than {limit} bytes")
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f"malformed {what}: {type(exc).__name__}: {clip(str(exc), 200)}") from None
    if not isinstance(data, dict):
        raise ValueError(f"malformed {what}: expected a JSON object, got {type(data).__name__}")
    return data


def _dumps(data: dict[str, Any]) -> str:
    # Not ASCII-escaped: a stored character costs at most 4 bytes, so the caps on
    # characters bound the bytes (NaN never reaches here: writers' values are checked).
    return json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class Override:
    """An operator's instruction to the fleet."""

    id: str  # uuid4 hex; a process applies each id once
    action: Action
    endpoint: str | None  # target for failover/pin
    until: float | None  # wall-clock expiry of a pin or a timed failover (None: until the next action)
    reason: str | None
    who: str  # "user@host" of the operator
    at: float  # the endpoint's wall clock when written; latest wins
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
        what = {"failover": "failover to", "pin": "pin to", "failback": "failback", "unpin": "unpin",
                "clear": "clear the override"}[self.action]
        target = f" {self.endpoint}" if self.endpoint and self.action in TARGETED else ""
        span = f" for {format_duration(self.duration)}" if self.duration is not None else ""
        forced = " (forced)" if self.force else ""
        why = f' ("{self.reason}")' if self.reason else ""
        return f"{what}{target}{span}{forced} by {self.who}{why}"

    def to_json(self) -> str:
        return _dumps({"v": RECORD_VERSION, **asdict(self)})

    @classmethod
    def from_json(cls, raw: str | bytes, *, now: float | None = None) -> Override:
        """Parse and validate a stored record; ``now`` is the endpoint's clock, for the
        skew check. Unknown keys (a newer writer, ``stored_at``) are ignored."""
        return cls.from_dict(load_object(raw, "override record", MAX_RECORD_BYTES), now=now)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, now: float | None = None) -> Override:
        try:
            action = _str(data, "action", limit=32)
            if action not in ACTIONS:
                raise ValueError(f"unknown action {_show(action)}")
            force = data.get("force", False)
            if not isinstance(force, bool):
                raise ValueError("force must be true or false")
            at = _num(data, "at", low=0.0, high=math.inf if now is not None else MAX_TIMESTAMP)
            if now is not None and at > now + MAX_CLOCK_SKEW:
                raise ValueError(
                    f"at is {format_duration(at - now)} ahead of the endpoint's clock (more than {MAX_CLOCK_SKEW:g}s): "
                    "written by hand or by a host whose clock is wrong"
                )
            endpoint = _string(data, "endpoint", required=action in TARGETED, pattern=_NAME)
            if endpoint is not None and action not in TARGETED:
                raise ValueError(f"endpoint is set, but {action} takes none")
            until = _number(data, "until", required=False, low=0.0)
            if until is not None:
                if action not in TARGETED:
                    raise ValueError(f"until is set, but {action} takes no duration")
                if not 0 < until - at <= MAX_DURATION:
                    raise ValueError(f"until - at must be between 0 and {format_duration(MAX_DURATION)}, got {until - at:g}s")
            return cls(
                id=_str(data, "id", limit=64, pattern=_ID),
                action=action,  # type: ignore[arg-type]
                endpoint=endpoint,
                until=until,
                reason=_string(data, "reason", required=False, limit=MAX_REASON),
                who=_str(data, "who"),
                at=at,
                force=force,
            )
        except ValueError as exc:
            raise ValueError(f"malformed override record: {exc}") from None


def parse_copy(raw: str | bytes, server_now: float) -> tuple[Override, float | None]:
    """A stored copy as read from an endpoint whose clock says ``server_now``:
    the override and its ``stored_at`` (the endpoint's clock when first stored)."""
    data = load_object(raw, "override record", MAX_RECORD_BYTES)
    override = Override.from_dict(data, now=server_now)
    try:
        stored_at = _number(data, "stored_at", required=False, low=0.0, high=server_now + MAX_CLOCK_SKEW)
    except ValueError as exc:
        raise ValueError(f"malformed override record: {exc}") from None
    return override, stored_at


def _hold(data: dict[str, Any] | None) -> dict[str, Any] | None:
    if data is None:
        return None
    pinned = data.get("pinned")
    if not isinstance(pinned, bool):
        raise ValueError("hold.pinned must be true or false")
    return {
        "endpoint": _str(data, "endpoint", pattern=_NAME),
        "pinned": pinned,
        "until": _number(data, "until", required=False),
        "reason": _string(data, "reason", required=False, limit=MAX_NOTE),
        "since": _num(data, "since"),
    }


def _event(data: dict[str, Any] | None) -> dict[str, Any] | None:
    if data is None:
        return None
    return {
        "kind": _str(data, "kind", limit=32),
        "from_endpoint": _string(data, "from_endpoint", required=False, pattern=_NAME),
        "to_endpoint": _string(data, "to_endpoint", required=False, pattern=_NAME),
        "reason": _string(data, "reason", required=False, limit=64),
        "detail": _string(data, "detail", required=False, limit=MAX_NOTE) or "",
        "timestamp": _num(data, "timestamp"),
    }


def _view(data: Any) -> dict[str, list[str]] | None:
    if data is None:
        return None
    if not isinstance(data, dict) or len(data) > MAX_ENDPOINTS:
        raise ValueError(f"endpoints must be an object of at most {MAX_ENDPOINTS} entries")
    view: dict[str, list[str]] = {}
    for name, states in data.items():
        if not _NAME.match(name):
            raise ValueError(f"endpoints: {_show(name)} is not a valid name")
        if not isinstance(states, list) or len(states) != 2 or not all(isinstance(s, str) for s in states):
            raise ValueError(f"endpoints[{name!r}] must be [health, breaker]")
        view[name] = [check_text(s, f"endpoints[{name!r}]", 32) for s in states]
    return view


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
    hold: dict[str, Any] | None  # engine.hold()
    version: str  # geofailover version
    last_failover: dict[str, Any] | None  # engine.status()["last_event"]
    at: float  # wall clock of this heartbeat
    ttl: float  # seconds this heartbeat stays valid (3 x probe_interval, >= 3 s)
    clock_offset: float = 0.0  # this process's clock minus the endpoint's clock (seconds)
    override: str | None = None  # id of the last override this process has acted on
    note: str | None = None  # why that override was not (yet) followed here
    override_at: float | None = None  # that override's ``at``: a new action is stamped later
    view: dict[str, list[str]] | None = None  # endpoint -> [health, breaker], as this process sees them

    @property
    def key(self) -> str:
        return f"{self.host}:{self.pid}"

    def to_json(self) -> str:
        return _dumps({"v": RECORD_VERSION, **asdict(self)})

    def compact(self) -> Heartbeat:
        """A smaller version of a heartbeat that would exceed :data:`MAX_HEARTBEAT_BYTES`
        (a configuration with very many or very long endpoint names, long notes)."""
        short = 100
        hold = self.hold and {**self.hold, "reason": clip(self.hold.get("reason") or "", short) or None}
        last = self.last_failover and {**self.last_failover, "detail": clip(self.last_failover.get("detail") or "", short)}
        return replace(self, view=None, hold=hold, last_failover=last, note=self.note and clip(self.note, short))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Heartbeat:
        data = load_object(raw, "heartbeat", MAX_HEARTBEAT_BYTES)
        try:
            pid = data.get("pid")
            if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid < 2**31:
                raise ValueError("pid must be a positive integer")
            return cls(
                host=_str(data, "host"),
                pid=pid,
                config=_str(data, "config"),
                app=_string(data, "app", required=False) or "",
                active=_string(data, "active", required=False, pattern=_NAME),
                since=_num(data, "since"),
                pinned=_string(data, "pinned", required=False, pattern=_NAME),
                hold=_hold(_object(data, "hold")),
                version=_string(data, "version", required=False, limit=64) or "?",
                last_failover=_event(_object(data, "last_failover")),
                at=_num(data, "at"),
                ttl=_num(data, "ttl", low=0.001, high=MAX_TTL),
                clock_offset=_number(data, "clock_offset", required=False) or 0.0,
                override=_string(data, "override", required=False, limit=64, pattern=_ID),
                note=_string(data, "note", required=False, limit=MAX_NOTE),
                override_at=_number(data, "override_at", required=False, low=0.0),
                view=_view(data.get("view")),
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
    listening: int = 0  # live processes (heartbeats) under this configuration name and key prefix

    @property
    def acknowledged(self) -> list[Heartbeat]:
        """Processes whose heartbeat shows they picked the record up (followed or not)."""
        return [hb for hb in (*self.moved, *self.stragglers) if hb.override == self.override.id]


@dataclass(frozen=True)
class Copy:
    """One endpoint's answer to a read: its override copy and its clock."""

    endpoint: str
    override: Override | None = None
    age: float | None = None  # seconds since the record was first stored, on that endpoint's clock
    error: str | None = None  # masked; the endpoint could not be read
    invalid: str | None = None  # why the record stored there was rejected
    digest: str | None = None  # SHA-1 of that rejected record, so a writer replaces exactly it
    server_now: float | None = None  # the endpoint's clock at the read


@dataclass(frozen=True)
class FleetEntry:
    """A live heartbeat with its age measured on the endpoint's clock."""

    heartbeat: Heartbeat
    age: float
    endpoint: str


@dataclass(frozen=True)
class InvalidHeartbeat:
    """A fleet-hash entry that did not validate: shown by ``status``, never listed."""

    field: str  # the hash field, clipped
    endpoint: str
    why: str


def heartbeat_ttl(interval: float) -> float:
    """Three intervals (at least 3 s): one lost write never makes a live process look gone."""
    return max(3.0 * interval, 3.0)


def format_duration(seconds: float | None) -> str:
    """``0.4s``, ``12s``, ``3m12s``, ``2h05m``: short enough for a table cell."""
    if seconds is None:
        return "-"
    if not math.isfinite(seconds):
        return "?"
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
    return f"{user}@{HOST}"


def server_time(reply: Any) -> float:
    seconds, micros = reply
    return int(seconds) + int(micros) / 1_000_000


def newest_copy(copies: Iterable[Copy]) -> Copy | None:
    best: Copy | None = None
    for copy in copies:
        if copy.override is not None and (best is None or best.override is None or copy.override.order > best.override.order):
            best = copy
    return best



__all__ = [
    "ACTIONS",
    "HOST",
    "MAX_CLOCK_SKEW",
    "MAX_DURATION",
    "MAX_HEARTBEAT_BYTES",
    "MAX_REASON",
    "MAX_RECORD_BYTES",
    "SKEW_WARNING",
    "TARGETED",
    "Action",
    "ActionResult",
    "Copy",
    "FleetEntry",
    "Heartbeat",
    "InvalidHeartbeat",
    "Override",
    "check_reason",
    "check_text",
    "clip",
    "default_who",
    "format_duration",
    "heartbeat_ttl",
    "load_object",
    "newest_copy",
    "parse_copy",
    "server_time",
]
