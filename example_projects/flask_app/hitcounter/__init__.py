"""hitcounter: a Flask app that counts hits in Redis and shows which region served them.

Run it (see README.md)::

    flask --app hitcounter run
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from flask.logging import default_handler

from geofailover_flask import GeoFailover, readiness_blueprint, signals

# One extension object for any number of apps (the app factory pattern).
geo = GeoFailover()


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """The app factory: settings, then extensions, then views."""
    app = Flask(__name__)
    app.config.from_object("hitcounter.settings")
    app.config.from_prefixed_env()  # FLASK_GEOFAILOVER_URL=... overrides settings.py
    if test_config:
        app.config.update(test_config)

    geo.init_app(app)  # a mistake in GEOFAILOVER_* stops here, naming the key

    from .views import bp

    app.register_blueprint(bp)
    app.register_blueprint(readiness_blueprint())  # GET /readyz: 200, or 503 when no region serves

    # Receivers are module-level functions: blinker holds them weakly.
    signals.failover.connect(log_switch, app)
    signals.failback.connect(log_switch, app)
    signals.all_down.connect(log_all_down, app)
    # geofailover logs failovers (WARNING) and all-down (ERROR) on the
    # "geofailover" logger; print them like app.logger does. Use INFO to also
    # see failbacks and every health change.
    core_log = logging.getLogger("geofailover")
    core_log.setLevel(logging.WARNING)
    core_log.addHandler(default_handler)  # the same handler object is added only once
    return app


def log_switch(app: Flask, event: Any, instance: str, **extra: Any) -> None:
    """Runs on geofailover's event thread, inside an app context. Page someone here."""
    app.logger.warning(
        "Redis %s: traffic moved %s -> %s (%s: %s)", event.kind, event.from_endpoint, event.to_endpoint, event.reason, event.detail
    )


def log_all_down(app: Flask, event: Any, instance: str, **extra: Any) -> None:
    app.logger.error("Redis: no region can serve; requests that need Redis fail until one recovers")
