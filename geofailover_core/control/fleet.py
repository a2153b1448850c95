"""Fleet-wide operations: an operator's action, and the fleet's status.

Both run in whatever process the operator typed the command in, and act on
the fleet only through records in Redis (see :mod:`.plane`). That process
only observes: its own engine follows no override and its probes are
reported as *this host's view*, beside what the fleet's processes report.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections import Counter
from dataclasses import asdict
from typing import Any

from ..endpoint import EndpointState
from ..engine import FailoverEngine
from ..errors import ConfigurationError, UnhealthyEndpointError
from ..health import HealthStatus
from .plane import ControlPlane, plane_of
from .records import (
    ACTIONS,
    HOST,
    MAX_CLOCK_SKEW,
    MAX_DURATION,
    MAX_RECORD_BYTES,
    MAX_TEXT,
    SKEW_WARNING,
    TARGETED,
    Action,
    ActionResult,
    Copy,
    FleetEntry,
    Heartbeat,
    InvalidHeartbeat,
    Override,
    check_reason,
    check_text,
    default_who,
    format_duration,
    newest_copy,
)


def _plane(engine: FailoverEngine) -> ControlPlane:
    plane = plane_of(engine)
    if plane is None:
        raise ConfigurationError(
            "control_plane",
            f"is off for configuration {engine.name!r}, so a fleet-wide action cannot reach other processes",
            "set control_plane=True in the configuration of the apps and of this command, "
            "or call engine.failover_to()/pin()/failback() inside the process itself",
        )
    return plane


def refusal(engine: FailoverEngine, target: EndpointState, force: str = "force=True") -> str:
    """Why an action towards an unhealthy ``target`` is refused, and how to insist
    (``force`` as the caller spells it: ``force=True``, ``--force``)."""
    return (
        f"geofailover[{engine.name}]: {target.name} is {target.health} from here (breaker {target.breaker_state}; "
        f"{target.health_detail or 'no detail'}); pass {force} to send the fleet there anyway"
    )


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
    force -> UnhealthyEndpointError, checked by probing once; a reason or duration
    beyond its cap -> ValueError), publish the override, then wait up to ``wait``
    seconds until every live heartbeat shows the requested state; report stragglers.

    A rejected record stored on an endpoint (malformed, oversized, from the far
    future) is replaced; ``force`` also replaces a valid newer one, and ``clear``
    always does. This process's own engine acts on the record only if it serves
    traffic here (an observer, such as a CLI's, never does)."""
    plane = _plane(engine)
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    reason = check_reason(reason)
    who = check_text(who or default_who(), "who", MAX_TEXT)
    target: EndpointState | None = None
    if action in TARGETED:
        if not endpoint:
            raise ValueError(f"{action} needs an endpoint name")
        target = engine.endpoint(endpoint)
    else:
        endpoint = None
    if duration is not None:
        if action not in TARGETED:
            raise ValueError(f"a duration applies to failover and pin, not {action}")
        if not (math.isfinite(duration) and 0 < duration <= MAX_DURATION):
            raise ValueError(f"duration must be positive (seconds) and at most {format_duration(MAX_DURATION)}")
    engine.check_now()
    if target is not None and not target.eligible() and not force:
        raise UnhealthyEndpointError(refusal(engine, target))
    copies = plane.read_copies()
    at = _stamp(copies, plane.fleet())
    override = Override(
        id=uuid.uuid4().hex, action=action, endpoint=endpoint, until=at + duration if duration else None,
        reason=reason, who=who, at=at, force=force,
    )
    size = len(override.to_json().encode())
    if size + 64 > MAX_RECORD_BYTES:  # room for stored_at
        raise ValueError(f"the record would be {size} bytes; at most {MAX_RECORD_BYTES - 64} are accepted (shorten the reason)")
    written, failed = plane.publish(override, copies, overwrite=force or action == "clear")
    if not written:
        return ActionResult(override, [], failed, [], [], False)
    plane.apply(override)
    expected = endpoint
    if action == "failback":
        best = engine.best_endpoint()
        expected = best.name if best is not None else None

    def moved(hb: Heartbeat) -> bool:
        if hb.override != override.id:
            return False
        if action in TARGETED:
            return hb.active == expected and hb.note is None
        if action == "failback":
            return hb.hold is None and (expected is None or hb.active == expected)
        if action == "clear":
            return True
        return hb.hold is None

    started = time.monotonic()
    if wait <= 0:
        return ActionResult(override, written, failed, [], [], True, listening=len(plane.fleet()))
    poll = 0.1  # one HGETALL per endpoint: cheap, and the report's timing is this fine
    deadline = started + wait
    while True:
        live = plane.fleet()
        done = [hb for hb in live if moved(hb)]
        late = [hb for hb in live if not moved(hb)]
        now = time.monotonic()
        if not late or now >= deadline:
            return ActionResult(override, written, failed, done, late, not late, now - started, listening=len(live))
        time.sleep(min(poll, max(0.0, deadline - now)))


