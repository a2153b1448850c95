"""Smoke test of example_projects/celery_app: the documented demo runs and loses nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("celery")

from geofailover_core.testing import RedisServer, stop_process_group, wait_until

EXAMPLE = Path(__file__).resolve().parent.parent / "example_projects" / "celery_app"

pytestmark = pytest.mark.slow


def test_the_demo_completes_every_task_across_a_dead_primary() -> None:
    proc = subprocess.run(
        [sys.executable, "demo.py", "--count", "60", "--rate", "150", "--fast"],
        cwd=EXAMPLE, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "sent=60 completed=60/60 lost=0" in proc.stdout
    assert "producer_on=primary" in proc.stdout
    assert "failover primary -> secondary" in proc.stdout
    assert "broker connection uses endpoint secondary" in proc.stdout
    assert "failback secondary -> primary" in proc.stdout


def test_a_second_producer_run_counts_only_its_own_tasks(redis_server_factory: Callable[..., list[RedisServer]], tmp_path: Path) -> None:
    """The README's steps 2-3 twice against one worker: the runs log outlives a run, and must not
    turn the first run's tasks into the second run's duplicates."""
    primary, secondary = redis_server_factory(2)
    env = {**os.environ, "GEO_PRIMARY": f"{primary.host}:{primary.port}", "GEO_SECONDARY": f"{secondary.host}:{secondary.port}",
           "GEO_FAST": "1", "GEO_RUNS_LOG": str(tmp_path / "runs.log"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(EXAMPLE), os.environ.get("PYTHONPATH")]))}
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "app", "worker", "--pool=solo", "--without-gossip",
                                   "--without-mingle", "--without-heartbeat", "-l", "INFO"],
                                  cwd=EXAMPLE, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: " ready." in log.read_text(errors="replace"), 30, interval=0.05, message="worker ready")
        for _ in range(2):
            run = subprocess.run([sys.executable, "producer.py", "--count", "10", "--rate", "200", "--timeout", "30"],
                                 cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=60)
            assert "sent=10 completed=10/10 lost=0 duplicates=0" in run.stdout, run.stdout + run.stderr
    finally:
        stop_process_group(worker)
    assert not list(EXAMPLE.glob("runs.log")), "nothing written into the source tree"


def test_the_readme_names_the_files_it_walks_through() -> None:
    readme = (EXAMPLE / "README.md").read_text()
    for name in ("app.py", "producer.py", "demo.py", "celery -A app worker", "celery -A app geofailover status"):
        assert name in readme
        if name.endswith(".py"):
            assert (EXAMPLE / name).exists()
