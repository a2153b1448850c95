"""Manual failover, failback, pin and unpin."""

from __future__ import annotations

import time

import pytest

from geofailover_core import UnhealthyEndpointError, UnknownEndpointError
from geofailover_core.testing import wait_until

from .conftest import MakeClient
from .test_failover import mark


def test_failover_to_moves_now_and_survives_automatic_failback(two, make_client: MakeClient) -> None:
    mark(two)
    client = make_client(two, failback_grace_period=0.1)
    client.geofailover.check_now()
    events: list[object] = []
    client.geofailover.on("failover", events.append)
    client.geofailover.failover_to("b", reason="maintenance in us-east")
    assert client.get("whoami") == b"1"
    rounds = client.geofailover.monitor.completed_rounds
    wait_until(lambda: client.geofailover.monitor.completed_rounds >= rounds + 5, timeout=3)
    assert client.geofailover.active == "b"  # not reverted by the failback timer
    client.geofailover.events.flush()
    assert events[0].reason == "manual" and events[0].detail == "maintenance in us-east"  # type: ignore[attr-defined]
    client.geofailover.failback()
    assert client.geofailover.active == "a"
    assert client.get("whoami") == b"0"


def test_failover_to_refuses_an_unhealthy_target_unless_forced(two, make_client: MakeClient) -> None:
    client = make_client(two)
    client.ping()
    two[1].kill()
    wait_until(lambda: client.geofailover.status()["endpoints"][1]["health"] == "unhealthy", timeout=3)
    with pytest.raises(UnhealthyEndpointError, match="force=True"):
        client.geofailover.failover_to("b")
    assert client.geofailover.active == "a"
    two[1].restart()
    client.geofailover.failover_to("b", force=True)
    assert client.geofailover.active == "b"
    assert client.ping()


def test_unknown_endpoint_is_named(two, make_client: MakeClient) -> None:
    client = make_client(two)
    with pytest.raises(UnknownEndpointError, match=r"'nope'.*configured: a, b"):
        client.geofailover.failover_to("nope")


def test_manual_target_failing_resumes_automatic_rules(two, make_client: MakeClient) -> None:
    client = make_client(two)
    client.geofailover.failover_to("b")
    client.ping()
    two[1].kill()
    assert client.ping()
    assert client.geofailover.active == "a"
    assert client.geofailover.status()["hold"] is None


def test_pin_fails_over_when_pinned_endpoint_dies_and_returns_when_it_recovers(two, make_client: MakeClient, caplog) -> None:
    client = make_client(two, failback_grace_period=0.3)
    client.geofailover.pin("b")
    assert client.geofailover.status()["hold"]["pinned"] is True
    client.ping()
    two[1].kill()
    assert client.ping()  # still serving, on a
    assert client.geofailover.active == "a"
    wait_until(lambda: "pinned endpoint b is down, pin stays in force" in caplog.text, timeout=2)
    two[1].restart()
    wait_until(lambda: client.geofailover.active == "b", timeout=4, message="did not return to pinned endpoint")
    assert client.geofailover.status()["hold"]["endpoint"] == "b"


def test_pin_with_duration_lapses_by_itself(two, make_client: MakeClient) -> None:
    client = make_client(two, failback_grace_period=0.1)
    client.geofailover.check_now()
    client.geofailover.pin("b", duration=0.5)
    assert client.geofailover.active == "b"
    started = time.monotonic()
    wait_until(lambda: client.geofailover.active == "a", timeout=3, message="pin did not expire")
    assert time.monotonic() - started >= 0.4
    assert client.geofailover.status()["hold"] is None


def test_unpin_returns_to_automatic(two, make_client: MakeClient) -> None:
    client = make_client(two, failback_grace_period=0.1)
    client.geofailover.check_now()
    client.geofailover.pin("b")
    client.geofailover.unpin()
    wait_until(lambda: client.geofailover.active == "a", timeout=3)


def test_pin_rejects_nonpositive_duration(two, make_client: MakeClient) -> None:
    client = make_client(two)
    with pytest.raises(ValueError, match="positive"):
        client.geofailover.pin("b", duration=0)
