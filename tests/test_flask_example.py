"""Smoke test of example_projects/flask_app (hitcounter): the page a new user
opens keeps counting while its region dies and comes back."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flask", reason="Flask integration tests need the flask extra: pip install geofailover[flask]")

from flask import Flask

from geofailover_core import registry
from geofailover_core.testing import RedisServer, wait_until

from .test_flask_support import FAST

EXAMPLE = Path(__file__).resolve().parents[1] / "example_projects" / "flask_app"


@pytest.fixture
def hitcounter(two: list[RedisServer]) -> Iterator[Flask]:
    sys.path.insert(0, str(EXAMPLE))
    try:
        from hitcounter import create_app

        yield create_app(
            {
                "TESTING": True,
                "GEOFAILOVER_URL": f"{two[0].url}?name=us-east&weight=2;{two[1].url}?name=eu-west&weight=1",
                "GEOFAILOVER_OPTIONS": {**FAST, "app_label": "hitcounter", "decode_responses": True},
            }
        )
    finally:
        sys.path.remove(str(EXAMPLE))
        registry.close_all()


def _region(page: Any) -> str:
    text = page.get_data(as_text=True)
    return text.split('<p class="region" id="region">', 1)[1].split("<", 1)[0]


def test_default_settings_point_at_two_local_regions() -> None:
    sys.path.insert(0, str(EXAMPLE))
    try:
        from hitcounter import settings
    finally:
        sys.path.remove(str(EXAMPLE))
    assert "127.0.0.1:6379/0?name=us-east&weight=2" in settings.GEOFAILOVER_URL
    assert "127.0.0.1:6380/0?name=eu-west&weight=1" in settings.GEOFAILOVER_URL


def test_hitcounter_walkthrough(hitcounter: Flask, two: list[RedisServer]) -> None:
    client = hitcounter.test_client()
    page = client.get("/")
    assert page.status_code == 200
    assert _region(page) == "us-east"
    assert client.get("/api/hits").get_json()["hits"] == 2
    assert client.get("/readyz").status_code == 200

    two[0].kill()  # README step: ./run_redis.sh kill us-east
    page = client.get("/")
    assert page.status_code == 200 and _region(page) == "eu-west"
    body = client.get("/api/hits").get_json()
    assert (body["hits"], body["region"]) == (2, "eu-west")  # eu-west counts from zero: traffic moved, data did not

    two[0].restart()  # README step: ./run_redis.sh start us-east
    wait_until(lambda: client.get("/api/hits").get_json()["region"] == "us-east", timeout=10, message="no failback")

    for server in two:
        server.kill()
    engine = hitcounter.extensions["geofailover"]["default"].engine
    wait_until(lambda: engine.active is None, timeout=5)
    down = client.get("/api/hits")
    assert down.status_code == 503 and "unavailable" in down.get_json()["error"]
    assert client.get("/readyz").status_code == 503
