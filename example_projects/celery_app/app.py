"""The example's Celery app: broker and results on two Redis endpoints with geofailover.

Run a worker with ``celery -A app worker --pool=solo -l INFO`` from this
directory. The endpoints come from ``GEO_PRIMARY`` and ``GEO_SECONDARY``
(``host:port``, default ``127.0.0.1:6379`` and ``127.0.0.1:6380``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from celery import Celery

import geofailover_celery  # noqa: F401 - registers the geofailover:// scheme
from geofailover_celery import signals

PRIMARY = os.environ.get("GEO_PRIMARY", "127.0.0.1:6379")
SECONDARY = os.environ.get("GEO_SECONDARY", "127.0.0.1:6380")
# Where the worker notes each run (outside the source tree; producer.py reads it).
RUNS_LOG = Path(os.environ.get("GEO_RUNS_LOG", Path(tempfile.gettempdir()) / "geofailover-celery-example-runs.log"))
FAST = bool(os.environ.get("GEO_FAST"))  # the smoke test's tight timings


def endpoints(db: int) -> str:
    """Both regions as one geofailover URL: the higher weight serves while it is healthy."""
    return f"geofailover://{PRIMARY}/{db}?name=primary&weight=2;geofailover://{SECONDARY}/{db}?name=secondary&weight=1"


engine_options: dict[str, Any] = {
    "probe_interval": 0.5,
    "failback_grace_period": 5,  # the primary must stay healthy this long before traffic returns
}
if FAST:
    engine_options = {
        "probe_interval": 0.1, "health_check_timeout": 0.2, "socket_timeout": 0.5,
        "socket_connect_timeout": 0.5, "failback_grace_period": 1.0, "breaker_reset_timeout": 0.2,
    }

app = Celery("example")
app.conf.update(
    broker_url=endpoints(0),
    result_backend=endpoints(1),
    broker_transport_options={
        # Messages a dead worker had taken are redelivered after this long.
        "visibility_timeout": 10 if FAST else 60,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
        "geofailover": {**engine_options, "drain_interval": 0.5},
    },
    result_backend_transport_options={"geofailover": dict(engine_options)},
    result_backend_always_retry=True,
    broker_connection_retry_on_startup=True,
    worker_cancel_long_running_tasks_on_connection_loss=True,
    worker_prefetch_multiplier=1,
    result_expires=3600,
)

log = logging.getLogger("example")


@app.task
def work(i: int, run: str = "") -> int:
    """Record the run (one line per execution, duplicates included, tagged with the producer's run) and return i * 2."""
    with RUNS_LOG.open("a") as runs:
        runs.write(f"{run} {i}\n")
    return i * 2


def _announce(sender: str, event: Any, **kwargs: Any) -> None:
    log.warning("SIGNAL %s %s: %s -> %s (%s)", sender, event.kind, event.from_endpoint, event.to_endpoint, event.reason)


for _signal in (signals.failover, signals.failback, signals.all_down, signals.recovered):
    _signal.connect(_announce, weak=False)
