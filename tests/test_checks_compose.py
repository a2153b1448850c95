"""Several checks per endpoint: health_check_combine, check modes, custom checks
and configuration from plain dicts."""

from __future__ import annotations

from typing import Any

import pytest

from geofailover_core import ConfigurationError, FailoverRedis, HealthResult, HealthStatus, ProbeContext
from geofailover_core.health import FAILBACK_ONLY, CallableHealthCheck, combine_checks, resolve_check
from geofailover_core.testing import wait_until

from .conftest import FAST

H, U, N = HealthStatus.HEALTHY, HealthStatus.UNHEALTHY, HealthStatus.INCONCLUSIVE  # N: no verdict


@pytest.mark.parametrize(
    ("statuses", "policy", "expected"),
    [
        ([H, H], "all", H),
        ([H, U], "all", U),
        ([H, N], "all", N),
        ([U, N], "all", U),
        ([H, U], "any", H),
        ([U, N], "any", N),
        ([U, U], "any", U),
        ([H, H, U], "majority", H),
        ([H, U, U], "majority", U),
        ([H, N, U], "majority", N),  # the inconclusive one decides: unknown
        ([H, U], "majority", U),  # a strict majority is needed
        ([N, N], "all", N),
    ],
)
def test_combine_checks(statuses: list[HealthStatus], policy: str, expected: HealthStatus) -> None:
    results = [(f"c{i}", HealthResult(s, f"d{i}")) for i, s in enumerate(statuses)]
    verdict = combine_checks(results, policy)
    assert verdict.status is expected
    if expected is U:
        assert all(f"c{i}: d{i}" in verdict.detail for i, s in enumerate(statuses) if s is U)


def key_flag(ctx: ProbeContext) -> HealthResult:
    """Unhealthy while the endpoint holds ``down``: an operator's switch."""
    return HealthResult.unhealthy("flag set") if ctx.client.exists("down") else HealthResult.healthy("no flag")


def caught_up(ctx: ProbeContext) -> bool:
    """A custom gate: traffic may return only once the endpoint holds ``caught-up``."""
    return bool(ctx.client.exists("caught-up"))


def make_flag_check(key: str) -> Any:
    """A factory configured from settings: ``{"class": "...make_flag_check", "key": "x"}``."""
    return CallableHealthCheck(lambda ctx: not ctx.client.exists(key), name=f"flag:{key}")


def build(clients: list[FailoverRedis], servers: Any, a_checks: list[Any], **options: Any) -> FailoverRedis:
    client = FailoverRedis(config={
        "name": f"compose-{len(clients)}-{id(servers)}",
        "endpoints": [{"name": "a", "url": servers[0].url, "weight": 2, "health_checks": a_checks}, {"name": "b", "url": servers[1].url}],
        **FAST, **options,
    })  # fmt: skip
    clients.append(client)
    return client


@pytest.mark.parametrize(("combine", "fails_over"), [("all", True), ("any", False), ("majority", False)])
def test_health_check_combine_is_applied(two, clients, combine: str, fails_over: bool) -> None:  # type: ignore[no-untyped-def]
    checks = ["ping", "tests.test_checks_compose.key_flag", {"class": "tests.test_checks_compose.make_flag_check", "key": "other"}]
    client = build(clients, two, checks, health_check_combine=combine)
    client.ping()
    two[0].client().set("down", 1)  # one of three checks fails
    geo = client.geofailover
    if fails_over:
        wait_until(lambda: geo.active == "b", timeout=5, message="one failing check is enough with 'all'")
    else:
        target = geo.monitor.completed_rounds + 5
        wait_until(lambda: geo.monitor.completed_rounds >= target, timeout=5, message="rounds pass")
        assert geo.active == "a"
    a = next(e for e in geo.status()["endpoints"] if e["name"] == "a")
    assert [(c["name"], c["status"]) for c in a["checks"]] == [("ping", "healthy"), ("key_flag", "unhealthy"), ("flag:other", "healthy")]


