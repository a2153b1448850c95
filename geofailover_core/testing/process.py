"""Stopping a worker process started in its own session (``start_new_session=True``).

Celery's prefork worker has children: a TERM to the whole group lets it shut
down warmly (acks, restores), and a KILL after ``timeout`` keeps a hung one
from outliving the test or benchmark that started it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def stop_process_group(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """TERM ``proc``'s process group, wait up to ``timeout``, then KILL it (and wait 5 s more)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
