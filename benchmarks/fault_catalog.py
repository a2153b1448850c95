"""The faults of the fault matrix, and one run's servers: what is done to region ``a`` and how it is undone.

A run (:class:`Run`) owns two durable ``redis-server`` processes from the test
kit, ``a`` (weight 2) and ``b`` (weight 1), and whatever a fault needs in front
of them (a ``FaultProxy``, iptables rules in the private network namespace,
the fake Redis Software REST API). Each fault is a script that injects at
``run.injected()``, waits with ``run.until(seconds)`` and heals; ``restore``
undoes whatever is left so the counters can be read.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from fault_ledger import Incarnation

from geofailover_core.defaults import DEFAULTS
from geofailover_core.testing import FakeRestServer, FaultProxy, IptablesFaults, RedisServer
from geofailover_core.testing.ports import pick_free_port

DURABLE = ("--appendonly", "yes", "--appendfsync", "always")

# Each INCR surface's counter key (django-redis's make_key: KEY_PREFIX "" and version 1).
INCR_KEYS = {
    "core": "fm:core:ctr",
    "core_all": "fm:core_all:ctr",
    "async": "fm:async:ctr",
    "multidb": "fm:multidb:ctr",
    "multidb_tuned": "fm:multidb_tuned:ctr",
    "django": ":1:fm:django:ctr",
    "flask": "fm:flask:ctr",
}
MULTIDB = {"multidb", "multidb_tuned"}

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
    netns: bool = False  # inside a private network namespace: the blackhole is an iptables rule
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
        if self.fault.proxy or (self.fault.key == "blackhole" and not self.settings.netns):
            self.proxy = FaultProxy(self.a, name="a")
        if self.fault.key == "blackhole" and self.settings.netns:
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