def _stamp(copies: list[Copy], live: list[Heartbeat]) -> float:
    """A new record's ``at``: the endpoints' clock (so every reader's skew check
    passes whatever this host's clock says), later than every valid record stored
    or applied by a live process, so each process takes it as the newest."""
    now = max((c.server_now for c in copies if c.server_now is not None), default=time.time())
    earlier = [c.override.at for c in copies if c.override is not None]
    earlier += [hb.override_at for hb in live if hb.override_at is not None]
    # A value beyond the skew bound was never valid anywhere: it must not drag ours along.
    return max([now, *(t + 0.001 for t in earlier if t < now + MAX_CLOCK_SKEW - 1)])


def fleet_status(engine: FailoverEngine) -> dict[str, Any]:
    """The fleet's state as its processes report it, beside this host's own probes.

    * ``active``: the endpoint most live processes use (None when none reports),
      ``fleet_state``: ``agrees``, ``split``, ``no fleet`` or ``control plane off``;
    * ``here``: this host's view (its engine's ``active``, ``hold``, ...);
    * ``endpoints``: per endpoint, ``fleet`` (processes active on it, health and
      breaker as the processes report them) and ``here`` (this host's probe);
    * ``fleet`` (heartbeat dicts with ``age``), ``disagreements``, ``override`` (the
      newest valid record, or None), ``invalid_records`` and ``invalid_heartbeats``
      (rejected entries, with why).

    JSON-serialisable, no secrets. A process that serves traffic lists itself."""
    here = engine.status()
    plane = plane_of(engine)
    unreachable: dict[str, str] = {}
    invalid: list[InvalidHeartbeat] = []
    entries: list[FleetEntry] = []
    copies: list[Copy] = []
    if plane is not None:
        entries = plane.fleet_entries(unreachable, invalid)
        if not engine.observer and engine.started:
            me = f"{HOST}:{os.getpid()}"
            entries = [e for e in entries if e.heartbeat.key != me] + [FleetEntry(plane.heartbeat(), 0.0, "this process")]
        copies = plane.read_copies()
    for copy in copies:
        if copy.error is not None:
            unreachable.setdefault(copy.endpoint, copy.error)
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
    status: dict[str, Any] = {
        "name": engine.name,
        "app_label": engine.config.app_label,
        "active": majority,
        "fleet_state": "control plane off" if plane is None else "no fleet" if not fleet else "split" if disagreements else "agrees",
        "here": {k: here[k] for k in ("pid", "active", "active_since", "all_down", "hold", "last_event", "monitor_running")}
        | {"observer": engine.observer},
        "endpoints": [_endpoint(e, fleet) for e in here["endpoints"]],
        "fleet": fleet,
        "disagreements": disagreements,
        "override": _override(newest_copy(copies), copies, fleet),
        "invalid_records": [{"endpoint": c.endpoint, "why": c.invalid} for c in copies if c.invalid is not None],
        "invalid_heartbeats": [asdict(i) for i in invalid],
    }
    if plane is None:
        status["control_plane"] = {"enabled": False, "prefix": engine.config.control_key_prefix}
    else:
        status["control_plane"] = {
            "enabled": True,
            "prefix": engine.config.control_key_prefix,
            "keys": {"override": plane.override_key, "fleet": plane.fleet_key},
            "databases": {ep.name: plane.database(ep) for ep in engine.states()},  # where the keys live on each endpoint
            "heartbeat_ttl": plane.heartbeat_ttl,
            "unreachable": unreachable,  # read failed
            "skipped": [ep.name for ep in engine.states() if ep.health is HealthStatus.UNHEALTHY],  # last probe: down
        }
    return status


def _endpoint(snapshot: dict[str, Any], fleet: list[dict[str, Any]]) -> dict[str, Any]:
    name = snapshot["name"]
    views = [p["view"][name] for p in fleet if p.get("view") and name in p["view"]]
    return {
        "name": name,
        "url": snapshot["url"],
        "weight": snapshot["weight"],
        "fleet": {
            "active": sum(1 for p in fleet if p["active"] == name),  # processes whose traffic goes there
            "reporting": len(views),  # processes that report their view of it
            "health": dict(Counter(v[0] for v in views)),
            "breaker": dict(Counter(v[1] for v in views)),
        },
        "here": {k: v for k, v in snapshot.items() if k not in ("name", "url", "weight")},
    }


def _override(newest: Copy | None, copies: list[Copy], fleet: list[dict[str, Any]]) -> dict[str, Any] | None:
    if newest is None or newest.override is None:
        return None
    ov = newest.override
    age = newest.age or 0.0
    remaining = None if ov.duration is None else ov.duration - age
    return {
        **asdict(ov),
        "description": ov.describe(),
        "age": round(age, 3),
        "remaining": None if remaining is None else round(max(0.0, remaining), 3),
        "in_force": ov.action in TARGETED and (remaining is None or remaining > 0),
        "applied_by": [p["key"] for p in fleet if p["override"] == ov.id and p["note"] is None],
        "copies": {
            c.endpoint: "unreachable" if c.error else "invalid" if c.invalid else "missing" if c.override is None
            else "current" if c.override.id == ov.id else "older"
            for c in copies
        },
    }


__all__ = ["fleet_status", "refusal", "request"]
