"""Send a stream of tasks, then report how many completed, were lost or ran twice.

    python producer.py --count 300 --rate 50

Kill the primary Redis while it runs (and start it again later): every task
still completes. The runs log (one line per execution, outside the source tree;
``GEO_RUNS_LOG`` to choose it) shows duplicates; each run counts only its own tasks.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections import Counter
from typing import Any

from app import RUNS_LOG, app, work

RUN = uuid.uuid4().hex[:12]  # this run's tasks are told apart from an earlier run's in the runs log


def send(count: int, rate: float, on_progress: Any = None) -> list[Any]:
    """Publish ``count`` tasks at ``rate`` per second; ``on_progress(i)`` after each."""
    results = []
    start = time.monotonic()
    for i in range(count):
        results.append(work.delay(i, RUN))
        if on_progress is not None:
            on_progress(i)
        delay = start + (i + 1) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the stream, not waiting for an outcome
    return results


def report(count: int, results: list[Any], timeout: float) -> int:
    """Wait for every result; print sent/completed/lost/duplicates; exit code 0 iff none lost."""
    deadline = time.monotonic() + timeout
    done = 0
    for result in results:
        try:
            result.get(timeout=max(0.1, deadline - time.monotonic()))
            done += 1
        except Exception as exc:  # noqa: BLE001 - counted and reported
            print(f"task {result.id}: {type(exc).__name__}: {exc}", file=sys.stderr)
    lines = RUNS_LOG.read_text().splitlines() if RUNS_LOG.exists() else []
    runs = Counter(int(i) for run, _, i in (line.partition(" ") for line in lines) if run == RUN)
    duplicates = sum(n - 1 for n in runs.values() if n > 1)
    lost = count - sum(1 for i in range(count) if runs[i])
    broker = app.connection_for_write().transport.engine
    print(f"sent={count} completed={done}/{count} lost={lost} duplicates={duplicates} producer_on={broker.active}")
    return 0 if done == count and lost == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0, help="tasks per second")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the results")
    args = parser.parse_args()
    results = send(args.count, args.rate, lambda i: print(f"sent {i + 1}/{args.count}", end="\r", flush=True))
    print()
    return report(args.count, results, args.timeout)


if __name__ == "__main__":
    raise SystemExit(main())