def test_a_custom_function_can_be_a_failback_gate_from_settings(two, clients) -> None:  # type: ignore[no-untyped-def]
    client = build(clients, two, [{"class": "tests.test_checks_compose.caught_up", "mode": "failback_only"}])
    geo = client.geofailover
    client.ping()
    a = lambda: next(e for e in geo.status()["endpoints"] if e["name"] == "a")  # noqa: E731
    wait_until(lambda: a()["failback_gate"]["status"] == "unhealthy", timeout=5, message="gate closed: no key yet")
    assert [c["name"] for c in a()["checks"]] == ["ping", "caught_up"]  # PING added, the gate runs last
    assert geo.active == "a", "a closed gate never evicts"
    two[0].kill()
    wait_until(lambda: geo.active == "b", timeout=5, message="failover")
    two[0].restart()
    target = geo.monitor.completed_rounds + 12
    wait_until(lambda: geo.monitor.completed_rounds >= target, timeout=5, message="past the grace period")
    assert geo.active == "b"
    two[0].client().set("caught-up", 1)
    wait_until(lambda: geo.active == "a", timeout=5, message="failback once the gate opens")


def test_resolve_check_from_dicts_and_its_errors() -> None:
    gate = resolve_check({"class": "tests.test_checks_compose.caught_up", "mode": "failback_only", "name": "my-gate"})
    assert (gate.name, getattr(gate, "mode", None)) == ("my-gate", FAILBACK_ONLY)
    factory = resolve_check({"class": "tests.test_checks_compose.make_flag_check", "key": "k"})
    assert factory.name == "flag:k"
    with pytest.raises(ConfigurationError, match="missing") as missing:
        resolve_check({"url": "x"}, "endpoints['a'].health_checks[0]")
    assert missing.value.setting == "endpoints['a'].health_checks[0].class"
    with pytest.raises(ConfigurationError, match="cannot import"):
        resolve_check({"class": "tests.nope.Check"})
    with pytest.raises(ConfigurationError, match="not a check mode") as mode:
        resolve_check({"class": "tests.test_checks_compose.caught_up", "mode": "failback"}, "health_checks[1]")
    assert mode.value.setting == "health_checks[1].mode"
    with pytest.raises(ConfigurationError, match="did you mean 'key'") as typo:
        resolve_check({"class": "tests.test_checks_compose.make_flag_check", "kye": "k"}, "health_checks[0]")
    assert typo.value.setting == "health_checks[0].kye"
    with pytest.raises(ConfigurationError, match="not a check mode"):
        CallableHealthCheck(caught_up, mode="gate")


def test_checks_can_be_validated_without_an_engine() -> None:
    from geofailover_core import FailoverConfig
    from geofailover_core.endpoint import validate_checks

    good = {"class": "geofailover_core.checks.ReplicationLagHealthCheck", "max_lag_bytes": 1, "primary": "b"}
    config = FailoverConfig.from_dict({"endpoints": [{"name": "a", "url": "redis://h:1/0", "health_checks": [good]}, "redis://h:2/0?name=b"]})
    validate_checks(config)
    bad = FailoverConfig.from_dict({"endpoints": ["redis://h:1/0?name=a"], "health_checks": [{**good, "primary": "a"}]})
    with pytest.raises(ConfigurationError, match="cannot be its own primary") as info:
        validate_checks(bad)
    assert info.value.setting == "health_checks[0].primary"


class _Leaky:
    """A check whose close() fails: closing the engine must still reach every other check."""

    name = "leaky"
    closed = 0

    def check(self, ctx: ProbeContext) -> bool:
        return True

    def close(self) -> None:
        raise OSError("socket already gone")


class _Tidy(_Leaky):
    name = "tidy"

    def close(self) -> None:
        type(self).closed += 1


def test_closing_reaches_every_check_even_if_one_fails(two, caplog) -> None:  # type: ignore[no-untyped-def]
    client = FailoverRedis(endpoints=[f"{two[0].url}?name=a"], name="closing", health_checks=[_Leaky(), _Tidy()], **FAST)
    client.ping()
    client.geofailover.close()
    client.close()
    assert _Tidy.closed == 1
    assert "closing health check 'leaky' of a failed" in caplog.text
