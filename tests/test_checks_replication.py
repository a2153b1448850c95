"""ReplicationLagHealthCheck on a real primary/replica pair, with lag made by a
fault proxy on the replication link (the replica stays readable, so stale
reads are observable)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from geofailover_core import ConfigurationError, FailoverConfig, FailoverRedis, HealthStatus, ProbeContext, UnhealthyEndpointError
from geofailover_core.checks import ReplicationLagHealthCheck
from geofailover_core.testing import FaultProxy, RedisServer, wait_until

from .conftest import FAST

REPLICATION = "geofailover_core.checks.ReplicationLagHealthCheck"
ROUND_BUDGET = 5.0


@pytest.fixture
def pair(redis_server_factory: Callable[..., list[RedisServer]], fault_proxy_factory: Callable[..., FaultProxy]) -> tuple[RedisServer, RedisServer, FaultProxy]:
    """(primary, replica, proxy on the replication link), replica streaming."""
    primary, replica = redis_server_factory(2)
    link = fault_proxy_factory(primary)
    replica.replicaof(link, wait=True)
    return primary, replica, link


def prepared(check: ReplicationLagHealthCheck, replica: RedisServer, primary: RedisServer, *, timeout: float = 0.5) -> Callable[[], Any]:
    """Bind ``check`` to endpoint ``r`` of a config whose endpoint ``p`` is the primary; return a probe function."""
    config = FailoverConfig.from_dict({"name": "repl", "endpoints": [f"{replica.url}?name=r", f"{primary.url}?name=p"]})
    check.prepare(config.endpoint("r"), config)
    client = replica.client()
    ctx = ProbeContext(config.endpoint("r"), client, timeout, 0.1)
    return lambda: check.check(ctx)


def fill(primary: RedisServer, n: int = 20) -> None:
    with primary.client() as c:
        for i in range(n):
            c.set(f"fill{i}", "x" * 500)


def test_bytes_and_heartbeat_lag_of_a_replica(pair) -> None:  # type: ignore[no-untyped-def]
    primary, replica, link = pair
    check = ReplicationLagHealthCheck(max_lag_bytes=1024, max_lag_seconds=0.3, heartbeat=True, primary="p")
    probe = prepared(check, replica, primary)
    healthy = wait_until(lambda: (r := probe()).status is HealthStatus.HEALTHY and r, timeout=3, message="caught up")
    assert "caught up: 0 bytes behind" in healthy.detail and "s stale" in healthy.detail
    link.blackhole()
    fill(primary)  # ~10 kB the replica does not get
    lagging = probe()
    assert lagging.status is HealthStatus.UNHEALTHY
    assert "bytes behind the primary (max 1024)" in lagging.detail and "stale (max 0.3 s)" in lagging.detail
    with replica.client() as reader:
        assert reader.get("fill19") is None  # the stale read the gate protects against
    link.heal()
    wait_until(lambda: probe().status is HealthStatus.HEALTHY, timeout=3, message="caught up after heal")
    with replica.client() as reader:
        assert reader.get("fill19") == b"x" * 500


def test_heartbeat_alone_measures_staleness_in_seconds(pair) -> None:  # type: ignore[no-untyped-def]
    primary, replica, link = pair
    probe = prepared(ReplicationLagHealthCheck(max_lag_seconds=0.2, heartbeat=True, primary=primary.url), replica, primary)
    assert probe().status is HealthStatus.HEALTHY
    link.blackhole()  # no writes needed: the heartbeat itself is the write that does not arrive
    result = wait_until(lambda: (r := probe()).status is HealthStatus.UNHEALTHY and r, timeout=3, message="heartbeat goes stale")
    assert "s stale (max 0.2 s)" in result.detail
    with primary.client() as c:
        assert c.exists("geofailover:repl:heartbeat:r")  # written on the primary, with a TTL
        assert 0 < c.pttl("geofailover:repl:heartbeat:r") <= 60_000


def test_a_link_that_is_down_is_unhealthy_and_an_unreachable_primary_inconclusive(pair) -> None:  # type: ignore[no-untyped-def]
    primary, replica, link = pair
    probe = prepared(ReplicationLagHealthCheck(max_lag_bytes=0, primary="p"), replica, primary)
    link.refuse()
    result = wait_until(lambda: (r := probe()).status is HealthStatus.UNHEALTHY and r, timeout=3, message="link down")
    assert "replication link down" in result.detail
    link.heal()
    wait_until(lambda: probe().status is HealthStatus.HEALTHY, timeout=5, message="link back up")
    primary.freeze()
    try:
        result = probe()
        assert result.status is HealthStatus.INCONCLUSIVE and "cannot reach the primary" in result.detail
    finally:
        primary.thaw()


def test_primary_found_from_the_replica_when_not_configured(redis_server_factory) -> None:  # type: ignore[no-untyped-def]
    primary, replica = redis_server_factory(2)
    replica.replicaof(primary, wait=True)
    probe = prepared(ReplicationLagHealthCheck(max_lag_bytes=0), replica, primary)
    assert wait_until(lambda: (r := probe()).status is HealthStatus.HEALTHY and r, timeout=3, message="in sync").detail.startswith("caught up")


def test_an_endpoint_that_is_a_primary(pair) -> None:  # type: ignore[no-untyped-def]
    primary, replica, _link = pair
    config = FailoverConfig.from_dict({"name": "repl", "endpoints": [f"{primary.url}?name=p", f"{replica.url}?name=r"]})

    def probe(check: ReplicationLagHealthCheck) -> Any:
        check.prepare(config.endpoint("p"), config)
        return check.check(ProbeContext(config.endpoint("p"), primary.client(), 0.5, 0.1))

    plain = probe(ReplicationLagHealthCheck(max_lag_bytes=1024))
    assert plain.status is HealthStatus.HEALTHY and "nothing to lag behind" in plain.detail
    one = wait_until(lambda: (r := probe(ReplicationLagHealthCheck(max_lag_bytes=1024, min_replicas=1))).status is HealthStatus.HEALTHY and r,
                     timeout=3, message="replica acknowledged")  # fmt: skip
    assert "1 of 1 replicas within thresholds" in one.detail
    assert probe(ReplicationLagHealthCheck(max_lag_bytes=1024, min_replicas=2)).status is HealthStatus.UNHEALTHY


@pytest.mark.parametrize(
    ("kwargs", "setting", "words"),
    [
        ({}, "max_lag_bytes", "no threshold"),
        ({"max_lag_seconds": 1}, "max_lag_seconds", "heartbeat=True"),
        ({"max_lag_bytes": -1}, "max_lag_bytes", "byte count"),
        ({"max_lag_bytes": 1, "min_replicas": -1}, "min_replicas", "count"),
        ({"max_lag_bytes": 1, "mode": "gate"}, "mode", "check mode"),
    ],
)
def test_configuration_errors(kwargs: dict[str, Any], setting: str, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words) as info:
        ReplicationLagHealthCheck(**kwargs)
    assert info.value.setting.endswith(setting)


def test_primary_must_name_an_endpoint_or_a_url() -> None:
    from geofailover_core.engine import FailoverEngine

    check = {"class": REPLICATION, "max_lag_bytes": 1, "primary": "us-east"}
    with pytest.raises(ConfigurationError, match="neither an endpoint name nor a URL") as info:
        FailoverEngine(FailoverConfig.from_dict({"endpoints": [{"name": "a", "url": "redis://h:1/0", "health_checks": [check]}, "redis://h:2/0?name=b"]}))
    assert info.value.setting == "endpoints['a'].health_checks[0].primary" and "'b'" in str(info.value)
    secret = ReplicationLagHealthCheck(max_lag_bytes=1, primary="redis://:pw-in-url@h:1/0")
    assert secret.secrets == ("pw-in-url",) and "pw-in-url" not in repr(secret)


def test_a_lagging_replica_is_not_failed_back_to_until_it_catches_up(pair, clients) -> None:  # type: ignore[no-untyped-def]
    primary, replica, link = pair
    gate = {"class": REPLICATION, "max_lag_bytes": 1024, "max_lag_seconds": 0.5, "heartbeat": True, "primary": "b"}
    client = FailoverRedis(config={
        "name": "replica-gate",
        "endpoints": [{"name": "a", "url": replica.url, "weight": 2, "health_checks": [gate]}, {"name": "b", "url": primary.url}],
        "control_plane": False,  # a read-only replica takes no control-plane writes
        **FAST,
    })  # fmt: skip
    clients.append(client)
    geo = client.geofailover

    def a_gate() -> dict[str, Any]:
        return next(e for e in geo.status()["endpoints"] if e["name"] == "a")["failback_gate"]  # type: ignore[no-any-return]

    client.get("x")
    wait_until(lambda: a_gate()["open"], timeout=ROUND_BUDGET, message="a's gate opens")
    geo.failover_to("b")  # e.g. maintenance: traffic (and writes) go to the primary
    link.blackhole()
    for i in range(10):
        client.set(f"k{i}", "v" * 500)
    wait_until(lambda: not a_gate()["open"], timeout=ROUND_BUDGET, message="a's gate closes")
    assert "bytes behind" in a_gate()["detail"]
    geo.unpin()  # automatic failback may resume...
    monitor = geo.monitor
    target = monitor.completed_rounds + 12  # past the 0.5 s grace at a 0.1 s interval
    wait_until(lambda: monitor.completed_rounds >= target, timeout=ROUND_BUDGET, message="rounds pass")
    assert geo.active == "b", "...but not to a replica that is behind"
    with pytest.raises(UnhealthyEndpointError, match="not ready for traffic to return"):
        geo.failover_to("a")
    link.heal()
    wait_until(lambda: geo.active == "a", timeout=ROUND_BUDGET, message="failback once the replica caught up")
    assert client.get("k9") == b"v" * 500  # read from the replica: it has every write


def test_an_unreachable_check_target_is_not_a_crash(redis_server_factory) -> None:  # type: ignore[no-untyped-def]
    (server,) = redis_server_factory(1)
    check = ReplicationLagHealthCheck(max_lag_bytes=1)
    config = FailoverConfig.from_dict({"endpoints": [f"{server.url}?name=a"]})
    check.prepare(config.endpoint("a"), config)
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    result = check.check(ProbeContext(config.endpoint("a"), dead, 0.2, 0.1))
    assert result.status is HealthStatus.INCONCLUSIVE and "INFO replication failed" in result.detail


def test_a_primary_that_refuses_the_heartbeat_is_inconclusive(pair) -> None:  # type: ignore[no-untyped-def]
    primary, replica, _link = pair
    # Misconfigured: "primary" points at the replica itself (by URL), which refuses writes.
    probe = prepared(ReplicationLagHealthCheck(max_lag_seconds=1, heartbeat=True, primary=replica.url), replica, primary)
    result = probe()
    assert result.status is HealthStatus.INCONCLUSIVE and "the primary answered ReadOnlyError" in result.detail


def test_no_heartbeat_ever_replicated_is_unhealthy(pair) -> None:  # type: ignore[no-untyped-def]
    primary, replica, link = pair
    link.blackhole()  # before the first heartbeat is written
    probe = prepared(ReplicationLagHealthCheck(max_lag_seconds=0.1, heartbeat=True, primary="p"), replica, primary, timeout=0.3)
    result = probe()
    assert result.status is HealthStatus.UNHEALTHY and "no heartbeat from the primary visible" in result.detail


def test_an_unprepared_check_says_how_to_configure_it(redis_server_factory) -> None:  # type: ignore[no-untyped-def]
    (server,) = redis_server_factory(1)
    config = FailoverConfig.from_dict({"endpoints": [f"{server.url}?name=a"]})
    with pytest.raises(RuntimeError, match="configure it through FailoverConfig"):
        ReplicationLagHealthCheck(max_lag_bytes=1).check(ProbeContext(config.endpoint("a"), server.client(), 0.2, 0.1))
