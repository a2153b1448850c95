"""Health checks: custom checks, inconclusive results, concurrency, per-endpoint overrides."""

from __future__ import annotations

import threading

import pytest
import redis

from geofailover_core import HealthResult, HealthStatus, ProbeContext
from geofailover_core.health import combine_probes, resolve_check
from geofailover_core.testing import wait_until

from .conftest import MakeClient


def status_of(client: redis.Redis, name: str) -> dict:  # type: ignore[type-arg]
    return next(e for e in client.geofailover.status()["endpoints"] if e["name"] == name)  # type: ignore[attr-defined]


class KeyFlagCheck:
    """Unhealthy while the endpoint holds the key ``maintenance`` (an operator's switch)."""

    name = "maintenance-flag"

    def check(self, ctx: ProbeContext) -> HealthResult:
        if ctx.client.exists("maintenance"):
            return HealthResult.unhealthy("maintenance flag set")
        return HealthResult.healthy("no flag")


def test_custom_check_class_drives_failover(two, make_client: MakeClient) -> None:
    client = make_client(two, health_checks=[KeyFlagCheck])
    client.ping()
    two[0].client().set("maintenance", 1)
    wait_until(lambda: client.geofailover.active == "b", timeout=3)
    assert status_of(client, "a")["health_detail"] == "maintenance flag set"
    two[0].client().delete("maintenance")
    wait_until(lambda: client.geofailover.active == "a", timeout=3)


def test_callable_and_dotted_path_checks() -> None:
    assert resolve_check("ping").name == "ping"
    check = resolve_check("tests.test_health.KeyFlagCheck")
    assert isinstance(check, KeyFlagCheck)
    func = resolve_check(lambda ctx: True)
    assert func.name == "<lambda>"


def test_inconclusive_never_evicts_the_active_endpoint(two, make_client: MakeClient) -> None:
    calls: list[str] = []

    def flaky_monitoring(ctx: ProbeContext) -> HealthResult:
        calls.append(ctx.endpoint.name)
        return HealthResult.inconclusive("monitoring API timed out")

    client = make_client(two, health_checks=[flaky_monitoring])
    client.ping()
    wait_until(lambda: calls.count("a") >= 5, timeout=3)
    assert client.geofailover.active == "a"
    assert status_of(client, "a")["health"] == "inconclusive"
    assert client.set("k", 1)


def test_a_crashing_check_is_inconclusive_not_unhealthy(two, make_client: MakeClient) -> None:
    def buggy(ctx: ProbeContext) -> bool:
        raise KeyError("oops")

    client = make_client(two, health_checks=[buggy])
    client.geofailover.check_now()
    a = status_of(client, "a")
    assert a["health"] == "inconclusive" and "KeyError" in a["health_detail"]
    assert client.geofailover.active == "a"


def test_probes_of_one_round_run_concurrently(three, make_client: MakeClient) -> None:
    barrier = threading.Barrier(3, timeout=2)

    def meet(ctx: ProbeContext) -> bool:
        barrier.wait()  # sequential probing would never get three parties here
        return True

    client = make_client(three, health_checks=[meet], health_check_timeout=0.5)
    assert client.geofailover.check_now(timeout=5)
    assert [e["health"] for e in client.geofailover.status()["endpoints"]] == ["healthy"] * 3


def test_a_stuck_check_does_not_stall_the_monitor(two, make_client: MakeClient) -> None:
    release = threading.Event()

    def stuck_on_a(ctx: ProbeContext) -> bool:
        if ctx.endpoint.name == "a":
            release.wait(10)
        return True

    client = make_client(two, health_checks=[stuck_on_a])
    try:
        client.ping()
        rounds = client.geofailover.monitor.completed_rounds
        wait_until(lambda: client.geofailover.monitor.completed_rounds >= rounds + 3, timeout=5)
        assert status_of(client, "b")["health"] == "healthy"
        assert status_of(client, "a")["health"] == "inconclusive"
        assert client.geofailover.active == "a"
    finally:
        release.set()


def test_per_endpoint_checks_override_the_global_list(two, make_client: MakeClient) -> None:
    from geofailover_core import FailoverRedis

    seen: list[str] = []
    client = FailoverRedis(
        endpoints=[
            {"name": "a", "url": two[0].url, "weight": 2, "health_checks": [lambda ctx: seen.append("a-only") or True]},
            {"name": "b", "url": two[1].url},
        ],
        name="per-endpoint-checks",
        health_checks=[lambda ctx: seen.append(f"global-{ctx.endpoint.name}") or True],
    )
    try:
        client.geofailover.check_now()
        assert "a-only" in seen and "global-b" in seen and "global-a" not in seen
    finally:
        client.geofailover.close()


def test_probe_policy_and_count(two, make_client: MakeClient) -> None:
    # each round: a fails its first probe of three, b fails two of three
    script = {"a": [False, True, True], "b": [False, False, True]}
    counters = {"a": 0, "b": 0}

    def scripted(ctx: ProbeContext) -> bool:
        name = ctx.endpoint.name
        answer = script[name][counters[name] % 3]
        counters[name] += 1
        return answer

    client = make_client(two, health_checks=[scripted], health_check_probes=3, health_check_policy="majority", health_check_probe_delay=0)
    client.geofailover.check_now()
    assert status_of(client, "a")["health"] == "healthy"
    assert status_of(client, "b")["health"] == "unhealthy"
    assert counters["a"] % 3 == 0


@pytest.mark.parametrize(
    ("statuses", "policy", "expected"),
    [
        (["healthy", "unhealthy", "healthy"], "all", "unhealthy"),
        (["healthy", "unhealthy", "healthy"], "majority", "healthy"),
        (["unhealthy", "unhealthy", "healthy"], "majority", "unhealthy"),
        (["unhealthy", "unhealthy", "healthy"], "any", "healthy"),
        (["inconclusive", "inconclusive"], "all", "inconclusive"),
        (["inconclusive", "healthy"], "all", "healthy"),
    ],
)
def test_combine_probes(statuses: list[str], policy: str, expected: str) -> None:
    results = [HealthResult(HealthStatus(s)) for s in statuses]
    assert combine_probes(results, policy).status is HealthStatus(expected)


def test_health_changed_events(two, make_client: MakeClient) -> None:
    client = make_client(two)
    changes: list[tuple[str, str, str]] = []
    client.geofailover.on("health_changed", lambda e: changes.append((e.endpoint, e.old, e.new)))  # type: ignore[attr-defined]
    client.geofailover.check_now()
    two[1].kill()
    wait_until(lambda: ("b", "healthy", "unhealthy") in changes, timeout=3)
    assert ("a", "unknown", "healthy") in changes
