"""Delivery latency with a real worker: a message on any consumed queue, at any priority, is taken at once.

The worker waits with a 30 s ``BRPOP`` timeout (``polling_interval``), so a message its wait does
not watch would sit for 30 s; each one must run well before that.
"""

from __future__ import annotations

import pytest

from geofailover_core.testing import wait_until
from tests import test_celery_support as support
from tests.test_celery_support import CeleryEnv

celery_env = support.celery_env  # the fixture

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_every_queue_and_priority_wakes_an_idle_worker(celery_env: CeleryEnv, pool: str) -> None:
    env = celery_env
    env.kombu_options["polling_interval"] = 30  # kombu: the BRPOP timeout
    env.start_worker(pool, concurrency=2 if pool == "prefork" else 1, queues="celery,second")  # the default queue plus another
    geoapp = env.app()
    combinations = [(queue, priority) for queue in ("second", "celery") for priority in range(10)]
    for i, (queue, priority) in enumerate(combinations):
        geoapp.record.apply_async((i,), queue=queue, priority=priority)  # the worker is idle, waiting
        wait_until(lambda i=i: i in env.ran(), 10, interval=0.01, message=f"task on queue {queue} at priority {priority} ran")
    assert sorted(env.ran()) == list(range(len(combinations)))
