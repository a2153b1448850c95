#!/usr/bin/env python
"""Side-by-side benchmark: plain ``redis.Redis``, redis-py ``MultiDBClient`` and ``FailoverRedis``.

Run from the repository root with the project's virtualenv::

    python benchmarks/failover_bench.py            # full run, ~4-5 minutes
    python benchmarks/failover_bench.py --quick    # one repetition, < 60 s
    python benchmarks/failover_bench.py --json     # also print the results as one JSON line (last line)

Everything happens on 127.0.0.1 against real ``redis-server`` processes that
this script starts itself (two per repetition: endpoint ``a``, preferred, and
endpoint ``b``) and always kills on exit, Ctrl-C or error.

Measurements (see benchmarks/README.md for how to read them):

a) per-operation overhead of GET/SET, the clients interleaved on one server;
b) ``kill -9`` of the active endpoint under a steady loop (SET + GET every
   10 ms, one thread): time to the first successful iteration served by ``b``,
   errors raised to the caller, longest single call;
c) the same with ``SIGSTOP`` (a frozen endpoint);
d) failback: after a kill-caused failover, restart ``a`` on the same port and
   time until the loop is served by ``a`` again.

Which endpoint served an iteration is read from the data, not from client
internals: every server holds a marker key (``bench:whoami`` = its name) and
each iteration's GET reads it.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import dataclasses
import datetime as dt
import gc
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.multidb.client import MultiDBClient
from redis.multidb.config import DatabaseConfig, MultiDbConfig
from redis.retry import Retry

import geofailover_core
from geofailover_core import FailoverRedis
from geofailover_core.defaults import DEFAULTS

HOST = "127.0.0.1"  # all traffic stays on loopback
MARKER = "bench:whoami"
LOOP_KEY = "bench:loop"

# MultiDBClient's documented defaults that decide the timings below (redis-py 8.1 source).
MULTIDB_DEFAULT_FALLBACK_INTERVAL = 120.0

# The shortened failback settings used for the measured failback row.
OURS_SHORT_GRACE = 2.0
MULTIDB_SHORT_FALLBACK = 2.0

# "geofailover tuned" column (full mode): faster detection for a low-latency network.
OURS_TUNED: dict[str, Any] = {
    "socket_timeout": 0.5,
    "socket_connect_timeout": 0.5,
    "probe_interval": 0.5,
    "health_check_timeout": 0.25,
    "confirm_timeout": 0.5,
    "failback_grace_period": OURS_SHORT_GRACE,
}

# "MultiDBClient tuned" (used by fault_matrix.py): redis-py's knobs set to match FailoverRedis's
# defaults where they mean the same thing (probe every 1 s with a 0.5 s timeout, 1 s socket
# timeouts, 3 failures open the circuit, traffic returns after 10 s, a failed database is retried after 2 s).
MULTIDB_TUNED: dict[str, Any] = {
    "health_check_interval": 1.0,
    "health_check_probes": 1,
    "health_check_delay": 0.05,
    "health_check_timeout": 0.5,
    "min_num_failures": 3,
    "auto_fallback_interval": 10.0,
    "failover_delay": 0.5,
}
MULTIDB_TUNED_DATABASE: dict[str, Any] = {
    "grace_period": 2.0,
    "client_kwargs": {"socket_timeout": 1.0, "socket_connect_timeout": 1.0},
}

SCENARIOS = ("overhead", "first", "kill", "freeze", "failback")

log = logging.getLogger("failover_bench")


class BenchError(RuntimeError):
    """A benchmark step could not be carried out (not a measured failure)."""


@dataclass(frozen=True)
class Settings:
    quick: bool
    reps: int
    rounds: int
    ops: int
    period: float  # seconds between the starts of two loop iterations
    cap: float  # longest wait for a failover/failback before recording "> cap"
    plain_window: float  # how long the single-endpoint client is observed after a fault
    tail: float  # how long the loop keeps running after recovery (late errors are counted)
    settle: float  # time on the secondary before the primary is restarted (failback)
    warmup_ok: int  # successful iterations on "a" before a fault is injected
    tuned: bool  # run the "FailoverRedis tuned" column
    default_failback: bool  # also measure our failback with the default grace period (n=1)
    placements: int  # overhead: 1 = client and server on one core only, 2 = also on two cores
    stratify: bool  # spread fault times over the clients' probe periods (see phase_delay)
    first_rounds: int = 15  # first command: interleaved rounds (a new client each)


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# redis-server processes
# ----------------------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _resolve_prctl() -> Callable[..., int] | None:
    # Resolved in the parent: no symbol lookup between fork and exec.
    try:
        func: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return func


_PRCTL = _resolve_prctl()


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if this benchmark is SIGKILLed the server dies too.
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def find_redis_server(explicit: str | None) -> str:
    for candidate in (explicit, os.environ.get("REDIS_SERVER"), shutil.which("redis-server"), "/usr/bin/redis-server"):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise BenchError("redis-server not found: install it (apt-get install redis-server) or pass --redis-server PATH")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def control_client(port: int, timeout: float = 1.0) -> redis.Redis:
    """A client for the benchmark's own bookkeeping: no retries, short timeouts."""
    return redis.Redis(host=HOST, port=port, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))


