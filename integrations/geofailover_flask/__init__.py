"""geofailover for Flask: ``GeoFailover`` extension, Flask-Caching backend,
signals, ``flask geofailover`` CLI and a readiness blueprint.

A thin adapter: every failover decision is the core's
(:mod:`geofailover_core`); this package maps Flask idioms (``init_app``,
``app.config``, ``app.extensions``, blinker signals, ``app.cli``) onto it.

The Flask-Caching backend lives in :mod:`geofailover_flask.cache` and is
imported only by Flask-Caching (``CACHE_TYPE``), so Flask-Caching stays optional.
"""

from __future__ import annotations

from geofailover_core.extras import require

require("geofailover_flask", "flask", "flask", "blinker")

from . import signals  # noqa: E402
from .extension import GeoFailover  # noqa: E402
from .readiness import readiness_blueprint  # noqa: E402
from .state import GeoFailoverState  # noqa: E402

__all__ = ["GeoFailover", "GeoFailoverState", "readiness_blueprint", "signals"]
