"""Readiness view: 200 while serving, 503 when all endpoints are down, never a secret."""

from __future__ import annotations

from typing import Any

from geofailover_core.testing import wait_until

from .conftest import BACKEND, GeoSettings, cache_entry, location

SECRET = "readiness-Secret-pw"


def test_health_is_200_while_serving_and_503_when_all_down(geo_settings: GeoSettings, redis_server_factory: Any) -> None:
    from django.test import Client

    servers = redis_server_factory(2, password=SECRET)
    options = {**cache_entry(servers)["OPTIONS"], "PASSWORD": SECRET}
    geo_settings(CACHES={"default": {"BACKEND": BACKEND, "LOCATION": location(servers), "OPTIONS": options}})
    client = Client()

    response = client.get("/geofailover/health/")  # nothing used the cache yet: the view starts the monitor
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["caches"]["default"]["active"] == "a"
    assert response["Cache-Control"].startswith("max-age=0")
    wait_until(
        lambda: all(ep["health"] == "healthy" for ep in client.get("/geofailover/health/").json()["caches"]["default"]["endpoints"]),
        timeout=3,
        message="endpoints never reported healthy",
    )

    servers[0].kill()
    wait_until(lambda: client.get("/geofailover/health/").json()["caches"]["default"]["active"] == "b", timeout=3)
    assert client.get("/geofailover/health/").status_code == 200  # degraded but serving

    servers[1].kill()
    response = wait_until(lambda: (r := client.get("/geofailover/health/")).status_code == 503 and r, timeout=3)
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["caches"]["default"]["active"] is None
    assert client.head("/geofailover/health/").status_code == 503
    assert client.post("/geofailover/health/").status_code == 405

    text = response.content.decode()
    assert SECRET not in text
    for server in servers:
        assert str(server.port) not in text  # no addresses either: readiness URLs are often public


def test_health_can_select_caches(geo_settings: GeoSettings, two: list[Any]) -> None:
    from django.test import Client

    geo_settings(
        CACHES={
            "default": cache_entry(two),
            "sessions": cache_entry(two, geo={"name": "sessions-engine"}),
            "local": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        }
    )
    client = Client()
    body = client.get("/geofailover/health/").json()
    assert sorted(body["caches"]) == ["default", "sessions"]
    body = client.get("/geofailover/health/?cache=sessions").json()
    assert list(body["caches"]) == ["sessions"] and body["caches"]["sessions"]["engine"] == "sessions-engine"
    response = client.get("/geofailover/health/?cache=local")
    assert response.status_code == 404 and "local" in response.json()["error"]


def test_health_reports_a_misconfigured_cache_as_not_serving(geo_settings: GeoSettings) -> None:
    from django.test import Client

    geo_settings(CACHES={"default": {"BACKEND": BACKEND, "LOCATION": "", "OPTIONS": {}}})
    response = Client().get("/geofailover/health/")
    assert response.status_code == 503
    assert "misconfigured" in response.json()["caches"]["default"]["error"]
