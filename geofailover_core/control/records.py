"""The control plane's records: what is stored in Redis and how it is read back.

An *override* is an operator's instruction to the fleet; a *heartbeat* is
what one process reports about itself each interval. Both are JSON written
by one process and read by every other, so parsing is strict: a record that
does not validate is ignored (and reported), never half-applied.
"""

from __future__ import annotations

import getpass
import json
import socket
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

Action = Literal["failover", "failback", "pin", "unpin"]
ACTIONS: tuple[str, ...] = get_args(Action)

HOST = socket.gethostname()
RECORD_VERSION = 1
# A clock further than this from an endpoint's is flagged in status.
SKEW_WARNING = 1.0

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


def load_object(text: str | bytes, what: str) -> dict[str, Any]:
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
        data = {"v": RECORD_VERSION, **asdict(self)}
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Override:
        """Parse a stored record. Unknown keys (a newer writer, ``stored_at``) are ignored."""
        data = load_object(text, "override record")
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
    ttl: float  # seconds this heartbeat stays valid (3 x probe_interval, >= 3 s)
    clock_offset: float = 0.0  # this process's clock minus the endpoint's clock (seconds)
    override: str | None = None  # id of the last override this process has acted on
    note: str | None = None  # why that override was not (yet) followed here

    @property
    def key(self) -> str:
        return f"{self.host}:{self.pid}"

    def to_json(self) -> str:
        return json.dumps({"v": RECORD_VERSION, **asdict(self)}, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Heartbeat:
        data = load_object(text, "heartbeat")
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
class Copy:
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
    "SKEW_WARNING",
    "Action",
    "ActionResult",
    "Copy",
    "FleetEntry",
    "Heartbeat",
    "Override",
    "default_who",
    "format_duration",
    "heartbeat_ttl",
    "load_object",
    "newest_copy",
    "server_time",
]