class Server:
    """One redis-server process on a fixed loopback port that can be killed, frozen and restarted."""

    def __init__(self, binary: str, name: str, workdir: Path) -> None:
        self.binary = binary
        self.name = name
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{name}-{self.port}.log"
        _SERVERS.append(self)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self, deadline: float = 10.0) -> float:
        """Start (or restart on the same port); returns the monotonic time PING first answered."""
        if self.proc is not None and self.proc.poll() is None:
            raise BenchError(f"server {self.name} is already running")
        argv = [
            self.binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--dir", str(self.workdir), "--logfile", str(self.log_path),
        ]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
        until = time.monotonic() + deadline
        probe = control_client(self.port, timeout=0.2)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise BenchError(f"redis-server {self.name} exited with {self.proc.returncode}: {self._log_tail()}")
                try:
                    if probe.ping():
                        ready = time.monotonic()
                        probe.set(MARKER, self.name)
                        return ready
                except (redis.ConnectionError, redis.TimeoutError):
                    pass
                if time.monotonic() > until:
                    raise BenchError(f"redis-server {self.name} did not answer PING within {deadline:g}s: {self._log_tail()}")
                time.sleep(0.002)
        finally:
            probe.close()

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-5:])
        except OSError:
            return "(no log)"

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL and reap: when this returns the port refuses connections."""
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)

    def freeze(self) -> None:
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def version(self) -> str:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout
        return out.strip()


_SERVERS: list[Server] = []


def cleanup_servers() -> None:
    """SIGCONT then SIGKILL every server this process started (idempotent)."""
    for server in _SERVERS:
        with contextlib.suppress(Exception):
            server.kill()
    _SERVERS.clear()


def start_pair(binary: str, workdir: Path) -> tuple[Server, Server]:
    a = Server(binary, "a", workdir)
    b = Server(binary, "b", workdir)
    a.start()
    b.start()
    return a, b


def stop_pair(a: Server, b: Server) -> None:
    for server in (a, b):
        server.kill()
        with contextlib.suppress(ValueError):
            _SERVERS.remove(server)


# ----------------------------------------------------------------------------------------------
# the three (four) clients
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientSpec:
    key: str
    label: str
    build: Callable[[Server, Server, str], tuple[Any, Callable[[], None]]]
    """build(a, b, variant) -> (client, close); variant is "default", "failback", "failback_default" or (MultiDB, fault_matrix.py) "tuned"."""
    probe_period: float
    """Period of the client's health checks (0: none). Faults are injected at evenly spread
    phases of it, otherwise every run would hit the same point of the probe schedule and
    the "range" would only show the noise, not the real spread."""


def build_plain(a: Server, b: Server, variant: str) -> tuple[Any, Callable[[], None]]:
    client = redis.Redis(host=HOST, port=a.port)  # redis-py defaults: socket_timeout 5 s, 10 jittered retries
    return client, client.close


def multidb_config(a: Server, b: Server, variant: str) -> MultiDbConfig:
    extra: dict[str, Any] = {}
    database: dict[str, Any] = {}
    if variant == "failback":
        extra["auto_fallback_interval"] = MULTIDB_SHORT_FALLBACK
    elif variant == "tuned":
        extra.update(MULTIDB_TUNED)
        database.update(MULTIDB_TUNED_DATABASE)
    return MultiDbConfig(
        databases_config=[DatabaseConfig(from_url=a.url, weight=1.0, **database), DatabaseConfig(from_url=b.url, weight=0.5, **database)],
        **extra,
    )


def build_multidb(a: Server, b: Server, variant: str) -> tuple[Any, Callable[[], None]]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*is an experimental", category=UserWarning)
        client = MultiDBClient(multidb_config(a, b, variant))
    return client, client.close


def _ours_url(a: Server, b: Server) -> str:
    return f"{a.url}?name=a&weight=2;{b.url}?name=b&weight=1"


def _build_ours(a: Server, b: Server, options: dict[str, Any]) -> tuple[Any, Callable[[], None]]:
    client = FailoverRedis.from_url(_ours_url(a, b), name=f"bench-{uuid.uuid4().hex[:10]}", **options)

    def close() -> None:
        client.close()
        client.geofailover.close()

    return client, close


def build_ours(a: Server, b: Server, variant: str) -> tuple[Any, Callable[[], None]]:
    options: dict[str, Any] = {}
    if variant == "failback":
        options["failback_grace_period"] = OURS_SHORT_GRACE
    return _build_ours(a, b, options)


def build_ours_tuned(a: Server, b: Server, variant: str) -> tuple[Any, Callable[[], None]]:
    return _build_ours(a, b, dict(OURS_TUNED))


PLAIN = ClientSpec("plain", "plain redis.Redis", build_plain, 0.0)
MULTIDB = ClientSpec("multidb", "MultiDBClient (defaults)", build_multidb, float(MultiDbConfig.health_check_interval))
OURS = ClientSpec("ours", "FailoverRedis (defaults)", build_ours, float(DEFAULTS["probe_interval"]))
OURS_TUNED_SPEC = ClientSpec("ours_tuned", "FailoverRedis tuned", build_ours_tuned, float(OURS_TUNED["probe_interval"]))


def phase_delay(spec: ClientSpec, rep: int, s: Settings) -> float:
    """Stratified offset (rep + 0.5) / reps of the client's probe period: reproducible, and the
    runs together cover the whole probe cycle. Quick mode injects right after the warm-up."""
    return spec.probe_period * (rep + 0.5) / s.reps if s.stratify else 0.0


# ----------------------------------------------------------------------------------------------
# the steady traffic loop
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    start: float
    end: float
    ok: bool
    served: str | None  # "a" or "b" for a successful iteration
    error: str | None  # exception type the caller saw


class Traffic:
    """One thread doing SET + GET(marker) every ``period`` seconds, recording every iteration.

    Bounded in count and time. The thread calls ``close`` on exit, so a client
    still blocked in redis-py's retries when the scenario ends is closed by the
    thread that uses it, not under its feet.
    """

    def __init__(self, client: Any, close: Callable[[], None], period: float, max_seconds: float) -> None:
        self.client = client
        self.close = close
        self.period = period
        self.max_seconds = max_seconds
        self.max_ops = int(max_seconds / period) + 1000
        self.ops: list[Op] = []
        self.current_start: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-traffic", daemon=True)
        self._scan_from = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        client = self.client
        hard_stop = time.monotonic() + self.max_seconds
        next_start = time.monotonic()
        i = 0
        try:
            while not self._stop.is_set() and i < self.max_ops:
                now = time.monotonic()
                if now >= hard_stop:
                    break
                if now < next_start and self._stop.wait(next_start - now):
                    break
                t0 = time.monotonic()
                self.current_start = t0
                served: str | None = None
                error: str | None = None
                try:
                    client.set(LOOP_KEY, i)
                    value = client.get(MARKER)
                    # b always holds its marker; a restarted a is empty until the marker is re-set.
                    served = "b" if value in (b"b", "b") else "a"
                except Exception as exc:  # noqa: BLE001 - MultiDBClient raises non-redis exceptions too
                    error = type(exc).__name__
                t1 = time.monotonic()
                self.current_start = None
                self.ops.append(Op(t0, t1, error is None, served, error))
                i += 1
                next_start += self.period
                if next_start < t1:
                    next_start = t1  # never burst to catch up
        finally:
            with contextlib.suppress(Exception):
                self.close()

    def count_ok(self, served: str) -> int:
        return sum(1 for op in self.ops[:] if op.ok and op.served == served)

    def first_ok(self, served: str, after: float) -> Op | None:
        """First successful iteration served by ``served`` that ended after ``after``."""
        ops = self.ops
        n = len(ops)
        for idx in range(self._scan_from, n):
            op = ops[idx]
            if op.end > after and op.ok and op.served == served:
                return op
        return None

    def mark(self) -> None:
        """Start later scans from here (speeds up polling)."""
        self._scan_from = len(self.ops)

    def window(self, t_from: float, t_to: float) -> dict[str, Any]:
        """Errors and the longest call among iterations that ended in (t_from, t_to]."""
        ops = [op for op in self.ops[:] if t_from < op.end <= t_to]
        errors = Counter(op.error for op in ops if op.error)
        longest = max((op.end - max(op.start, t_from) for op in ops), default=0.0)
        still_blocked = False
        cur = self.current_start
        if cur is not None and t_to - max(cur, t_from) > longest:
            longest = t_to - max(cur, t_from)
            still_blocked = True
        return {
            "iterations": len(ops),
            "errors": sum(errors.values()),
            "error_types": dict(errors),
            "longest_call_s": round(longest, 4),
            "still_blocked": still_blocked,
        }


def wait_until(pred: Callable[[], bool], timeout: float, poll: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


_STRAGGLERS: list[Traffic] = []


@contextlib.contextmanager
def running(spec: ClientSpec, binary: str, workdir: Path, variant: str, settings: Settings) -> Iterator[tuple[Server, Server, Traffic]]:
    """Fresh servers + client + loop; torn down in every case."""
    a, b = start_pair(binary, workdir)
    loop: Traffic | None = None
    try:
        client, close = spec.build(a, b, variant)
        loop = Traffic(client, close, settings.period, max_seconds=4 * settings.cap + 120)
        loop.start()
        if not wait_until(lambda: loop is not None and loop.count_ok("a") >= settings.warmup_ok, 20.0):
            raise BenchError(f"{spec.label}: warm-up on endpoint a did not succeed within 20 s")
        yield a, b, loop
    finally:
        if loop is not None:
            loop.stop()
        a.kill()  # also thaws a frozen a, so a blocked call returns
        if loop is not None and not loop.join(0.5):
            _STRAGGLERS.append(loop)
        stop_pair(a, b)


# ----------------------------------------------------------------------------------------------
# scenarios
# ----------------------------------------------------------------------------------------------


def fault_once(spec: ClientSpec, fault: str, binary: str, workdir: Path, s: Settings, delay: float) -> dict[str, Any]:
    """kill -9 or SIGSTOP the active endpoint a under the loop; returns one repetition's metrics."""
    with running(spec, binary, workdir, "default", s) as (a, _b, loop):
        time.sleep(delay)
        loop.mark()
        t_fault = time.monotonic()
        if fault == "kill":
            a.kill()
        else:
            a.freeze()
        result: dict[str, Any] = {"phase_delay_s": round(delay, 3)}
        if spec.key == "plain":
            time.sleep(s.plain_window)
            t_end = time.monotonic()
            result.update(recovered=False, time_s=None, observed_s=round(t_end - t_fault, 3))
        else:
            engine = getattr(loop.client, "geofailover", None)
            switched: list[float] = []

            def on_b() -> bool:
                if engine is not None and not switched and engine.active == "b":
                    switched.append(time.monotonic())
                return loop.first_ok("b", t_fault) is not None

            wait_until(on_b, s.cap, poll=0.002)
            if switched:
                result["engine_active_b_s"] = round(switched[0] - t_fault, 4)
            first = loop.first_ok("b", t_fault)
            if first is None:
                t_end = time.monotonic()
                result.update(recovered=False, time_s=None, observed_s=round(t_end - t_fault, 3))
            else:
                time.sleep(s.tail)
                t_end = time.monotonic()
                result.update(recovered=True, time_s=round(first.end - t_fault, 4), observed_s=round(t_end - t_fault, 3))
        result.update(loop.window(t_fault, t_end))
        loop.stop()
        return result


