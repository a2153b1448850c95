"""Fleet-wide operations: an operator's action, and the fleet's status.

Both run in whatever process the operator typed the command in, and act on
the fleet only through records in Redis (see :mod:`.plane`).
"""

from __future__ import annotations

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
from .records import ACTIONS, SKEW_WARNING, Action, ActionResult, Heartbeat, Override, default_who, newest_copy


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
        target = engine.endpoint(endpoint)
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
        best = engine.best_endpoint()
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
    plane = plane_of(engine)
    status["app_label"] = engine.config.app_label
    if plane is None:
        status.update(
            control_plane={"enabled": False, "prefix": engine.config.control_key_prefix},
            fleet=[], override=None, disagreements=[],
        )
        return status
    unreachable: dict[str, str] = {}
    entries = plane.fleet_entries(unreachable)
    copies = plane.read_copies()
    for copy in copies:
        if copy.error is not None:
            unreachable.setdefault(copy.endpoint, copy.error)
    skipped = [ep.name for ep in engine.states() if ep.health is HealthStatus.UNHEALTHY]
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
    newest = newest_copy(copies)
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



__all__ = ["fleet_status", "request"]
