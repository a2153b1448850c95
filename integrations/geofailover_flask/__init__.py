"""geofailover for Flask: ``GeoFailover`` extension, Flask-Caching backend,
signals, ``flask geofailover`` CLI and a readiness blueprint.

A thin adapter: every failover decision is the core's
(:mod:`geofailover_core`); this package maps Flask idioms (``init_app``,
``app.config``, ``app.extensions``, blinker signals, ``app.cli``) onto it.

The Flask-Caching backend lives in :mod:`geofailover_flask.cache` and is
imported only by Flask-Caching (``CACHE_TYPE``), so Flask-Caching stays optional.
"""

from __future__ import annotations

from . import signals
from .extension import GeoFailover
from .readiness import readiness_blueprint
from .state import GeoFailoverState

__all__ = ["GeoFailover", "GeoFailoverState", "readiness_blueprint", "signals"]