def failback_once(spec: ClientSpec, variant: str, binary: str, workdir: Path, s: Settings, delay: float) -> dict[str, Any]:
    """kill a, wait for traffic on b, restart a on the same port, time until traffic is on a again."""
    with running(spec, binary, workdir, variant, s) as (a, _b, loop):
        loop.mark()
        t_kill = time.monotonic()
        a.kill()
        result: dict[str, Any] = {"phase_delay_s": round(delay, 3)}
        if spec.key == "plain":
            time.sleep(s.settle)  # nothing to fail over to: just be down for a while
        else:
            if not wait_until(lambda: loop.first_ok("b", t_kill) is not None, s.cap):
                t_end = time.monotonic()
                result.update(recovered=False, time_s=None, failover_ok=False, observed_s=round(t_end - t_kill, 3))
                result.update(loop.window(t_kill, t_end))
                return result
            time.sleep(s.settle + delay)
        loop.mark()
        t_restart = a.start()  # PING answered (marker set right after)
        engine_back: list[float] = []
        engine = getattr(loop.client, "geofailover", None)

        def back() -> bool:
            if engine is not None and not engine_back and engine.active == "a":
                engine_back.append(time.monotonic())
            return loop.first_ok("a", t_restart) is not None

        cap = s.cap if variant != "failback_default" else max(s.cap, float(DEFAULTS["failback_grace_period"]) + 20)
        wait_until(back, cap, poll=0.002)
        first = loop.first_ok("a", t_restart)
        if first is None:
            t_end = time.monotonic()
            result.update(recovered=False, time_s=None, observed_s=round(t_end - t_restart, 3))
        else:
            time.sleep(s.tail)
            t_end = time.monotonic()
            result.update(recovered=True, time_s=round(first.end - t_restart, 4), observed_s=round(t_end - t_restart, 3))
        if engine_back:
            result["engine_active_a_s"] = round(engine_back[0] - t_restart, 4)
        result.update(loop.window(t_restart, t_end))
        return result


