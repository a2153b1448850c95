#!/usr/bin/env python
"""Async and Django benchmark, every comparison side by side in one run (loopback only).

Run from the repository root with the project's virtualenv::

    python benchmarks/async_bench.py            # full run, ~3 minutes
    python benchmarks/async_bench.py --quick    # fewer rounds, ~1 minute
    python benchmarks/async_bench.py --json     # also all raw numbers as ONE JSON line (the last line)

Rows (benchmarks/README.md says how to read them):

a) Django ``aget``/``aset`` from 50 concurrent tasks: GeoFailoverCache's native
   async methods vs django-redis's ``RedisCache`` (Django's ``sync_to_async``
   versions, on one thread), ops/s;
b) Django Channels ``send``/``receive`` of one channel: GeoFailoverChannelLayer
   vs channels_redis's ``RedisChannelLayer``, messages/s;
c) async per-operation cost of GET/SET on one connection: ``AsyncFailoverRedis``
   vs ``redis.asyncio.Redis`` vs ``redis.asyncio.multidb`` ``MultiDBClient``,
   client and server pinned to ONE core (wall and client CPU µs/op);
d) Django sync ``get``/``set``: GeoFailoverCache vs django-redis's ``RedisCache``,
   pinned to ONE core;
e) ``kill -9`` of the active endpoint under an async SET+GET loop: time until
   the loop is served by the other endpoint, errors its reads and writes saw.

Every comparison runs in interleaved rounds (each round runs every client once,
the order rotating) and reports the median and spread of the per-round ratios.
The servers are this script's own ``redis-server`` processes on 127.0.0.1
(see failover_bench.py, whose server handling this reuses), killed on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import gc
import json
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.exceptions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from failover_bench import (  # the sibling script's server handling
    HOST,
    MARKER,
    BenchError,
    _on_sigterm,
    cleanup_servers,
    find_redis_server,
    machine_info,
    progress,
    start_pair,
    stop_pair,
)

TASKS = 50
ROWS: list[tuple[str, str, str, str]] = []  # (row, ours, baseline(s), ratio) for the table


def spread(xs: list[float], digits: int = 3) -> str:
    return f"{statistics.median(xs):.{digits}f} [{min(xs):.{digits}f}-{max(xs):.{digits}f}]"


def rounds_of(clients: dict[str, Callable[[], Awaitable[float]]], rounds: int) -> dict[str, list[float]]:
    """Run each client's workload once per round, the order rotating; returns per-round values."""
    values: dict[str, list[float]] = {key: [] for key in clients}
    keys = list(clients)

    async def run() -> None:
        for workload in clients.values():  # warm-up: connections, pools, first probe round
            await workload()
        for r in range(rounds):
            for key in keys[r % len(keys):] + keys[: r % len(keys)]:
                gc.collect()
                values[key].append(await clients[key]())

    asyncio.run(run())
    return values


def ratios(values: dict[str, list[float]], ours: str, base: str) -> list[float]:
    return [x / y for x, y in zip(values[ours], values[base], strict=True)]


@contextlib.contextmanager
def pinned(server_pid: int) -> Any:
    """This thread and the server's main thread on one core: a fixed per-call cost shows
    against the shortest, steadiest round trip (see failover_bench.py's overhead row)."""
    own = os.sched_getaffinity(0)
    cpu = max(own)
    os.sched_setaffinity(server_pid, {cpu})
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, own)
        os.sched_setaffinity(server_pid, own)


# ----------------------------------------------------------------------------------------------
# a) and d): Django caches
# ----------------------------------------------------------------------------------------------


def configure_django(a: Any, b: Any) -> None:
    import django
    from django.conf import settings

    settings.configure(
        CACHES={
            "stock": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": a.url},
            "geo": {
                "BACKEND": "geofailover_django.cache.GeoFailoverCache",
                "LOCATION": [f"{a.url}?name=a&weight=2", f"{b.url}?name=b&weight=1"],
                "OPTIONS": {"GEOFAILOVER": {"control_plane": False}},
            },
        },
        USE_TZ=True,
    )
    django.setup()


