"""Smoke test of example_projects/celery_app: the documented demo runs and loses nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("celery")

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


def test_the_readme_names_the_files_it_walks_through() -> None:
    readme = (EXAMPLE / "README.md").read_text()
    for name in ("app.py", "producer.py", "demo.py", "celery -A app worker"):
        assert name in readme
        if name.endswith(".py"):
            assert (EXAMPLE / name).exists()
