"""The hit counter page and its JSON twin."""

from __future__ import annotations

import os
from typing import Any

from flask import Blueprint, render_template
from redis.exceptions import ConnectionError as RedisConnectionError

from . import geo

bp = Blueprint("hits", __name__)


def count_hit() -> dict[str, Any]:
    hits = geo.client.incr("hits")
    # The endpoint that is active right after the command is the one that
    # served it (a switch between the two lines is possible, but rare).
    return {"hits": hits, "region": geo.engine.active, "pid": os.getpid()}


@bp.get("/")
def index() -> Any:
    return render_template("index.html", **count_hit(), regions=geo.engine.endpoint_names)


@bp.get("/api/hits")
def api_hits() -> dict[str, Any]:
    return count_hit()


@bp.errorhandler(RedisConnectionError)
def redis_down(exc: RedisConnectionError) -> Any:
    # NoHealthyEndpointError (every region down) is a redis ConnectionError,
    # and so is a write whose reply was lost with a dying region.
    return {"error": "Redis is unavailable right now; retry shortly"}, 503
