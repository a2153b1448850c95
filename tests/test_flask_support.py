"""Helpers shared by the Flask integration tests (no tests here).

Named ``test_flask_*`` because that is the file pattern the Flask integration
owns in this tree; pytest collects nothing from it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import pytest

pytest.importorskip("flask", reason="Flask integration tests need the flask extra: pip install geofailover[flask]")

from flask import Flask

from geofailover_core.testing import RedisServer

from .conftest import FAST, url_list

_apps = itertools.count()

__all__ = ["FAST", "engine_url", "new_app"]


def engine_url(servers: Sequence[RedisServer], names: Sequence[str] = ("a", "b", "c"), weights: Sequence[float] | None = None) -> str:
    """``GEOFAILOVER_URL`` for ``servers``, weights descending (a is preferred)."""
    return url_list(servers, names, weights)


def new_app(servers: Sequence[RedisServer] | None = None, *, options: dict[str, Any] | None = None, **config: Any) -> Flask:
    """A Flask app whose default instance points at ``servers`` with test-speed timings."""
    app = Flask(f"flask_test_app_{next(_apps)}")
    app.config["TESTING"] = True
    if servers is not None:
        app.config["GEOFAILOVER_URL"] = engine_url(servers)
        app.config["GEOFAILOVER_OPTIONS"] = {**FAST, **(options or {})}
    app.config.update(config)
    return app