def _quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 4:
        return min(xs), max(xs)
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def _ratios(us: list[float], base: list[float]) -> dict[str, Any]:
    ratios = [x / y for x, y in zip(us, base, strict=True)]
    deltas = [x - y for x, y in zip(us, base, strict=True)]
    q1, q3 = _quartiles(ratios)
    u1, u3 = _quartiles(us)
    return {
        "us_per_op": [round(x, 2) for x in us],
        "median_us": round(statistics.median(us), 2),
        "us_q1": round(u1, 2),
        "us_q3": round(u3, 2),
        "ratio_per_round": [round(x, 4) for x in ratios],
        "ratio_median": round(statistics.median(ratios), 4),
        "ratio_q1": round(q1, 4),
        "ratio_q3": round(q3, 4),
        "delta_us_median": round(statistics.median(deltas), 2),
    }


def _placements() -> list[tuple[str, int, int]]:
    """(name, server CPU, client CPU). On loopback the round trip depends mostly on whether
    client and server share a core (measured ~35 µs vs ~75 µs per op on the 2-vCPU VM);
    left to the scheduler the two modes mix and the noise hides a few-percent difference."""
    if not hasattr(os, "sched_getaffinity"):
        return []
    cpus = sorted(os.sched_getaffinity(0))
    places = [("same_core", cpus[-1], cpus[-1])]
    if len(cpus) >= 2:
        places.append(("separate_cores", cpus[-1], cpus[0]))
    return places


