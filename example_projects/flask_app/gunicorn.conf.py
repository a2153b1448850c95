"""gunicorn settings for the hitcounter example (``gunicorn -c gunicorn.conf.py``).

``post_worker_init`` starts each worker's failover engine when the worker
boots, so the worker probes its regions and reports its heartbeat (``flask
geofailover status`` lists it) before it has served a single request.
Without it an engine starts on first use, which is fine for traffic but
leaves an idle worker out of the fleet view.
"""

from __future__ import annotations

from typing import Any

from geofailover_flask.state import states

wsgi_app = "hitcounter:create_app()"
preload_app = True  # the app is created once, then the workers are forked
workers = 4
bind = "127.0.0.1:5001"  # 5000 may still be `flask run` from step 2


def post_worker_init(worker: Any) -> None:
    for state in states(worker.wsgi).values():
        state.engine.start()
