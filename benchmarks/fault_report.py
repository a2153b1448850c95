"""The fault matrix's report: per-cell summaries, the tables, the README section, the timelines."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import statistics
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import redis
from fault_catalog import FAULTS, Settings
from fault_ledger import summarize

from geofailover_core.defaults import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BEGIN, END = "<!-- fault-matrix:begin -->", "<!-- fault-matrix:end -->"

# Columns, in table order.
SURFACES: dict[str, str] = {
    "core": "FailoverRedis (defaults)",
    "core_all": "FailoverRedis, retry_on_failover=all",
    "async": "AsyncFailoverRedis (defaults)",
    "multidb": "MultiDBClient (defaults)",
    "multidb_tuned": "MultiDBClient tuned",
    "django": "Django cache",
    "flask": "Flask app",
    "celery": "Celery",
}
PENDING: dict[str, str] = {}  # a column whose surface does not exist yet: shown, never measured
OURS = {"core", "core_all", "async", "django", "flask", "celery"}  # a lost write or task here fails the run
READ_ONLY = {"core", "async", "django", "flask"}  # default retry policy: a proven duplicate fails the run too


def failures(cell: dict[str, Any], surface: str) -> list[str]:
    """What makes the run fail: a lost acknowledged write or task (never a time)."""
    acc = cell.get("accounting") or {}
    problems = []
    if surface == "celery":
        if acc.get("lost"):
            died = "" if acc.get("worker_alive", True) else f" (the worker died of `{acc.get('worker_died_of')}`)"
            problems.append(f"{len(acc['lost'])} acknowledged task(s) never ran{died}: {acc['lost'][:10]}")
        if acc.get("results_missing") or acc.get("results_wrong"):
            problems.append(
                f"results of tasks that ran: {len(acc['results_missing'])} never stored, {acc.get('results_wrong')} stored as a failure "
                f"(of {acc.get('ran_distinct')})"
            )
    else:
        if acc.get("lost"):
            problems.append(f"{acc['lost']} acknowledged write(s) lost ({acc['per_endpoint']})")
        if surface in READ_ONLY and acc.get("dup_min"):
            problems.append(f"{acc['dup_min']} write(s) applied twice under retry_on_failover=read_only ({acc['per_endpoint']})")
    return problems


# ----------------------------------------------------------------------------------------------
# reporting
# ----------------------------------------------------------------------------------------------


def fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.1f} s"


def cell_summary(runs: list[dict[str, Any]], surface: str) -> dict[str, Any]:
    cells = [r["surfaces"][surface] for r in runs if surface in r["surfaces"]]
    serving = summarize([c["serving_s"] for c in cells])
    errors = [c["error_types"] for c in cells]
    lat = {k: [c[k] for c in cells] for k in ("p50_ms", "p99_ms", "max_ms")}
    acc = [c.get("accounting") or {} for c in cells]
    if surface == "celery":
        lost = sum(len(a.get("lost", [])) for a in acc)
        dups = sum(a.get("duplicates", 0) for a in acc)
    else:
        lost = sum(a.get("lost", 0) for a in acc)
        dups = sum(a.get("dup_min", 0) for a in acc)
    return {
        "n": len(cells),
        "serving": serving,
        "serving_runs": [c["serving_s"] for c in cells],
        "errors_runs": [c["errors"] for c in cells],
        "error_types": dict(sum((Counter(e) for e in errors), Counter())),
        "latency": {k: {"median": statistics.median(v), "worst": max(v)} for k, v in lat.items()} if cells else {},
        "switches_runs": [len(c["switches"]) for c in cells],
        "switch_moments": [[(round(sw[0] - r["t_fault"], 2), sw[2]) for sw in r["surfaces"][surface]["switches"]] for r in runs if surface in r["surfaces"]],
        "lost": lost,
        "dups": dups,
        "unacked_applied": sum(a.get("unacked_applied", 0) for a in acc),
        "problems": [p for c in cells for p in failures(c, surface)],
        "accounting_runs": acc,
    }


def short_cell(summary: dict[str, Any], surface: str) -> str:
    sv = summary["serving"]
    if sv["recovered"] == 0:
        head = "not serving at the end"
    else:
        head = f"serving after {fmt_s(sv['median'])}"
        if summary["n"] > 1 and sv["worst"] != sv["median"]:
            head += f" (worst {fmt_s(sv['worst'])})"
        if sv["recovered"] < sv["n"]:
            head += f"; {sv['n'] - sv['recovered']}/{sv['n']} not serving at the end"
    errs = summary["errors_runs"]
    med = statistics.median(errs)
    err_text = f"{med:g} error{'s' if med != 1 else ''}" + (f" (≤ {max(errs)})" if max(errs) != med else "")
    lost = summary["lost"]
    tail = f"{lost} lost" if lost == 0 else f"**{lost} LOST**"
    if summary["dups"]:
        tail += f" · {summary['dups']} {'duplicate runs' if surface == 'celery' else 'applied twice'}"
    return f"{head} · {err_text} · {tail}"


def render(results: dict[str, Any], s: Settings) -> str:
    cols = [c for c in SURFACES if c in s.surfaces or c in PENDING]
    lines = ["| Fault | " + " | ".join(SURFACES[c] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for fault_key, per in results["faults"].items():
        row = [FAULTS[fault_key].title]
        for c in cols:
            row.append(f"— ({PENDING[c]})" if c in PENDING else short_cell(per["summary"][c], c))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def render_details(results: dict[str, Any], s: Settings) -> str:
    lines = [
        "| Fault | Surface | serving again: median [best-worst] | errors per run (types, all runs) | latency in the fault window p50 / p99 / max (median of runs; worst max) | switches per run | accounting (all runs) |",
        "|---|---|---|---|---|---|---|",
    ]
    for fault_key, per in results["faults"].items():
        for c in (c for c in SURFACES if c in s.surfaces):
            sm = per["summary"][c]
            sv = sm["serving"]
            serving = f"{fmt_s(sv['median'])} [{fmt_s(sv['best'])}-{fmt_s(sv['worst'])}]" if sv["recovered"] else "never"
            if sv["recovered"] and sv["recovered"] < sv["n"]:
                serving += f" ({sv['n'] - sv['recovered']} never)"
            types = ", ".join(f"{k}x{v}" for k, v in sorted(sm["error_types"].items()))
            lat = sm["latency"]
            latency = f"{lat['p50_ms']['median']:.1f} / {lat['p99_ms']['median']:.0f} / {lat['max_ms']['median']:.0f} ms (worst {lat['max_ms']['worst']:.0f})"
            if c == "celery":
                acc = sm["accounting_runs"]
                accounting = (
                    f"sent {sum(a.get('sent_acked', 0) for a in acc)}, ran {sum(a.get('ran_distinct', 0) for a in acc)}, "
                    f"lost {sm['lost']}, duplicate runs {sm['dups']}, results {sum(a.get('results_fetched', 0) for a in acc)}"
                )
            else:
                acc = sm["accounting_runs"]
                accounting = (
                    f"acked {sum(a.get('acked', 0) for a in acc)}, lost {sm['lost']}, applied unacknowledged {sm['unacked_applied']} "
                    f"(≤ failed calls unless applied twice), applied twice ≥ {sm['dups']}"
                )
            lines.append(
                f"| {FAULTS[fault_key].title} | {SURFACES[c]} | {serving} | {' · '.join(str(e) for e in sm['errors_runs'])}"
                f"{f' ({types})' if types else ''} | {latency} | {switch_text(sm)} | {accounting} |"
            )
    return "\n".join(lines)


def switch_text(sm: dict[str, Any]) -> str:
    """Switches per run; for a run with few, when (seconds from the fault) and to which region."""
    parts = []
    for moments in sm["switch_moments"]:
        if 0 < len(moments) <= 3:
            parts.append(f"{len(moments)} (" + ", ".join(f"→{to} {t:+.1f} s" for t, to in moments) + ")")
        else:
            parts.append(str(len(moments)))
    return " · ".join(parts)


def headline(results: dict[str, Any]) -> list[str]:
    """Freeze and blackhole: median and worst time to serving again, core and Django vs MultiDBClient."""
    budget = float(DEFAULTS["health_check_timeout"]) + 0.1
    out = []
    for fault_key in ("freeze", "blackhole"):
        per = results["faults"].get(fault_key)
        if per is None:
            continue
        parts = []
        for c in ("core", "async", "django", "multidb", "multidb_tuned"):
            sm = per["summary"].get(c)
            if sm is None:
                continue
            sv = sm["serving"]
            parts.append(f"{SURFACES[c]} {fmt_s(sv['median'])} median, {fmt_s(sv['worst'])} worst (n={sv['n']})")
        verdict = ""
        judged = {c: per["summary"][c]["serving"]["worst"] for c in ("core", "django") if c in per["summary"]}
        if judged:
            missed = [f"{SURFACES[c]} (worst {fmt_s(w)})" for c, w in judged.items() if w is None or w > budget]
            verdict = (
                f" Target (at most health_check_timeout + 100 ms = {budget * 1000:.0f} ms, worst run, "
                + " and ".join(SURFACES[c] for c in judged) + "): "
                + ("met." if not missed else "NOT met by " + ", ".join(missed) + ".")
            )
        out.append(f"- **{FAULTS[fault_key].title}**: " + "; ".join(parts) + "." + verdict)
    return out


def verdicts(results: dict[str, Any]) -> list[str]:
    """Flapping damped? No failback to a lagging member? Read from the switch moments."""
    out = []
    per = results["faults"].get("flapping")
    if per is not None:
        worst = {c: max(sm["switches_runs"]) for c, sm in per["summary"].items()}
        out.append(
            "- **flapping**: most switches in one run (a flaps for 30 s, observed 42 s; bound for geofailover: 2, one failover "
            "and one failback 10 s after the flapping stops, because a is never up for the 10 s grace period): "
            + ", ".join(f"{SURFACES[c]} {n}" for c, n in worst.items()) + "."
        )
    per = results["faults"].get("lagging")
    if per is not None:
        parts = []
        for c in per["summary"]:
            runs = [r for r in per["runs"] if c in r["surfaces"]]
            early = 0
            delays = []
            for r in runs:
                backs = [sw[0] for sw in r["surfaces"][c]["switches"] if sw[2] == "a" and sw[0] > r["t_fault"] + 2.0]
                early += sum(1 for t in backs if t < r["t_heal"])
                if backs and backs[0] >= r["t_heal"]:
                    delays.append(backs[0] - r["t_heal"])
            text = f"{SURFACES[c]}: {early} failback(s) while lagging"
            if delays:
                text += f", back on a {fmt_s(statistics.median(delays))} after it caught up"
            parts.append(text)
        out.append("- **lagging member**: " + "; ".join(parts) + ".")
    return out


def machine(binary: Any, netns: bool) -> dict[str, Any]:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "redis_py": redis.__version__,
        "server": f"{binary.flavour} {binary.version_string}",
        "git": commit,
        "netns": netns,
    }


def failure_lines(results: dict[str, Any]) -> list[str]:
    """Every lost write or task of a geofailover surface, one line each (the run's exit code is 1 if any)."""
    lines = []
    for fault_key, per in results["faults"].items():
        for c, sm in per["summary"].items():
            if c in OURS:
                seen = list(dict.fromkeys(sm["problems"]))  # the same finding in several runs: once
                lines += [f"- {FAULTS[fault_key].title} x {SURFACES[c]}: {p}" for p in seen]
    return lines


def write_readme(table: str, details: str, results: dict[str, Any], s: Settings) -> None:
    m = results["machine"]
    loads = [r["load_before"][0] for per in results["faults"].values() for r in per["runs"]]
    section = [
        BEGIN,
        f"Measured {m['date']} (git {m['git']}) on {m['nproc']} cores, Python {m['python']}, redis-py {m['redis_py']}, {m['server']}; "
        f"{results['duration_s'] / 60:.1f} min, n={s.reps} per cell (n={s.headline_reps} for freeze and blackhole); "
        f"1-min load average during the runs {min(loads):.1f}-{max(loads):.1f}. "
        "Each cell: median time from the fault to serving again (worst run in parentheses) · errors the caller saw per run (median) · "
        "acknowledged writes (Celery: acknowledged tasks) lost, over all runs. Regenerate with `./dev.sh faults`; "
        "how each figure is measured: [benchmarks/README.md](benchmarks/README.md#fault-matrix).",
        "",
        table,
        "",
        *headline(results),
        *verdicts(results),
        "",
        *(["**Failures this run found** (the command exits 1 on these):", "", *failure_lines(results), ""] if failure_lines(results) else []),
        "![Timeline of a frozen region (SIGSTOP): call latency per surface, errors, switches](docs/img/fault-freeze.png)",
        "",
        "<details><summary>Every cell in detail (latency percentiles, error types, switches, accounting)</summary>",
        "",
        details,
        "",
        "Faults: " + "; ".join(f"**{FAULTS[k].title}**: {FAULTS[k].what}" for k in results["faults"]) + ".",
        "",
        "</details>",
        END,
    ]
    text = README.read_text()
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _m: "\n".join(section), text, flags=re.S)
    else:
        raise SystemExit(f"{README} has no {BEGIN} ... {END} markers")
    README.write_text(text)


def draw(results: dict[str, Any], s: Settings, img_dir: Path) -> None:
    import fault_plots

    for fault_key, per in results["faults"].items():
        runs = per["runs"]
        # The run whose core time is the median of its runs: a typical picture, not the best one.
        key = "core" if "core" in s.surfaces else s.surfaces[0]
        ordered = sorted(runs, key=lambda r: r["surfaces"][key]["serving_s"] if r["surfaces"][key]["serving_s"] is not None else 1e9)
        run = ordered[len(ordered) // 2]
        panels = []
        for c in (c for c in SURFACES if c in s.surfaces):
            cell = run["surfaces"][c]
            note = f"serving after {fmt_s(cell['serving_s'])} · {cell['errors']} errors"
            panels.append({
                "label": SURFACES[c], "records": cell["records"], "t_fault": run["t_fault"], "t_heal": run["t_heal"],
                "t_end": run["t_end"], "switches": cell["switches"], "note": note,
            })  # fmt: skip
        fault_plots.timeline(img_dir / f"fault-{fault_key.replace('_', '-')}.png", f"{FAULTS[fault_key].title}: {FAULTS[fault_key].what}", panels)