def overhead(specs: list[ClientSpec], binary: str, workdir: Path, s: Settings) -> dict[str, Any]:
    """Interleaved rounds of alternating SET/GET on one server; µs per operation.

    Each placement (client and server pinned to one core / to two cores) gets
    its own interleaved rounds; the clients' background threads are created
    before pinning and stay unpinned.
    """
    a, b = start_pair(binary, workdir)
    clients: dict[str, tuple[Any, Callable[[], None]]] = {}
    own_affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    value = b"x" * 16

    def run(client: Any, key: str, n: int) -> tuple[float, float]:
        """(wall seconds, this thread's CPU seconds) for n alternating SET/GET."""
        gc.collect()
        gc.disable()
        try:
            c0 = time.thread_time()
            t0 = time.perf_counter()
            for i in range(n):
                if i & 1:
                    client.get(key)
                else:
                    client.set(key, value)
            return time.perf_counter() - t0, time.thread_time() - c0
        finally:
            gc.enable()

    try:
        for spec in specs:
            clients[spec.key] = spec.build(a, b, "default")
        for spec in specs:  # warm-up: connections, MultiDB's initial health check, background threads
            run(clients[spec.key][0], f"bench:ovh:{spec.key}", 2000)
        out: dict[str, Any] = {}
        places = _placements()[: s.placements] or [("unpinned", -1, -1)]
        for place, server_cpu, client_cpu in places:
            if server_cpu >= 0 and a.proc is not None:
                os.sched_setaffinity(a.proc.pid, {server_cpu})
                os.sched_setaffinity(0, {client_cpu})  # this thread only
            for spec in specs:
                run(clients[spec.key][0], f"bench:ovh:{spec.key}", 500)
            wall: dict[str, list[float]] = {spec.key: [] for spec in specs}
            cpu: dict[str, list[float]] = {spec.key: [] for spec in specs}
            for r in range(s.rounds):
                order = specs[r % len(specs):] + specs[: r % len(specs)]  # rotate so no client is always first
                for spec in order:
                    elapsed, used = run(clients[spec.key][0], f"bench:ovh:{spec.key}", s.ops)
                    wall[spec.key].append(elapsed / s.ops * 1e6)
                    cpu[spec.key].append(used / s.ops * 1e6)
            progress(
                f"  {place}: median µs/op "
                + ", ".join(f"{k} {statistics.median(v):.1f} (cpu {statistics.median(cpu[k]):.1f})" for k, v in wall.items())
            )
            out[place] = {
                "server_cpu": server_cpu,
                "client_cpu": client_cpu,
                "clients": {
                    spec.key: {"wall": _ratios(wall[spec.key], wall["plain"]), "cpu": _ratios(cpu[spec.key], cpu["plain"])}
                    for spec in specs
                },
            }
        return out
    finally:
        if own_affinity is not None:
            os.sched_setaffinity(0, own_affinity)
        for _client, close in clients.values():
            with contextlib.suppress(Exception):
                close()
        stop_pair(a, b)


def first_command(specs: list[ClientSpec], binary: str, workdir: Path, s: Settings) -> dict[str, Any]:
    """From constructing a client to the reply of its first GET, ms; interleaved
    rounds, a new client each time (ours: a new engine name, so a new engine)."""
    a, b = start_pair(binary, workdir)
    times: dict[str, list[float]] = {spec.key: [] for spec in specs}
    try:
        for spec in specs:  # warm-up: imports and caches every client touches once per process
            client, close = spec.build(a, b, "default")
            client.get("bench:first")
            close()
        for r in range(s.first_rounds):
            order = specs[r % len(specs):] + specs[: r % len(specs)]
            for spec in order:
                gc.collect()
                t0 = time.perf_counter()
                client, close = spec.build(a, b, "default")
                client.get("bench:first")
                times[spec.key].append((time.perf_counter() - t0) * 1000)
                close()
        progress("  first command, median ms: " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in times.items()))
        ratios = {
            k: [x / p for x, p in zip(v, times["plain"], strict=True)] for k, v in times.items()
        }
        return {
            k: {
                "median_ms": round(statistics.median(v), 3),
                "ms_q1": round(_quartiles(v)[0], 3),
                "ms_q3": round(_quartiles(v)[1], 3),
                "ratio_median": round(statistics.median(ratios[k]), 3),
                "ratio_q1": round(_quartiles(ratios[k])[0], 3),
                "ratio_q3": round(_quartiles(ratios[k])[1], 3),
            }
            for k, v in times.items()
        }
    finally:
        stop_pair(a, b)


# ----------------------------------------------------------------------------------------------
# reporting
# ----------------------------------------------------------------------------------------------


def fmt_s(x: float) -> str:
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


