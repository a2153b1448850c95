"""What ``status`` and the actions print: tables, verdicts and hints an operator can act on."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import Any

from ..control.records import ActionResult, Heartbeat, format_duration
from ..engine import FailoverEngine
from ..terminal import BREAKER_STYLE, HEALTH_STYLE, Cell, Style, ago, table
from .parser import EXIT_DEGRADED, EXIT_ERROR, EXIT_OK


def hold_text(hold: dict[str, Any] | None, remaining: float | None) -> str:
    if not hold:
        return "-"
    kind = "pin" if hold.get("pinned") else "held"
    left = f" ({format_duration(remaining)} left)" if remaining is not None else ""
    return f"{kind} {hold.get('endpoint')}{left}"


def process_row(p: dict[str, Any], majority: str | None, style: Style) -> list[Cell]:
    """One fleet row. Times in a heartbeat are its writer's clock: only differences
    between them are used, so a skewed clock does not distort the ages shown."""
    age = float(p["age"])
    hold = p.get("hold")
    remaining = None
    if hold and hold.get("until") is not None:
        remaining = float(hold["until"]) - float(p["at"]) - age
    last = p.get("last_failover")
    last_text = "-"
    if last and last.get("kind") in ("failover", "failback", "all_down", "recovered"):
        elapsed = float(p["at"]) - float(last.get("timestamp") or p["at"]) + age
        last_text = f"{last['kind']} {last.get('from_endpoint') or '-'}>{last.get('to_endpoint') or '-'} {format_duration(elapsed)} ago"
    active = p.get("active") or "NONE"
    active_cell: Cell = (active, ("red",)) if p.get("active") is None else (active, ("yellow",)) if active != majority else active
    since = float(p["at"]) - float(p["since"]) + age
    beat: Cell = ago(age)
    if p.get("clock_skewed"):
        beat = (f"{ago(age)} (clock {p['clock_offset']:+.1f}s)", ("yellow",))
    return [p["key"], p.get("app") or "-", active_cell, format_duration(since), hold_text(hold, remaining), last_text, beat, p.get("version", "?")]


def status_verdict(st: dict[str, Any]) -> tuple[int, list[tuple[str, str, str]]]:
    """Exit code and (level, headline, what to do) lines an operator can act on."""
    lines: list[tuple[str, str, str]] = []
    code = EXIT_OK
    endpoints = st["endpoints"]
    healthy = [e for e in endpoints if e["health"] == "healthy"]
    fleet = st["fleet"]
    cp = st["control_plane"]
    if not healthy:
        code = EXIT_ERROR
        lines.append((
            "DOWN", "no endpoint answers health checks from this host",
            "commands fail fast with NoHealthyEndpointError; check the Redis servers and the network path from here",
        ))
    fleet_active = Counter(p["active"] for p in fleet).most_common(1)[0][0] if fleet else None
    serving = fleet_active or st["active"]
    serving_weight = next((e["weight"] for e in endpoints if e["name"] == serving), None)
    for e in endpoints:
        if e["health"] != "healthy" and healthy:
            code = max(code, EXIT_DEGRADED)
            if serving_weight is not None and e["weight"] > serving_weight:
                todo = f"traffic is on {serving} and returns by itself once {e['name']} has been healthy for failback_grace_period"
            else:
                todo = "it is a standby: nothing moves now, but it cannot take traffic if the active endpoint fails"
            lines.append((
                "DEGRADED", f"{e['name']} is {e['health']}: {e['health_detail'] or e.get('last_error') or 'no detail'}",
                f"{todo}; check that server and the network to it from here",
            ))
    override = st.get("override")
    if override and override["in_force"]:
        left = f", lapses in {format_duration(override['remaining'])}" if override.get("remaining") is not None else ""
        undo = "geofailover unpin" if override["action"] == "pin" else "geofailover failback"
        lines.append(("NOTE", f"operator override in force: {override['description']}{left}", f"automatic failback is suspended; end it with `{undo}`"))
    if cp["enabled"]:
        if not fleet:
            lines.append((
                "NOTE", f"no process has reported a heartbeat for configuration {st['name']!r} under key prefix {cp['prefix']!r}",
                "if applications are running: do they use this configuration name and key prefix, with control_plane on?",
            ))
        for d in st["disagreements"]:
            code = max(code, EXIT_DEGRADED)
            why = f" ({d['note']})" if d.get("note") else ""
            lines.append((
                "SPLIT", f"{d['key']} ({d['app'] or 'no label'}) uses {d['active'] or 'no endpoint'} while most use {d['majority']}{why}",
                "it may not reach that endpoint; check its log (logger 'geofailover') and its host's network",
            ))
        split = {d["key"] for d in st["disagreements"]}
        for p in fleet:
            if p.get("note") and p["key"] not in split:
                lines.append(("NOTE", f"{p['key']}: {p['note']}", "see that process's log (logger 'geofailover')"))
            if p.get("clock_skewed"):
                lines.append((
                    "CLOCK", f"{p['key']}'s clock is {p['clock_offset']:+.1f}s off the Redis server's",
                    f"fix time sync (NTP) on {p['host']}; expiry and ages are measured on Redis's clock, but its logs will disagree",
                ))
        for name, error in cp.get("unreachable", {}).items():
            lines.append(("NOTE", f"control-plane keys on {name} not read: {error}", "processes that report only there are not listed"))
    else:
        lines.append((
            "NOTE", "control_plane is off for this configuration",
            "the fleet is not listed and failover commands cannot reach other processes; enable control_plane in the apps' configuration",
        ))
    if code == EXIT_OK and not any(level in ("DOWN", "DEGRADED", "SPLIT", "CLOCK") for level, _, _ in lines):
        agree = f"; {len(fleet)} process{'es' if len(fleet) != 1 else ''} on {fleet[0]['active']}" if fleet else ""
        lines.insert(0, ("OK", f"all {len(endpoints)} endpoints healthy{agree}", ""))
    return code, lines


def render_status(st: dict[str, Any], style: Style) -> tuple[int, str]:
    """One configuration's status as text for people."""
    out: list[str] = []
    cp = st["control_plane"]
    header = f"configuration {style(repr(st['name']), 'bold')}"
    if st.get("app_label"):
        header += f" (app {st['app_label']})"
    header += f"  key prefix {cp['prefix']!r}" if cp["enabled"] else "  control plane off"
    out.append(header)
    override = st.get("override")
    if override:
        state = "in force" if override["in_force"] else "no longer in force"
        if override.get("remaining") is not None and override["in_force"]:
            state += f", lapses in {format_duration(override['remaining'])}"
        out.append(f"override: {override['description']}, {ago(override['age'])}, {state}")
        stale = {k: v for k, v in override["copies"].items() if v != "current"}
        if stale:
            # Processes copy the record there themselves; shown so nobody is surprised meanwhile.
            out.append(style("          copies: " + ", ".join(f"{k} {v}" for k, v in override["copies"].items()), "dim"))
    elif cp["enabled"]:
        out.append("override: none")
    out.append("")
    fleet = st["fleet"]
    per_endpoint = Counter(p["active"] for p in fleet)
    rows: list[list[Cell]] = []
    details: dict[int, str] = {}
    for i, e in enumerate(st["endpoints"]):
        latency = "-" if e["latency_ms"] is None else f"{e['latency_ms']:.1f} ms"
        if fleet:
            n = per_endpoint.get(e["name"], 0)
            active: Cell = (f"{n} of {len(fleet)} processes", ("cyan",)) if n else "-"
        else:
            active = (style.sym("●", "*") + " (this host's view)", ("cyan",)) if e["active"] else "-"
        rows.append([
            e["name"], e["url"], f"{e['weight']:g}", (e["health"], HEALTH_STYLE.get(e["health"], ())),
            (e["breaker"], BREAKER_STYLE.get(e["breaker"], ())), latency, active,
        ])
        if e["health"] != "healthy" and (e["health_detail"] or e.get("last_error")):
            details[i] = e["health_detail"] or e["last_error"]
    lines = table(["ENDPOINT", "URL", "WEIGHT", "HEALTH", "BREAKER", "LATENCY", "ACTIVE"], rows, style)
    out.append(lines[0])
    for i, line in enumerate(lines[1:]):
        out.append(line)
        if i in details:
            out.append(style(f"  {style.sym('└', '`')} {details[i]}", "dim"))
    if cp["enabled"]:
        out.append("")
        if fleet:
            majority = Counter(p["active"] for p in fleet).most_common(1)[0][0]
            out.append(style(f"FLEET  {len(fleet)} process{'es' if len(fleet) != 1 else ''}", "bold"))
            out.extend(table(
                ["PROCESS", "APP", "ACTIVE", "FOR", "HOLD", "LAST SWITCH", "HEARTBEAT", "VERSION"],
                [process_row(p, majority, style) for p in fleet], style,
            ))
        else:
            out.append(style("FLEET  no live heartbeats", "bold"))
    code, verdict = status_verdict(st)
    out.append("")
    colours = {"OK": ("green", "bold"), "DOWN": ("red", "bold"), "SPLIT": ("red", "bold"), "DEGRADED": ("yellow", "bold")}
    for level, head, todo in verdict:
        out.append(f"{style(level, *colours.get(level, ('cyan',)))}  {head}")
        if todo:
            out.append(f"{' ' * (len(level) + 2)}{style(style.sym('→', '->') + ' ' + todo, 'dim')}")
    return code, "\n".join(out)


def straggler_line(hb: Heartbeat, override_id: str) -> str:
    app = f" ({hb.app})" if hb.app else ""
    if hb.override != override_id:
        why = "has not picked up the record yet (busy, or cannot read it from its endpoint)"
    elif hb.note:
        why = hb.note
    else:
        why = "picked up the record but traffic has not moved yet"
    return f"{hb.key}{app} on {hb.active or 'no endpoint'}: {why}"


def result_json(engine: FailoverEngine, result: ActionResult) -> dict[str, Any]:
    return {
        "name": engine.name,
        "override": asdict(result.override),
        "written_to": result.written_to,
        "failed": result.failed,
        "moved": [asdict(hb) | {"key": hb.key} for hb in result.moved],
        "stragglers": [asdict(hb) | {"key": hb.key} for hb in result.stragglers],
        "ok": result.ok,
        "waited": round(result.waited, 3),
    }


__all__ = ["render_status", "result_json", "status_verdict", "straggler_line"]
