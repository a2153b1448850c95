"""Everything in one command: two Redis servers, a worker, a stream of tasks, a dead primary.

    python demo.py [--count 300] [--rate 100] [--pool solo|threads|prefork]

Starts two local ``redis-server`` processes with persistence (like real
regions), a Celery worker on them, and sends a stream of tasks. A third of
the way through it kills the primary; two thirds through it starts it
again. It then prints what the worker logged about the switches and the
counts: every task completes, none lost, duplicates (if any) counted. Exit
code 0 when nothing was lost. The CI smoke test runs it with ``--fast``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rate", type=float, default=100.0, help="tasks per second")
    parser.add_argument("--pool", default="solo", choices=["solo", "threads", "prefork"])
    parser.add_argument("--fast", action="store_true", help="tight timings (CI smoke test)")
    args = parser.parse_args()

    from geofailover_core.testing import RedisServer, stop_process_group, wait_until

    durable = ("--appendonly", "yes", "--appendfsync", "always")
    workdir = Path(tempfile.mkdtemp(prefix="geofailover-celery-demo-"))
    primary, secondary = RedisServer(extra_args=durable).start(), RedisServer(extra_args=durable).start()
    os.environ.update({
        "GEO_PRIMARY": f"{primary.host}:{primary.port}",
        "GEO_SECONDARY": f"{secondary.host}:{secondary.port}",
        "GEO_RUNS_LOG": str(workdir / "runs.log"),
    })
    if args.fast:
        os.environ["GEO_FAST"] = "1"
    log_path = workdir / "worker.log"
    worker = None
    try:
        with log_path.open("wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "app", "worker", f"--pool={args.pool}", "--concurrency=2",
                 "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=INFO"],
                cwd=HERE, env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))},
                stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(lambda: " ready." in log_path.read_text(errors="replace"), 30, interval=0.05, message="worker ready")
        print(f"primary {primary.port}, secondary {secondary.port}, worker pid {worker.pid}; sending {args.count} tasks")

        sys.path.insert(0, str(HERE))
        import producer

        def faults(i: int) -> None:
            if i == args.count // 3:
                print(f"\n[{i}] killing the primary (kill -9)")
                primary.kill()
            elif i == 2 * args.count // 3:
                print(f"\n[{i}] starting the primary again (its data survived: appendonly)")
                primary.restart()

        results = producer.send(args.count, args.rate, faults)
        broker = producer.app.connection_for_write().transport.engine
        wait_until(lambda: broker.active == "primary", 60, interval=0.1, message="failback to the primary")
        print("\nback on the primary; waiting for every result")
        code = producer.report(args.count, results, timeout=60)
        print("\nwhat the worker said about it:")
        for line in log_path.read_text(errors="replace").splitlines():
            if any(k in line for k in ("failover ", "failback ", "connection uses", "no longer active", "moved ", "SIGNAL")):
                print("  " + line.split("] ", 1)[-1])
        return code
    finally:
        if worker is not None:
            stop_process_group(worker)
        primary.close()
        secondary.close()


if __name__ == "__main__":
    raise SystemExit(main())