def summarize(reps: list[dict[str, Any]]) -> dict[str, Any]:
    times = [r["time_s"] for r in reps if r.get("recovered")]
    return {
        "n": len(reps),
        "recovered": sum(1 for r in reps if r.get("recovered")),
        "time_median_s": round(statistics.median(times), 4) if times else None,
        "time_min_s": min(times) if times else None,
        "time_max_s": max(times) if times else None,
        "errors": [r["errors"] for r in reps],
        "longest_call_s": [r["longest_call_s"] for r in reps],
        "still_blocked": [r["still_blocked"] for r in reps],
        "error_types": dict(sum((Counter(r["error_types"]) for r in reps), Counter())),
    }


def cell_time(summary: dict[str, Any], cap: float) -> str:
    n, ok = summary["n"], summary["recovered"]
    if ok == 0:
        return f"> {cap:g} s (cap) x{n}"
    med, lo, hi = summary["time_median_s"], summary["time_min_s"], summary["time_max_s"]
    text = fmt_s(med) if n == 1 or ok == 1 else f"{fmt_s(med)} [{fmt_s(lo)}-{fmt_s(hi)}]"
    if ok < n:
        text += f"; {n - ok}/{n} > {cap:g} s cap"
    return text


def cell_errors(summary: dict[str, Any]) -> str:
    text = " · ".join(str(e) for e in summary["errors"])
    types = ", ".join(f"{k}x{v}" for k, v in sorted(summary["error_types"].items()))
    return f"{text} ({types})" if types else text


def cell_longest(summary: dict[str, Any]) -> str:
    parts = [("≥ " if blocked else "") + fmt_s(x) for x, blocked in zip(summary["longest_call_s"], summary["still_blocked"], strict=True)]
    return " · ".join(parts)


def machine_info(binary: str) -> dict[str, Any]:
    try:
        commit = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent.parent), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent.parent), "status", "--porcelain", "--untracked-files=all"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", []
    server_version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    try:
        pybreaker_version = importlib.metadata.version("pybreaker")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        pybreaker_version = "-"
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "redis_py": redis.__version__,
        "pybreaker": pybreaker_version,
        "geofailover": geofailover_core.__version__,
        "git_commit": commit,
        "git_modified": [line[3:] for line in dirty if line[3:].startswith("geofailover_core/")],  # the code under test
        "redis_server": server_version,
        "redis_server_path": binary,
    }


