"""geofailover for Flask: ``GeoFailover`` extension, Flask-Caching backend
(:mod:`geofailover_flask.cache`, imported only by Flask-Caching, so it stays
optional), signals, ``flask geofailover`` CLI and a readiness blueprint.

A thin adapter: every failover decision is the core's; this package maps
Flask idioms (``init_app``, ``app.config``, ``app.extensions``, blinker
signals, ``app.cli``) onto it.
"""

from __future__ import annotations

from geofailover_core.extras import require

require("geofailover_flask", "flask", "flask", "blinker")

from . import signals  # noqa: E402
from .extension import GeoFailover  # noqa: E402
from .readiness import readiness_blueprint  # noqa: E402
from .state import GeoFailoverState  # noqa: E402

__all__ = ["GeoFailover", "GeoFailoverState", "readiness_blueprint", "signals"]
