"""Automatic failover and failback against real servers and real faults."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from geofailover_core import FailbackEvent, FailoverEvent, NoHealthyEndpointError, RecoveredEvent
from geofailover_core.testing import wait_until

from .conftest import MakeClient


def endpoint_of(client: redis.Redis, servers: list) -> int:  # type: ignore[type-arg]
    """Which server answers: each server holds a different marker."""
    return int(client.get("whoami"))


def mark(servers: list) -> None:  # type: ignore[type-arg]
    for i, server in enumerate(servers):
        server.client().set("whoami", i)


def test_kill_fails_over_with_no_error_seen_by_caller(two, make_client: MakeClient) -> None:
    mark(two)
    client = make_client(two)
    assert endpoint_of(client, two) == 0
    two[0].kill()
    # The pooled socket is dead; the reconnect is refused: conclusive, switch, retry.
    assert client.get("whoami") == b"1"
    assert client.set("k", "v") is True
    assert client.geofailover.active == "b"
    status = client.geofailover.status()
    a = status["endpoints"][0]
    assert a["breaker"] == "open" or a["health"] == "unhealthy"
    assert status["last_event"]["kind"] == "failover"
    assert status["last_event"]["reason"] in ("circuit_breaker", "health_check")


def test_freeze_fails_over_within_about_one_socket_timeout(two, make_client: MakeClient) -> None:
    mark(two)
    client = make_client(two)
    assert endpoint_of(client, two) == 0
    two[0].freeze()
    started = time.monotonic()
    assert client.get("whoami") == b"1"  # a read: retried on the new endpoint
    elapsed = time.monotonic() - started
    assert client.geofailover.active == "b"
    # bounded by socket timeout + confirm probe, far from redis-py's 14 s
    assert elapsed < 2.5


def test_freeze_write_is_not_resent_by_default(two, make_client: MakeClient) -> None:
    mark(two)
    client = make_client(two)
    client.ping()
    two[0].freeze()
    with pytest.raises(redis.exceptions.TimeoutError):
        client.incr("counter")  # may have reached the frozen server: not re-sent
    assert client.geofailover.active == "b"
    assert client.incr("counter") == 1
    two[0].thaw()


def test_health_monitor_fails_over_an_idle_client(two, make_client: MakeClient) -> None:
    client = make_client(two)
    client.ping()
    two[0].kill()
    wait_until(lambda: client.geofailover.active == "b", timeout=3, message="monitor did not fail over")


def test_failback_waits_for_the_grace_period(two, make_client: MakeClient) -> None:
    mark(two)
    client = make_client(two, failback_grace_period=1.0)
    client.ping()
    two[0].kill()
    wait_until(lambda: client.geofailover.active == "b", timeout=3)
    two[0].restart()
    two[0].client().set("whoami", 0)
    healthy_at = wait_until(
        lambda: client.geofailover.status()["endpoints"][0]["health"] == "healthy" and time.monotonic(), timeout=3
    )
    # grace honoured: still on b well inside the grace period
    assert client.geofailover.active == "b"
    wait_until(lambda: client.geofailover.active == "a", timeout=4, message="no failback")
    assert time.monotonic() - healthy_at >= 0.8
    assert client.get("whoami") == b"0"


def test_flapping_endpoint_resets_the_grace_clock(two, make_client: MakeClient) -> None:
    client = make_client(two, failback_grace_period=1.5)
    client.ping()
    two[0].kill()
    wait_until(lambda: client.geofailover.active == "b", timeout=3)
    for _ in range(2):
        two[0].restart()
        wait_until(lambda: client.geofailover.status()["endpoints"][0]["health"] == "healthy", timeout=3)
        two[0].kill()
        wait_until(lambda: client.geofailover.status()["endpoints"][0]["health"] == "unhealthy", timeout=3)
    assert client.geofailover.active == "b"
    assert client.geofailover.status()["endpoints"][0]["counters"].get("switched_to", 0) == 0


def test_auto_failback_can_be_disabled(two, make_client: MakeClient) -> None:
    client = make_client(two, auto_failback=False, failback_grace_period=0.2)
    client.ping()
    two[0].kill()
    wait_until(lambda: client.geofailover.active == "b", timeout=3)
    two[0].restart()
    wait_until(lambda: client.geofailover.status()["endpoints"][0]["health"] == "healthy", timeout=3)
    rounds = client.geofailover.monitor.completed_rounds
    wait_until(lambda: client.geofailover.monitor.completed_rounds >= rounds + 8, timeout=5)
    assert client.geofailover.active == "b"
    client.geofailover.failback()
    assert client.geofailover.active == "a"


def test_weights_pick_the_active_endpoint_and_the_next_one(three, make_client: MakeClient) -> None:
    mark(three)
    client = make_client(three, weights=[1, 5, 3])
    assert client.get("whoami") == b"1"
    three[1].kill()
    assert client.get("whoami") == b"2"
    three[2].kill()
    assert client.get("whoami") == b"0"


def test_all_down_fails_fast_and_recovers(two, make_client: MakeClient) -> None:
    client = make_client(two)
    events: list[object] = []
    client.geofailover.on("*", events.append)
    client.ping()
    two[0].kill()
    two[1].kill()
    wait_until(lambda: client.geofailover.active is None, timeout=3, message="not all down")
    started = time.monotonic()
    with pytest.raises(NoHealthyEndpointError) as info:
        client.get("k")
    assert time.monotonic() - started < 0.1
    assert isinstance(info.value, redis.exceptions.ConnectionError)
    assert "no healthy endpoint" in str(info.value)
    two[1].restart()
    wait_until(lambda: client.geofailover.active == "b", timeout=3, message="no recovery")
    assert client.set("k", 1)
    client.geofailover.events.flush()
    kinds = [e.kind for e in events]  # type: ignore[attr-defined]
    assert "all_down" in kinds and "recovered" in kinds
    assert isinstance(next(e for e in events if e.kind == "recovered"), RecoveredEvent)  # type: ignore[attr-defined]


def test_events_carry_from_to_reason_and_run_off_the_command_thread(two, make_client: MakeClient) -> None:
    client = make_client(two, failback_grace_period=0.3)
    seen: list[tuple[object, str]] = []
    client.geofailover.on("failover", lambda e: seen.append((e, threading.current_thread().name)))
    client.geofailover.on("failback", lambda e: seen.append((e, threading.current_thread().name)))
    client.ping()
    two[0].kill()
    client.ping()
    two[0].restart()
    wait_until(lambda: client.geofailover.active == "a", timeout=4)
    client.geofailover.events.flush()
    failover, thread1 = seen[0]
    failback, thread2 = seen[1]
    assert isinstance(failover, FailoverEvent) and isinstance(failback, FailbackEvent)
    assert (failover.from_endpoint, failover.to_endpoint) == ("a", "b")
    assert (failback.from_endpoint, failback.to_endpoint, failback.reason) == ("b", "a", "failback")
    assert failover.reason in ("circuit_breaker", "health_check") and failover.timestamp > 0
    assert thread1.startswith("geofailover-events") and thread2.startswith("geofailover-events")
    assert failover.as_dict()["kind"] == "failover"


def test_a_failing_or_slow_callback_never_reaches_the_app(two, make_client: MakeClient, caplog: pytest.LogCaptureFixture) -> None:
    client = make_client(two)
    release = threading.Event()
    got: list[str] = []

    def boom(event: object) -> None:
        raise RuntimeError("receiver bug")

    client.geofailover.on("failover", boom)
    client.geofailover.on("failover", lambda e: release.wait(5))  # a slow receiver
    client.geofailover.on("failover", lambda e: got.append("third"))
    client.ping()
    two[0].kill()
    started = time.monotonic()
    assert client.set("x", 1)  # not blocked by the slow receiver
    assert time.monotonic() - started < 1.0
    release.set()
    client.geofailover.events.flush()
    assert got == ["third"]
    assert "receiver bug" in caplog.text


def test_one_warning_per_failover_and_info_per_failback(two, make_client: MakeClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="geofailover")
    client = make_client(two, failback_grace_period=0.2)
    client.ping()
    two[0].kill()
    for _ in range(20):
        client.ping()
    two[0].restart()
    wait_until(lambda: client.geofailover.active == "a", timeout=4)
    # the log line follows the switch (it is written after the engine lock is released)
    wait_until(lambda: any("failback b -> a" in r.getMessage() for r in caplog.records), timeout=2)
    failovers = [r for r in caplog.records if "failover a -> b" in r.getMessage()]
    failbacks = [r for r in caplog.records if "failback b -> a" in r.getMessage()]
    assert len(failovers) == 1 and failovers[0].levelname == "WARNING"
    assert len(failbacks) == 1 and failbacks[0].levelname == "INFO"


def test_proxy_blackhole_is_detected_and_healed(two, fault_proxy_factory, make_client: MakeClient) -> None:
    mark(two)
    proxy = fault_proxy_factory(two[0])
    client = make_client([proxy, two[1]])
    assert client.get("whoami") == b"0"
    proxy.blackhole()
    assert client.get("whoami") == b"1"
    assert client.geofailover.active == "b"
    proxy.heal()
    wait_until(lambda: client.geofailover.active == "a", timeout=4, message="no failback after heal")
    assert client.get("whoami") == b"0"


def test_proxy_reset_fails_over(two, fault_proxy_factory, make_client: MakeClient) -> None:
    mark(two)
    proxy = fault_proxy_factory(two[0])
    client = make_client([proxy, two[1]])
    assert client.get("whoami") == b"0"
    proxy.reset()
    assert client.get("whoami") == b"1"
    assert client.geofailover.active == "b"


def test_restart_on_same_port_does_not_fail_over(two, make_client: MakeClient) -> None:
    """A quick restart (e.g. a deploy) is absorbed by reconnecting, not by a failover."""
    client = make_client(two, health_checks=[lambda ctx: True])  # only the command path judges
    client.ping()
    two[0].restart()
    # the pool sees the dead socket on checkout and reconnects to the new process
    assert client.ping()
    assert client.geofailover.active == "a"
    assert client.geofailover.status()["endpoints"][0]["counters"].get("command_failures", 0) == 0