def render(results: dict[str, Any], s: Settings) -> str:
    cols = [PLAIN, MULTIDB, OURS] + ([OURS_TUNED_SPEC] if s.tuned else [])
    ovh = results.get("overhead", {})
    lines: list[str] = []
    m = results["machine"]
    lines.append(f"## geofailover benchmark — {m['date']} ({'quick' if s.quick else 'full'} mode, {results['duration_s']:.0f} s)")
    lines.append("")
    header = "| Scenario | " + " | ".join(c.label for c in cols) + " |"
    lines += [header, "|" + "---|" * (len(cols) + 1)]

    def row(title: str, cells: dict[str, str]) -> None:
        lines.append(f"| {title} | " + " | ".join(cells.get(c.key, "—") for c in cols) + " |")

    place_titles = {
        "same_core": "client and server pinned to ONE core",
        "separate_cores": "client and server pinned to TWO cores",
        "unpinned": "unpinned",
    }
    for place, data in ovh.items():
        cl = data["clients"]
        where = place_titles.get(place, place)
        row(
            f"GET/SET µs/op, {where}: median [IQR] of {s.rounds} interleaved rounds x {s.ops} ops",
            {k: f"{v['wall']['median_us']:.1f} [{v['wall']['us_q1']:.1f}-{v['wall']['us_q3']:.1f}]" for k, v in cl.items()},
        )
        row(
            f"ratio to plain redis.Redis, {where}: median [IQR] of per-round ratios; extra µs/op (target for ours ≤ 1.03x)",
            {
                k: (
                    f"{v['wall']['ratio_median']:.3f}x [{v['wall']['ratio_q1']:.3f}-{v['wall']['ratio_q3']:.3f}]; "
                    f"{v['wall']['delta_us_median']:+.1f} µs"
                )
                if k != "plain"
                else "1.000x"
                for k, v in cl.items()
            },
        )
    first = results.get("first_command")
    if first:
        row(
            f"first command: constructing the client to the reply of its first GET, ms, median [IQR] of {s.first_rounds} "
            "interleaved rounds; ratio to plain (target for ours ≤ 1.3x)",
            {k: f"{v['median_ms']:.2f} [{v['ms_q1']:.2f}-{v['ms_q3']:.2f}]; {v['ratio_median']:.2f}x" for k, v in first.items()},
        )
    n = s.reps
    for fault, title in (("kill", "kill -9 of active"), ("freeze", "SIGSTOP of active")):
        if fault not in results:
            continue
        summ = results[fault]
        plain = summ["plain"]
        times = {k: cell_time(v, s.cap) for k, v in summ.items() if k != "plain"}
        times["plain"] = f"no failover (single endpoint); observed {s.plain_window:g} s"
        row(f"{title}: time to first OK iteration on b (median [range], n={n})", times)
        errs = {k: cell_errors(v) for k, v in summ.items()}
        errs["plain"] = cell_errors(plain) + f" in {s.plain_window:g} s"
        row(f"{title}: errors raised to the caller (per run)", errs)
        row(f"{title}: longest single SET/GET call (per run)", {k: cell_longest(v) for k, v in summ.items()})
    fb = results.get("failback", {})
    if fb:
        fb_times = {k: cell_time(v, s.cap) for k, v in fb.items()}
        fb_times["plain"] = "reconnects to a: " + fb_times["plain"]
        row(
            f"failback, MEASURED with SHORT setting (ours failback_grace_period={OURS_SHORT_GRACE:g} s, "
            f"MultiDB auto_fallback_interval={MULTIDB_SHORT_FALLBACK:g} s, tuned as its column): restart (PING ok) → traffic on a, n={n}",
            fb_times,
        )
        row("failback: errors raised to the caller after the restart (per run)", {k: cell_errors(v) for k, v in fb.items()})
    grace = float(DEFAULTS["failback_grace_period"])
    interval = float(DEFAULTS["probe_interval"])
    default_cells = {
        "plain": "n/a",
        "multidb": f"EXPECTED ≈ {MULTIDB_DEFAULT_FALLBACK_INTERVAL:g} s after the failover (auto_fallback_interval={MULTIDB_DEFAULT_FALLBACK_INTERVAL:g} s; not measured)",
        "ours": f"EXPECTED {grace:g}-{grace + interval:g} s after restart (failback_grace_period={grace:g} s + ≤ 1 probe_interval)",
    }
    if "failback_default" in results:
        default_cells["ours"] += f"; MEASURED {cell_time(results['failback_default'], s.cap)} (n={results['failback_default']['n']})"
    row("failback with DEFAULT settings", default_cells)
    lines.append("")
    lines.append("Configuration:")
    lines.append("- plain redis.Redis: `redis.Redis(host, port)` on endpoint a, redis-py defaults (socket_timeout 5 s, 10 jittered retries).")
    lines.append(
        "- MultiDBClient: `MultiDbConfig(databases_config=[DatabaseConfig(from_url=a, weight=1.0), DatabaseConfig(from_url=b, weight=0.5)])`, "
        "all other fields default (health_check_interval 5 s, 3 probes, 0.5 s delay, 3 s timeout, min_num_failures 1000, "
        f"command_retry 10x, auto_fallback_interval {MULTIDB_DEFAULT_FALLBACK_INTERVAL:g} s); failback row: "
        f"auto_fallback_interval={MULTIDB_SHORT_FALLBACK:g}."
    )
    ours_defaults = ", ".join(f"{k}={v}" for k, v in DEFAULTS.items())
    lines.append(
        f"- FailoverRedis: `FailoverRedis.from_url('redis://a?name=a&weight=2;redis://b?name=b&weight=1')`, defaults ({ours_defaults}); "
        f"failback row: failback_grace_period={OURS_SHORT_GRACE:g}."
    )
    if s.tuned:
        lines.append("- FailoverRedis tuned: " + ", ".join(f"{k}={v}" for k, v in OURS_TUNED.items()) + " (same in every row).")
    lines.append(
        f"- Loop: one thread, SET {LOOP_KEY} + GET {MARKER} every {s.period * 1000:g} ms; an iteration is OK when both return; "
        f"'on b' = the GET returned b's marker. Fault at t=0 while the loop is running; errors counted from the fault until "
        f"{s.tail:g} s after recovery (plain: {s.plain_window:g} s window). Cap {s.cap:g} s. Fresh servers and clients every run; "
        + (
            "run i of n injects its fault (i+0.5)/n of the client's health-check period after the warm-up (MultiDB 5 s, ours 1 s, tuned 0.5 s)."
            if s.stratify
            else "the fault comes right after the warm-up (one fixed phase of the health-check schedule)."
        )
    )
    lines.append(
        f"- Machine: nproc={m['nproc']} (usable {m['cpus_usable']}), {m['platform']}, Python {m['python']}, redis-py {m['redis_py']}, "
        f"pybreaker {m['pybreaker']}, geofailover {m['geofailover']} (git {m['git_commit'] or '?'}"
        + (f" + uncommitted/untracked in {', '.join(m['git_modified'])}" if m["git_modified"] else "")
        + f"), {m['redis_server']}."
    )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------


