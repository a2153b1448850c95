#!/usr/bin/env python
"""Celery on stock ``redis://`` and on ``geofailover://``, side by side, in one run.

Run from the repository root with the project's virtualenv::

    python benchmarks/celery_bench.py               # 15 interleaved rounds, ~8 minutes
    python benchmarks/celery_bench.py --quick       # 3 rounds, fewer messages
    python benchmarks/celery_bench.py --json        # ... and every raw number as ONE JSON line (last line)

Everything is on 127.0.0.1: this script starts ``redis-server`` processes
(endpoint ``a``, which both schemes use, on different dbs; ``b``, geofailover's
standby; a ledger the tasks report to) and real Celery worker subprocesses,
one per scheme and worker kind, and kills them all on exit. Each round runs
every row once per scheme, the order alternating, so a slow drift of the
machine hits both columns alike. See benchmarks/README.md for how to read
the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path += [str(ROOT), str(ROOT / "integrations")]  # after $PYTHONPATH, as for the workers

import redis  # noqa: E402

from geofailover_core.testing import RedisServer, stop_process_group  # noqa: E402

SCHEMES = ("redis", "geofailover")

APP = '''
"""Tasks of the Celery benchmark (written by benchmarks/celery_bench.py)."""
import json
import os
import time

import redis
from celery import Celery

import geofailover_celery  # noqa: F401 - the geofailover:// scheme

ledger = redis.Redis.from_url(os.environ["BENCH_LEDGER"])


def make(name, broker, backend):
    app = Celery(name, broker=broker, backend=backend, set_as_current=False)
    app.conf.update(
        result_expires=600,
        task_default_queue="q0",
        broker_connection_retry_on_startup=True,
    )

    @app.task(name="bench.stamp", ignore_result=True)
    def stamp(sent):
        """Delivery latency: from the producer's clock before publishing to the task's start."""
        ledger.rpush("lat", time.time() - sent)

    @app.task(name="bench.count", ignore_result=True)
    def count(total):
        if ledger.incr("n") >= total:
            ledger.rpush("done", time.time())

    @app.task(name="bench.echo")
    def echo(i):
        return i

    return app


_urls = json.loads(os.environ["BENCH_URLS"])
redis_app = make("redis", *_urls["redis"])
geofailover_app = make("geofailover", *_urls["geofailover"])  # the default options
'''


class Bench:
    """The servers, the workers and the producer side of both schemes."""

    def __init__(self, workdir: Path, verbose: bool) -> None:
        self.workdir = workdir
        self.verbose = verbose
        args = ("--save", "", "--appendonly", "no")
        self.a, self.b, self.ledger_server = (RedisServer(extra_args=args).start() for _ in range(3))
        a, b = self.a, self.b
        geo = lambda db: f"geofailover://{a.host}:{a.port}/{db}?name=a&weight=2;geofailover://{b.host}:{b.port}/{db}?name=b&weight=1"  # noqa: E731
        self.urls = {"redis": (f"redis://{a.host}:{a.port}/2", f"redis://{a.host}:{a.port}/3"), "geofailover": (geo(0), geo(1))}
        (workdir / "bench_app.py").write_text(textwrap.dedent(APP))
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(workdir), os.environ.get("PYTHONPATH", ""), str(ROOT), str(ROOT / "integrations")]),
            "BENCH_LEDGER": self.ledger_server.url,
            "BENCH_URLS": json.dumps(self.urls),
        }
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("BENCH_")})
        sys.path.insert(0, str(workdir))
        import bench_app  # type: ignore[import-not-found]

        self.apps = {"redis": bench_app.redis_app, "geofailover": bench_app.geofailover_app}
        self.ledger = redis.Redis.from_url(self.ledger_server.url, socket_timeout=None)  # BLPOP waits
        self.workers: list[subprocess.Popen[bytes]] = []
        self.worker_pid: dict[str, int] = {}
        self.last_cpu: float | None = None  # CPU seconds per task of the last throughput measurement

    def cpu(self, scheme: str) -> float:
        """CPU seconds used so far by ``scheme``'s worker (all its processes), this producer, and server ``a``."""
        tick, total = os.sysconf("SC_CLK_TCK"), time.process_time()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == self.worker_pid[scheme]:  # the session the worker leads
                    total += (int(fields[11]) + int(fields[12])) / tick
        info = self.a.client().info("cpu")
        return total + info["used_cpu_sys"] + info["used_cpu_user"]

    @contextlib.contextmanager
    def workers_for(self, pool: str, queues: str) -> Iterator[None]:
        """One worker per scheme, both started before and stopped after the rows that use them."""
        procs = []
        for scheme in SCHEMES:
            log = self.workdir / f"{scheme}-{pool}-{queues.replace(',', '_')}.log"
            argv = [
                sys.executable, "-m", "celery", "-A", f"bench_app:{scheme}_app", "worker", f"--pool={pool}",
                "--concurrency=2", "--without-gossip", "--without-mingle", "--without-heartbeat", "-Q", queues,
                "-n", f"{scheme}@%h", "--loglevel=WARNING" if not self.verbose else "--loglevel=INFO",
            ]  # fmt: skip
            with log.open("wb") as out:
                procs.append(subprocess.Popen(argv, cwd=self.workdir, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True))
            self.workers.append(procs[-1])
            self.worker_pid[scheme] = procs[-1].pid
            # A worker is ready when it answers a task.
            self.apps[scheme].send_task("bench.echo", (0,), queue=queues.split(",")[0]).get(timeout=60)
        try:
            yield
        finally:
            for proc in procs:
                _stop(proc)

    def latency(self, scheme: str, messages: int, route: Callable[[int], dict[str, Any]]) -> float:
        """Median seconds from publish to task start, one message at a time (the worker idle in between)."""
        app, ledger = self.apps[scheme], self.ledger
        ledger.delete("lat")
        values = []
        for i in range(messages):
            app.send_task("bench.stamp", (time.time(),), **route(i))
            _, value = ledger.blpop(["lat"], timeout=60)
            values.append(float(value))
        return statistics.median(values)

    def throughput(self, scheme: str, tasks: int, route: Callable[[int], dict[str, Any]]) -> float:
        """Tasks per second: a burst of ``tasks`` published at once, until the last one ran."""
        app, ledger = self.apps[scheme], self.ledger
        ledger.delete("n", "done")
        cpu, start = self.cpu(scheme), time.time()
        with app.producer_or_acquire() as producer:
            for i in range(tasks):
                app.send_task("bench.count", (tasks,), producer=producer, **route(i))
        _, done = ledger.blpop(["done"], timeout=600)
        self.last_cpu = (self.cpu(scheme) - cpu) / tasks
        return tasks / (float(done) - start)

    def with_results(self, scheme: str, tasks: int) -> float:
        """Tasks per second, each result stored by the worker and read by ``AsyncResult.get()``."""
        app = self.apps[scheme]
        cpu, start = self.cpu(scheme), time.perf_counter()
        results = [app.send_task("bench.echo", (i,), queue="q0") for i in range(tasks)]
        assert [r.get(timeout=120) for r in results] == list(range(tasks))
        elapsed = time.perf_counter() - start
        self.last_cpu = (self.cpu(scheme) - cpu) / tasks
        return tasks / elapsed

    def get_round_trip(self, scheme: str, messages: int) -> float:
        """Median seconds of ``send_task(...).get()``, one task at a time."""
        app, values = self.apps[scheme], []
        for i in range(messages):
            start = time.perf_counter()
            assert app.send_task("bench.echo", (i,), queue="q0").get(timeout=60) == i
            values.append(time.perf_counter() - start)
        return statistics.median(values)

    def close(self) -> None:
        for proc in self.workers:
            _stop(proc)
        for app in self.apps.values():
            with contextlib.suppress(Exception):
                app.close()
        for server in (self.a, self.b, self.ledger_server):
            server.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop_process_group(proc)


