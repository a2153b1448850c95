"""What ``status`` and the actions print: tables, verdicts and hints an operator can act on.

The subject of ``status`` is the fleet: what its processes report (their
active endpoint, their breakers, their health checks). This host's own
probes are shown beside it, labelled as such; without a fleet, they are all
there is, and the verdict says the fleet's state is unknown.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from ..control.records import ActionResult, Heartbeat, format_duration
from ..engine import FailoverEngine
from ..terminal import BREAKER_STYLE, HEALTH_STYLE, Cell, Style, ago, table
from .parser import EXIT_DEGRADED, EXIT_ERROR, EXIT_NO_FLEET, EXIT_OK, worst

#: ``command("unpin")`` -> the command line to type, as the user typed this one.
CommandLine = Callable[[str], str]


def standalone(sub: str) -> str:
    return f"geofailover {sub}"


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


def _counted(counts: dict[str, int], reporting: int, styles: Mapping[str, tuple[str, ...]], good: str) -> Cell:
    """``healthy`` when every reporting process agrees, else ``unhealthy 1/3, healthy 2/3``."""
    if not reporting:
        return "-"
    if len(counts) == 1:
        [state] = counts
        return (state, styles.get(state, ()))
    ordered = sorted(counts.items(), key=lambda kv: (kv[0] == good, -kv[1]))
    text = ", ".join(f"{state} {n}/{reporting}" for state, n in ordered)
    return (text, styles.get(ordered[0][0], ()))


def _problems(e: dict[str, Any]) -> tuple[list[str], bool]:
    """What the fleet reports wrong with one endpoint, and whether this host sees it unhealthy."""
    fl = e["fleet"]
    reporting = fl["reporting"]
    parts = []
    unhealthy = fl["health"].get("unhealthy", 0)
    if unhealthy:
        parts.append(f"unhealthy in {unhealthy} of {reporting} processes")
    tripped = sum(n for state, n in fl["breaker"].items() if state != "closed")
    if tripped:
        parts.append(f"breaker open in {tripped} of {reporting} processes")
    return parts, e["here"]["health"] != "healthy"


def status_verdict(st: dict[str, Any], command: CommandLine = standalone) -> tuple[int, list[tuple[str, str, str]]]:
    """Exit code and (level, headline, what to do) lines an operator can act on."""
    lines: list[tuple[str, str, str]] = []
    codes = [EXIT_OK]
    endpoints = st["endpoints"]
    fleet = st["fleet"]
    cp = st["control_plane"]
    serving = st["active"]
    here_healthy = [e for e in endpoints if e["here"]["health"] == "healthy"]
    if fleet and all(p["active"] is None for p in fleet):
        codes.append(EXIT_ERROR)
        lines.append((
            "DOWN", f"no process of the fleet has an endpoint ({len(fleet)} reporting)",
            "commands fail fast with NoHealthyEndpointError; check the Redis servers and the network from the application hosts",
        ))
    if not here_healthy:
        if serving is not None:
            codes.append(EXIT_DEGRADED)
            lines.append(("DEGRADED", f"no endpoint answers health checks from this host, while the fleet uses {serving}",
                          "check the network path from this host"))
        elif not fleet:
            codes.append(EXIT_ERROR)
            lines.append((
                "DOWN", "no endpoint answers health checks from this host",
                "commands fail fast with NoHealthyEndpointError; check the Redis servers and the network path from here",
            ))
    serving_weight = next((e["weight"] for e in endpoints if e["name"] == (serving or st["here"]["active"])), None)
    for e in endpoints:
        parts, here_bad = _problems(e)
        if (not parts and not here_bad) or (here_bad and not here_healthy and not parts):
            continue
        codes.append(EXIT_DEGRADED)
        here = e["here"]
        detail = here["health_detail"] or here.get("last_error") or "no detail"
        if parts:
            seen_here = f"{here['health']} from here: {detail}" if here_bad else f"{here['health']} from here"
            headline = f"{e['name']} is {' and '.join(parts)} ({seen_here})"
        else:
            headline = f"{e['name']} is {here['health']} from here: {detail}"
        if serving_weight is not None and e["weight"] > serving_weight:
            todo = f"traffic is on {serving or st['here']['active']} and returns by itself once {e['name']} has been healthy for failback_grace_period"
        elif e["name"] == serving:
            todo = "traffic is still on it in the processes that reach it"
        else:
            todo = "it is a standby: nothing moves now, but it cannot take traffic if the active endpoint fails"
        lines.append(("DEGRADED", headline, f"{todo}; check that server and the network to it"))
    override = st.get("override")
    if override and override["in_force"]:
        left = f", lapses in {format_duration(override['remaining'])}" if override.get("remaining") is not None else ""
        undo = command("unpin") if override["action"] == "pin" else command("failback")
        lines.append(("NOTE", f"operator override in force: {override['description']}{left}", f"automatic failback is suspended; end it with `{undo}`"))
    elif fleet:
        holding = Counter(p["hold"]["endpoint"] for p in fleet if p.get("hold"))
        for endpoint, n in holding.items():
            lines.append((
                "NOTE", f"{n} of {len(fleet)} processes hold {endpoint} (an earlier failover or pin; no override in force)",
                f"automatic failback is suspended there; end it with `{command('failback')}`",
            ))
    rejected: dict[str, list[str]] = {}
    for record in st.get("invalid_records", []):
        rejected.setdefault(record["why"], []).append(record["endpoint"])
    for why, where in rejected.items():
        codes.append(EXIT_DEGRADED)
        lines.append((
            "INVALID", f"the override record on {', '.join(where)} is rejected by every process: {why}",
            f"nothing follows it; replace it with `{command('override clear')}` (any action replaces it too)",
        ))
    for beat in st.get("invalid_heartbeats", []):
        lines.append((
            "INVALID", f"heartbeat {beat['field']!r} on {beat['endpoint']} is rejected: {beat['why']}",
            "written by hand or by another version; the fleet's housekeeping deletes it",
        ))
    if cp["enabled"]:
        if not fleet:
            codes.append(EXIT_NO_FLEET)
            lines.append((
                "UNKNOWN", f"no process reports heartbeats for configuration {st['name']!r} under key prefix {cp['prefix']!r}: "
                "the fleet's state is unknown, and what is shown is this host's view",
                "if applications are running: do they use this configuration name (--name) and key prefix "
                "(-o control_key_prefix=...), with control_plane on?",
            ))
        for d in st["disagreements"]:
            codes.append(EXIT_DEGRADED)
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
        # Fleet tracking was switched off on purpose: the report is this host's, and so is the exit code.
        lines.append((
            "NOTE", "control_plane is off for this configuration: the fleet is not visible, and what is shown is this host's view",
            "failover commands cannot reach other processes either; enable control_plane in the apps' configuration",
        ))
    code = worst(codes)
    if code == EXIT_OK and not any(level in ("DOWN", "DEGRADED", "SPLIT", "CLOCK", "INVALID") for level, _, _ in lines):
        users = f"{len(fleet)} process{'es' if len(fleet) != 1 else ''} on {serving}" if fleet else f"this host would use {st['here']['active']}"
        lines.insert(0, ("OK", f"all {len(endpoints)} endpoints healthy; {users}", ""))
    return code, lines


def render_status(st: dict[str, Any], style: Style, command: CommandLine = standalone) -> tuple[int, str]:
    """One configuration's status as text for people."""
    out: list[str] = []
    cp = st["control_plane"]
    header = f"configuration {style(repr(st['name']), 'bold')}"
    if st.get("app_label"):
        header += f" (app {st['app_label']})"
    header += f"  key prefix {cp['prefix']!r}" if cp["enabled"] else "  control plane off"
    out.append(header)
    override = st.get("override")
    if override and override["action"] == "clear":
        out.append(f"override: none (cleared by {override['who']} {ago(override['age'])})")
    elif override:
        state = "in force" if override["in_force"] else "no longer in force"
        if override.get("remaining") is not None and override["in_force"]:
            state += f", lapses in {format_duration(override['remaining'])}"
        out.append(f"override: {override['description']}, {ago(override['age'])}, {state}")
    elif st.get("invalid_records"):
        out.append(style("override: INVALID (ignored by every process, see below)", "red"))
    elif cp["enabled"]:
        out.append("override: none")
    if override and any(v != "current" for v in override["copies"].values()):
        # Processes copy the record there themselves; shown so nobody is surprised meanwhile.
        out.append(style("          copies: " + ", ".join(f"{k} {v}" for k, v in override["copies"].items()), "dim"))
    out.append("")
    fleet = st["fleet"]
    here_active = st["here"]["active"]
    rows: list[list[Cell]] = []
    details: dict[int, str] = {}
    for i, e in enumerate(st["endpoints"]):
        fl, here = e["fleet"], e["here"]
        latency = "-" if here["latency_ms"] is None else f"{here['latency_ms']:.1f} ms"
        active: Cell = (f"{fl['active']} of {len(fleet)}", ("cyan",)) if fl["active"] else "-"
        mine: Cell = (style.sym("●", "*"), ("cyan",)) if e["name"] == here_active else "-"
        rows.append([
            e["name"], e["url"], f"{e['weight']:g}",
            active, _counted(fl["health"], fl["reporting"], HEALTH_STYLE, "healthy"),
            _counted(fl["breaker"], fl["reporting"], BREAKER_STYLE, "closed"),
            mine, (here["health"], HEALTH_STYLE.get(here["health"], ())), (here["breaker"], BREAKER_STYLE.get(here["breaker"], ())), latency,
        ])
        if here["health"] != "healthy" and (here["health_detail"] or here.get("last_error")):
            details[i] = "from here: " + (here["health_detail"] or here["last_error"])
    fleet_title = f"FLEET ({len(fleet)} process{'es' if len(fleet) != 1 else ''})" if fleet else "FLEET (none reporting)"
    lines = table(
        ["ENDPOINT", "URL", "WEIGHT", "ACTIVE", "HEALTH", "BREAKER", "ACTIVE", "HEALTH", "BREAKER", "LATENCY"], rows, style,
        groups=[("", 3), (fleet_title, 3), ("THIS HOST", 4)],
    )
    out.extend(lines[:2])
    for i, line in enumerate(lines[2:]):
        out.append(line)
        if i in details:
            out.append(style(f"  {style.sym('└', '`')} {details[i]}", "dim"))
    if cp["enabled"]:
        out.append("")
        if fleet:
            out.append(style(f"PROCESSES  {len(fleet)}", "bold"))
            out.extend(table(
                ["PROCESS", "APP", "ACTIVE", "FOR", "HOLD", "LAST SWITCH", "HEARTBEAT", "VERSION"],
                [process_row(p, st["active"], style) for p in fleet], style,
            ))
        else:
            out.append(style("PROCESSES  no live heartbeats", "bold"))
    code, verdict = status_verdict(st, command)
    out.append("")
    colours = {"OK": ("green", "bold"), "DOWN": ("red", "bold"), "SPLIT": ("red", "bold"), "INVALID": ("red", "bold"),
               "DEGRADED": ("yellow", "bold"), "UNKNOWN": ("yellow", "bold")}
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


def result_json(engine: FailoverEngine, result: ActionResult, code: int) -> dict[str, Any]:
    return {
        "name": engine.name,
        "code": code,
        "override": asdict(result.override),
        "written_to": result.written_to,
        "failed": result.failed,
        "listening": result.listening,
        "acknowledged": [hb.key for hb in result.acknowledged],
        "moved": [asdict(hb) | {"key": hb.key} for hb in result.moved],
        "stragglers": [asdict(hb) | {"key": hb.key} for hb in result.stragglers],
        "ok": result.ok,
        "waited": round(result.waited, 3),
    }


def count(items: list[Heartbeat]) -> str:
    return ", ".join(f"{n} on {a}" for a, n in Counter(hb.active for hb in items).items())


__all__ = ["CommandLine", "count", "render_status", "result_json", "standalone", "status_verdict", "straggler_line"]