def django_async(rounds: int, ops: int) -> dict[str, Any]:
    from django.core.cache import caches

    def workload(alias: str, cpu_out: list[float]) -> Callable[[], Awaitable[float]]:
        cache = caches[alias]

        async def run() -> float:
            async def worker(i: int) -> None:
                for j in range(ops // TASKS):
                    if j & 1:
                        await cache.aget(f"bench:dj:{i}")
                    else:
                        await cache.aset(f"bench:dj:{i}", "v" * 16)

            c0, t0 = time.process_time(), time.perf_counter()
            await asyncio.gather(*(worker(i) for i in range(TASKS)))
            cpu_out.append(ops / (time.process_time() - c0))
            return ops / (time.perf_counter() - t0)

        return run

    cpu: dict[str, list[float]] = {"ours": [], "stock": []}
    values = rounds_of({"ours": workload("geo", cpu["ours"]), "stock": workload("stock", cpu["stock"])}, rounds)
    cpu = {k: v[-rounds:] for k, v in cpu.items()}
    r, rc = ratios(values, "ours", "stock"), ratios(cpu, "ours", "stock")
    ROWS.append((
        f"Django aget/aset, {TASKS} concurrent tasks: ops/s (target ≥ 3x)",
        spread(values["ours"], 0), f"django-redis RedisCache (sync_to_async, one thread): {spread(values['stock'], 0)}", f"{spread(r, 2)}x",
    ))
    ROWS.append(("... ops per CPU second of the client process (all its threads)", spread(cpu["ours"], 0), spread(cpu["stock"], 0), f"{spread(rc, 2)}x"))
    return {"ops_per_s": values, "ratio": r, "ops_per_cpu_s": cpu, "cpu_ratio": rc}


def django_sync(rounds: int, ops: int, server_pid: int) -> dict[str, Any]:
    from django.core.cache import caches

    def workload(alias: str, cpu_out: list[float]) -> Callable[[], Awaitable[float]]:
        cache = caches[alias]

        async def run() -> float:  # sync calls, run inside the round driver
            gc.disable()
            try:
                c0, t0 = time.thread_time(), time.perf_counter()
                for i in range(ops):
                    if i & 1:
                        cache.get("bench:sync")
                    else:
                        cache.set("bench:sync", "v" * 16)
                wall = (time.perf_counter() - t0) / ops * 1e6
                cpu_out.append((time.thread_time() - c0) / ops * 1e6)
                return wall
            finally:
                gc.enable()

        return run

    cpu: dict[str, list[float]] = {"ours": [], "stock": []}
    with pinned(server_pid):
        values = rounds_of({"ours": workload("geo", cpu["ours"]), "stock": workload("stock", cpu["stock"])}, rounds)
    cpu = {k: v[-rounds:] for k, v in cpu.items()}  # without the warm-up
    r, rc = ratios(values, "ours", "stock"), ratios(cpu, "ours", "stock")
    ROWS.append((
        "Django get/set (sync), pinned to ONE core: wall µs/op (target ≤ 1.02x)",
        spread(values["ours"], 1), f"django-redis RedisCache: {spread(values['stock'], 1)}", f"{spread(r)}x",
    ))
    ROWS.append(("... client CPU µs/op (this thread's time)", spread(cpu["ours"], 1), f"django-redis RedisCache: {spread(cpu['stock'], 1)}", f"{spread(rc)}x"))
    return {"wall_us": values, "cpu_us": cpu, "ratio": r, "cpu_ratio": rc}


# ----------------------------------------------------------------------------------------------
# b) Channels
# ----------------------------------------------------------------------------------------------


def channels(rounds: int, messages: int, a: Any, b: Any) -> dict[str, Any]:
    from channels_redis.core import RedisChannelLayer

    from geofailover_django.channels import GeoFailoverChannelLayer

    layers = {
        "ours": GeoFailoverChannelLayer(hosts=[f"{a.url}?name=a&weight=2", f"{b.url}?name=b&weight=1"], GEOFAILOVER={"control_plane": False}, capacity=10**6),
        "stock": RedisChannelLayer(hosts=[a.url], capacity=10**6, prefix="stock"),
    }

    cpu: dict[str, list[float]] = {key: [] for key in layers}

    def workload(layer: Any, cpu_out: list[float]) -> Callable[[], Awaitable[float]]:
        async def run() -> float:
            channel = await layer.new_channel()

            async def produce() -> None:
                for i in range(messages):
                    await layer.send(channel, {"type": "bench", "i": i})

            async def consume() -> None:
                for _ in range(messages):
                    await layer.receive(channel)

            c0, t0 = time.process_time(), time.perf_counter()
            await asyncio.gather(produce(), consume())
            cpu_out.append(messages / (time.process_time() - c0))
            return messages / (time.perf_counter() - t0)

        return run

    values = rounds_of({key: workload(layer, cpu[key]) for key, layer in layers.items()}, rounds)
    cpu = {k: v[-rounds:] for k, v in cpu.items()}
    r, rc = ratios(values, "ours", "stock"), ratios(cpu, "ours", "stock")
    ROWS.append((
        "Channels send+receive, one channel: messages/s (target ≥ 0.95x)",
        spread(values["ours"], 0), f"channels_redis RedisChannelLayer: {spread(values['stock'], 0)}", f"{spread(r)}x",
    ))
    ROWS.append(("... messages per CPU second of the client process", spread(cpu["ours"], 0), spread(cpu["stock"], 0), f"{spread(rc)}x"))
    return {"messages_per_s": values, "ratio": r, "messages_per_cpu_s": cpu, "cpu_ratio": rc}


# ----------------------------------------------------------------------------------------------
# c) async client per-op cost
# ----------------------------------------------------------------------------------------------


def async_overhead(rounds: int, ops: int, a: Any, b: Any) -> dict[str, Any]:
    import redis.asyncio
    from redis.asyncio.multidb.client import MultiDBClient
    from redis.asyncio.multidb.config import DatabaseConfig, MultiDbConfig

    from geofailover_core.asyncio import AsyncFailoverRedis

    clients: dict[str, Any] = {}
    cpu: dict[str, list[float]] = {"plain": [], "plain_timeout": [], "ours": [], "multidb": []}

    def workload(key: str) -> Callable[[], Awaitable[float]]:
        async def run() -> float:
            client = clients[key]
            gc.disable()
            try:
                c0, t0 = time.thread_time(), time.perf_counter()
                for i in range(ops):
                    if i & 1:
                        await client.get("bench:ovh")
                    else:
                        await client.set("bench:ovh", b"x" * 16)
                wall = (time.perf_counter() - t0) / ops * 1e6
                cpu[key].append((time.thread_time() - c0) / ops * 1e6)
                return wall
            finally:
                gc.enable()

        return run

    async def build() -> None:
        clients["plain"] = redis.asyncio.Redis(host=HOST, port=a.port)
        # Our default socket_timeout (1 s): redis-py then bounds every send and read
        # with a timer (asyncio.wait_for on send), a cost of the timeout, not of failover.
        clients["plain_timeout"] = redis.asyncio.Redis(host=HOST, port=a.port, socket_timeout=1.0, socket_connect_timeout=1.0)
        clients["ours"] = AsyncFailoverRedis.from_url(f"{a.url}?name=a&weight=2;{b.url}?name=b&weight=1", name=f"bench-{uuid.uuid4().hex[:8]}")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*is an experimental", category=UserWarning)
            multidb = MultiDBClient(MultiDbConfig(databases_config=[DatabaseConfig(from_url=a.url, weight=1.0), DatabaseConfig(from_url=b.url, weight=0.5)]))
        await multidb.initialize()
        clients["multidb"] = multidb

    asyncio.run(build())  # background threads (our monitor) start unpinned
    with pinned(a.proc.pid):
        values = rounds_of({key: workload(key) for key in cpu}, rounds)
    cpu = {k: v[-rounds:] for k, v in cpu.items()}
    out: dict[str, Any] = {"wall_us": values, "cpu_us": cpu}
    for key, base, label in (
        ("ours", "plain", "AsyncFailoverRedis vs redis.asyncio.Redis() (target ≤ 1.03x)"),
        ("ours", "plain_timeout", "AsyncFailoverRedis vs redis.asyncio.Redis(socket_timeout=1), our default timeout"),
        ("multidb", "plain", "MultiDBClient (defaults) vs redis.asyncio.Redis()"),
    ):
        r, rc = ratios(values, key, base), ratios(cpu, key, base)
        out[f"{key}_vs_{base}"], out[f"{key}_vs_{base}_cpu"] = r, rc
        ROWS.append((
            f"async GET/SET, one connection, pinned to ONE core, {label}: wall µs/op",
            spread(values[key], 1), spread(values[base], 1), f"{spread(r)}x",
        ))
        ROWS.append(("... client CPU µs/op", spread(cpu[key], 1), spread(cpu[base], 1), f"{spread(rc)}x"))
    return out


# ----------------------------------------------------------------------------------------------
# e) kill -9 of the active endpoint under an async loop
# ----------------------------------------------------------------------------------------------


def async_kill(reps: int, binary: str, workdir: Path) -> dict[str, Any]:
    from geofailover_core.asyncio import AsyncFailoverRedis

    runs: list[dict[str, Any]] = []
    for rep in range(reps):
        a, b = start_pair(binary, workdir)
        try:
            runs.append(asyncio.run(_kill_once(AsyncFailoverRedis, a, b)))
        finally:
            stop_pair(a, b)
        r = runs[-1]
        progress(f"[async kill] run {rep + 1}/{reps}: served by b after {r['time_ms']:.1f} ms, read errors {r['read_errors']}, write errors {r['write_errors']}")
    times = [r["time_ms"] for r in runs]
    ROWS.append(("async kill -9 of active: kill → first SET+GET served by b, ms (target ≤ 50 ms)", spread(times, 1), "—", "—"))
    ROWS.append((
        "... errors the loop's reads / writes saw (per run)",
        " · ".join(f"{r['read_errors']}/{r['write_errors']}" for r in runs), "—", "—",
    ))
    return {"runs": runs}


async def _kill_once(client_class: Any, a: Any, b: Any) -> dict[str, Any]:
    client = client_class.from_url(f"{a.url}?name=a&weight=2;{b.url}?name=b&weight=1", name=f"bench-kill-{uuid.uuid4().hex[:8]}")
    served: list[tuple[float, str | None]] = []
    errors = {"read": 0, "write": 0}
    stop = asyncio.Event()

    async def loop() -> None:
        i = 0
        while not stop.is_set() and i < 20000:
            i += 1
            try:
                await client.set("bench:loop", i)
            except redis.exceptions.RedisError:
                errors["write"] += 1
            try:
                who = await client.get(MARKER)
                served.append((time.monotonic(), who.decode() if who else None))
            except redis.exceptions.RedisError:
                errors["read"] += 1
            await asyncio.sleep(0.002)

    task = asyncio.ensure_future(loop())
    try:
        deadline = time.monotonic() + 10
        while sum(1 for _, who in served if who == "a") < 50:
            if time.monotonic() > deadline:
                raise BenchError("no traffic on a")
            await asyncio.sleep(0.01)
        errors.update(read=0, write=0)
        t_kill = time.monotonic()
        a.kill()
        while not any(who == "b" and t > t_kill for t, who in served):
            if time.monotonic() > t_kill + 30:
                raise BenchError("no failover within 30 s")
            await asyncio.sleep(0.001)
        first = next(t for t, who in served if who == "b" and t > t_kill)
        await asyncio.sleep(0.5)  # late errors count too
    finally:
        stop.set()
        await task
        client.geofailover.close()
        await client.aclose()
    return {"time_ms": round((first - t_kill) * 1000, 2), "read_errors": errors["read"], "write_errors": errors["write"]}


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and runs (about a minute)")
    parser.add_argument("--json", action="store_true", help="also print all results as one JSON object on the last line")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per comparison (default 9, quick 3)")
    parser.add_argument("--reps", type=int, help="kill runs (default 5, quick 2)")
    parser.add_argument("--redis-server", help="path of the redis-server binary")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 9)
    reps = args.reps or (2 if args.quick else 5)
    scale = 1 if args.quick else 2
    logging.getLogger().addHandler(logging.NullHandler())
    logging.getLogger().setLevel(logging.CRITICAL)
    signal.signal(signal.SIGTERM, _on_sigterm)
    atexit.register(cleanup_servers)
    binary = find_redis_server(args.redis_server)
    workdir = Path(tempfile.mkdtemp(prefix="geofailover-async-bench-"))
    results: dict[str, Any] = {"machine": machine_info(binary), "rounds": rounds, "reps": reps}
    a, b = start_pair(binary, workdir)
    try:
        configure_django(a, b)
        progress(f"[django async] {rounds} rounds, {TASKS} tasks")
        results["django_async"] = django_async(rounds, 5000 * scale)
        progress(f"[channels] {rounds} rounds")
        results["channels"] = channels(rounds, 2000 * scale, a, b)
        progress(f"[async overhead] {rounds} rounds, pinned")
        results["async_overhead"] = async_overhead(rounds, 3000 * scale, a, b)
        progress(f"[django sync] {rounds} rounds, pinned")
        results["django_sync"] = django_sync(rounds, 3000 * scale, a.proc.pid)
    finally:
        stop_pair(a, b)
    progress(f"[async kill] {reps} runs")
    results["async_kill"] = async_kill(reps, binary, workdir)

    print(f"\n| Measurement (median [min-max] of {rounds} interleaved rounds) | ours | baseline | ratio |")
    print("|---|---|---|---|")
    for row in ROWS:
        print("| " + " | ".join(row) + " |")
    if args.json:
        print(json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