def settings_from(args: argparse.Namespace) -> Settings:
    if args.quick:
        s = Settings(
            quick=True, reps=1, rounds=5, ops=1500, period=0.01, cap=30.0, plain_window=2.5, tail=0.3,
            settle=0.5, warmup_ok=10, tuned=False, default_failback=False, placements=1, stratify=False, first_rounds=7,
        )
    else:
        s = Settings(
            quick=False, reps=3, rounds=15, ops=3000, period=0.01, cap=30.0, plain_window=6.0, tail=1.0,
            settle=1.0, warmup_ok=20, tuned=True, default_failback=True, placements=2, stratify=True, first_rounds=25,
        )
    changes: dict[str, Any] = {}
    for name in ("reps", "rounds", "ops", "cap"):
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    if changes:
        s = dataclasses.replace(s, **changes)
    return s


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one repetition, fewer ops: < 60 s")
    parser.add_argument("--json", action="store_true", help="also print all results as one JSON object on the last line")
    parser.add_argument("--verbose", action="store_true", help="show the clients' own log messages (stderr)")
    parser.add_argument("--reps", type=int, help="repetitions of each fault scenario (default 3, quick 1)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of the overhead test")
    parser.add_argument("--ops", type=int, help="operations per client per round in the overhead test")
    parser.add_argument("--cap", type=float, help="longest wait for a failover or failback, seconds (default 30)")
    parser.add_argument("--redis-server", help="path of the redis-server binary")
    parser.add_argument(
        "--only", default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)} (for development; the published table runs all)",
    )
    args = parser.parse_args(argv)
    s = settings_from(args)
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    if not only or only - set(SCENARIOS):
        parser.error(f"--only takes a subset of {','.join(SCENARIOS)}")

    if args.verbose:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(relativeCreated)8.0f %(name)s %(levelname)s %(message)s")
    else:
        logging.getLogger().addHandler(logging.NullHandler())  # keep library warnings off the report
        logging.getLogger().setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", message=r".*is an experimental", category=UserWarning)
    signal.signal(signal.SIGTERM, _on_sigterm)
    atexit.register(cleanup_servers)

    binary = find_redis_server(args.redis_server)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="geofailover-bench-"))
    results: dict[str, Any] = {"settings": s.__dict__, "machine": machine_info(binary)}
    fault_specs = [PLAIN, MULTIDB, OURS] + ([OURS_TUNED_SPEC] if s.tuned else [])
    try:
        if "overhead" in only:
            progress(f"[overhead] {s.rounds} rounds x {s.ops} ops x 3 clients")
            results["overhead"] = overhead([PLAIN, MULTIDB, OURS], binary, workdir, s)
        if "first" in only:
            progress(f"[first command] {s.first_rounds} rounds x 3 clients")
            results["first_command"] = first_command([PLAIN, MULTIDB, OURS], binary, workdir, s)
        for fault in ("kill", "freeze"):
            if fault not in only:
                continue
            per: dict[str, list[dict[str, Any]]] = {spec.key: [] for spec in fault_specs}
            for rep in range(s.reps):
                for spec in fault_specs:
                    r = fault_once(spec, fault, binary, workdir, s, phase_delay(spec, rep, s))
                    per[spec.key].append(r)
                    progress(
                        f"[{fault}] run {rep + 1}/{s.reps} {spec.label}: "
                        + (f"first OK on b after {fmt_s(r['time_s'])}" if r.get("recovered") else f"no recovery in {r['observed_s']:.1f} s")
                        + f", errors {r['errors']} {r['error_types'] or ''}, longest call {fmt_s(r['longest_call_s'])}"
                        + (f", engine switched to b after {fmt_s(r['engine_active_b_s'])}" if "engine_active_b_s" in r else "")
                    )
            results[f"{fault}_runs"] = per
            results[fault] = {k: summarize(v) for k, v in per.items()}
        fb_runs: dict[str, list[dict[str, Any]]] = {spec.key: [] for spec in fault_specs}
        for rep in range(s.reps if "failback" in only else 0):
            for spec in fault_specs:
                r = failback_once(spec, "failback", binary, workdir, s, phase_delay(spec, rep, s))
                fb_runs[spec.key].append(r)
                progress(
                    f"[failback] run {rep + 1}/{s.reps} {spec.label}: "
                    + (f"traffic on a {fmt_s(r['time_s'])} after restart" if r.get("recovered") else f"not back within {r['observed_s']:.1f} s")
                    + f", errors {r['errors']} {r['error_types'] or ''}"
                )
        if "failback" in only:
            results["failback_runs"] = fb_runs
            results["failback"] = {k: summarize(v) for k, v in fb_runs.items()}
        if s.default_failback and "failback" in only:
            r = failback_once(OURS, "failback_default", binary, workdir, s, phase_delay(OURS, 0, dataclasses.replace(s, reps=1)))
            progress(f"[failback default] {OURS.label}: " + (fmt_s(r["time_s"]) if r.get("recovered") else "not back") + " after restart")
            results["failback_default_runs"] = [r]
            results["failback_default"] = summarize([r])
    finally:
        for loop in _STRAGGLERS:
            loop.stop()
        cleanup_servers()
        for loop in _STRAGGLERS:
            loop.join(15.0)
        shutil.rmtree(workdir, ignore_errors=True)
    results["duration_s"] = round(time.monotonic() - started, 1)
    print(render(results, s))
    if args.json:
        print(json.dumps(results, default=str, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        cleanup_servers()
        print("interrupted; all redis-server processes stopped", file=sys.stderr)
        sys.exit(130)