ONE_QUEUE = lambda i: {"queue": "q0"}  # noqa: E731
THREE_QUEUES = lambda i: {"queue": f"q{i % 3}"}  # noqa: E731
TEN_PRIORITIES = lambda i: {"queue": "q0", "priority": i % 10}  # noqa: E731


def rows(bench: Bench, quick: bool) -> list[tuple[str, str, str, str, Callable[[str], float]]]:
    """(group, worker pool, worker queues, row label, measure(scheme))."""
    lat, thr, res = (10, 400, 100) if quick else (20, 1000, 200)
    return [
        ("a", "solo", "q0", "latency, 1 queue (ms)", lambda s: bench.latency(s, lat, ONE_QUEUE)),
        ("a", "solo", "q0", "latency, 10 priorities (ms)", lambda s: bench.latency(s, lat, TEN_PRIORITIES)),
        ("a", "solo", "q0", "throughput, 1 queue (tasks/s)", lambda s: bench.throughput(s, thr, ONE_QUEUE)),
        ("a", "solo", "q0", "throughput, 10 priorities (tasks/s)", lambda s: bench.throughput(s, thr, TEN_PRIORITIES)),
        ("a", "solo", "q0", "solo worker with results (tasks/s)", lambda s: bench.with_results(s, res)),
        ("a", "solo", "q0", "AsyncResult.get() round trip (ms)", lambda s: bench.get_round_trip(s, lat)),
        ("b", "solo", "q0,q1,q2", "latency, 3 queues (ms)", lambda s: bench.latency(s, lat, THREE_QUEUES)),
        ("b", "solo", "q0,q1,q2", "throughput, 3 queues (tasks/s)", lambda s: bench.throughput(s, thr, THREE_QUEUES)),
        ("c", "prefork", "q0", "prefork worker with results (tasks/s)", lambda s: bench.with_results(s, res)),
    ]


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 15, --quick 3)")
    parser.add_argument("--quick", action="store_true", help="3 rounds, fewer messages")
    parser.add_argument("--json", action="store_true", help="print every raw number as one JSON line at the end")
    parser.add_argument("--verbose", action="store_true", help="workers log at INFO")
    parser.add_argument("--only", default="", help="comma-separated words: only the rows whose label has one (development)")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 15)

    workdir = Path(tempfile.mkdtemp(prefix="geofailover-celery-bench-"))
    bench = Bench(workdir, args.verbose)
    raw: dict[str, dict[str, list[float]]] = {}
    try:
        table = [row for row in rows(bench, args.quick) if not args.only or any(w in row[3] for w in args.only.split(","))]
        for group in dict.fromkeys(row[0] for row in table):
            members = [row for row in table if row[0] == group]
            _, pool, queues, _, _ = members[0]
            print(f"workers: --pool={pool} -Q {queues} ...", file=sys.stderr)
            with bench.workers_for(pool, queues):
                for measure in (row[4] for row in members):  # warm-up: one untimed run each
                    for scheme in SCHEMES:
                        measure(scheme)
                for r in range(rounds):
                    for _, _, _, label, measure in members:
                        for scheme in SCHEMES if r % 2 == 0 else SCHEMES[::-1]:
                            bench.last_cpu = None
                            value = measure(scheme)
                            raw.setdefault(label, {}).setdefault(scheme, []).append(value * 1000 if "(ms)" in label else value)
                            if bench.last_cpu is not None:
                                cpu_label = label.replace("(tasks/s)", "CPU per task (us)")
                                raw.setdefault(cpu_label, {}).setdefault(scheme, []).append(bench.last_cpu * 1e6)
                    print(f"  round {r + 1}/{rounds} done", file=sys.stderr)
    finally:
        bench.close()

    print(f"Celery, stock redis:// vs geofailover:// (same run, {rounds} interleaved rounds; median [IQR])")
    print(f"{'':48} {'redis://':>22} {'geofailover://':>22} {'ratio geo/redis':>22}")
    summary = {}
    for label, by_scheme in raw.items():
        stock, geo = by_scheme["redis"], by_scheme["geofailover"]
        ratios = [g / s for g, s in zip(geo, stock, strict=True)]
        cells = [quartiles(v) for v in (stock, geo, ratios)]
        fmt = (lambda q: f"{q[1]:.2f} [{q[0]:.2f}-{q[2]:.2f}]") if "(ms)" in label else (lambda q: f"{q[1]:.0f} [{q[0]:.0f}-{q[2]:.0f}]")
        diff = statistics.median(g - s for g, s in zip(geo, stock, strict=True))
        extra = f"  ({diff:+.2f} ms)" if "(ms)" in label else f"  ({diff:+.0f} us)" if "(us)" in label else ""
        ratio = f"{cells[2][1]:.3f}x [{cells[2][0]:.2f}-{cells[2][2]:.2f}]"
        print(f"{label:48} {fmt(cells[0]):>22} {fmt(cells[1]):>22} {ratio:>22}{extra}")
        summary[label] = {"redis": cells[0][1], "geofailover": cells[1][1], "ratio": cells[2][1]}
    machine = {"nproc": os.cpu_count(), "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    with contextlib.suppress(Exception):
        machine["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                           text=True, check=False).stdout.strip()
    print(f"machine: {machine}")
    if args.json:
        print(json.dumps({"rounds": rounds, "quick": args.quick, "machine": machine, "summary": summary, "raw": raw}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
