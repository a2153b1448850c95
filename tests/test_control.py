"""The fleet control plane on real servers: overrides, heartbeats, conflicts, skew, failures.

One application engine per test (``make_client``) plays a fleet member; an
*observer* engine built from the same configuration plays the operator's
``geofailover`` process. Other fleet members are simulated, where a test needs
them, by writing their heartbeats into the fleet hash the way they would.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from geofailover_core import (
    ConfigurationError,
    FailoverConfig,
    FailoverEngine,
    FailoverRedis,
    UnhealthyEndpointError,
    UnknownEndpointError,
    registry,
)
from geofailover_core.control import ActionResult, ControlPlane, Heartbeat, Override, fleet_status, request
from geofailover_core.testing import RedisServer, wait_until

from .conftest import CONTROL_DB, FAST, MakeClient, url_list

ME = f"{socket.gethostname()}:{os.getpid()}"


@pytest.fixture
def observer() -> Iterator[Any]:
    """Build operator-side engines (like the CLI's) for a configuration name."""
    made: list[FailoverEngine] = []

    def make(servers: list[Any], name: str, **options: Any) -> FailoverEngine:
        engine = registry.build_engine(FailoverConfig.from_string(url_list(servers), name=name, **{**FAST, **options}), observer=True)
        assert engine.control is not None and engine.control.observer
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


@pytest.fixture
def request_cleanup() -> Iterator[list[FailoverRedis]]:
    clients: list[FailoverRedis] = []
    yield clients
    for client in clients:
        client.geofailover.close()
        client.close()


def plane(engine: FailoverEngine) -> ControlPlane:
    assert engine.control is not None
    return engine.control


def my_heartbeat(engine: FailoverEngine) -> Heartbeat | None:
    return next((hb for hb in plane(engine).fleet() if hb.key == ME), None)


def record(action: str, endpoint: str | None, *, at: float | None = None, until: float | None = None, **extra: Any) -> Override:
    return Override(
        id=uuid.uuid4().hex, action=action, endpoint=endpoint, until=until, reason=extra.pop("reason", "test"),  # type: ignore[arg-type]
        who="tester@ci", at=time.time() if at is None else at, **extra,
    )


def server_now(server: RedisServer) -> float:
    seconds, micros = server.client(db=CONTROL_DB).time()
    return seconds + micros / 1_000_000


def store(server: RedisServer, key: str, override: Override, stored_at: float | None = None) -> None:
    """Write a copy the way the store script does (``stored_at`` on the server's clock)."""
    data = json.loads(override.to_json())
    if stored_at is not None:
        data["stored_at"] = stored_at
    server.client(db=CONTROL_DB).set(key, json.dumps(data))


def fake_peer(server: RedisServer, engine: FailoverEngine, *, pid: int, active: str, override: str | None = None,
              hold: dict[str, Any] | None = None, offset: float = 0.0, at: float | None = None, ttl: float = 60.0) -> Heartbeat:
    """Another process of the fleet, as its heartbeat shows it."""
    now = time.time() if at is None else at
    hb = Heartbeat(
        host="peer-host", pid=pid, config=engine.name, app="worker", active=active, since=now - 5, pinned=None, hold=hold,
        version="0.1.0", last_failover=None, at=now, ttl=ttl, clock_offset=offset, override=override,
    )
    server.client(db=CONTROL_DB).hset(plane(engine).fleet_key, hb.key, hb.to_json())
    return hb


# -- records ------------------------------------------------------------------------------


def test_records_round_trip_and_tolerate_newer_writers() -> None:
    ov = record("pin", "b", until=time.time() + 60, force=True)
    assert Override.from_json(ov.to_json()) == ov
    newer = json.loads(ov.to_json()) | {"stored_at": 1.0, "added_by_a_later_version": [1, 2]}
    assert Override.from_json(json.dumps(newer)) == ov
    hb = Heartbeat("h", 1, "c", "web", "a", 1.0, None, None, "0.1.0", None, 2.0, 3.0, note="x")
    assert Heartbeat.from_json(hb.to_json().encode()) == hb
    assert hb.key == "h:1"


@pytest.mark.parametrize(
    "text",
    ["not json", "[1, 2]", '{"action": "failover"}', '{"id": "x", "action": "explode", "who": "w", "at": 1}',
     '{"id": "x", "action": "pin", "who": "w", "at": "yesterday"}', '{"id": "x", "action": "pin", "who": "w", "at": 1, "force": "yes"}'],
)
def test_malformed_records_are_rejected_with_a_reason(text: str) -> None:
    with pytest.raises(ValueError, match="malformed override record"):
        Override.from_json(text)


# -- heartbeats ------------------------------------------------------------------------------


def test_a_running_process_publishes_its_heartbeat(two, make_client: MakeClient) -> None:
    client = make_client(two, app_label="web")
    client.ping()
    hb = wait_until(lambda: my_heartbeat(client.geofailover), timeout=3, message="no heartbeat")
    assert (hb.config, hb.app, hb.active, hb.pid, hb.pinned) == (client.geofailover.name, "web", "a", os.getpid(), None)
    assert hb.ttl == 3.0 and hb.version
    # Heartbeats go to the active endpoint only: one write per interval.
    assert two[1].client(db=CONTROL_DB).hget(plane(client.geofailover).fleet_key, ME) is None


def test_control_plane_costs_one_write_per_interval_and_never_scans(two, make_client: MakeClient) -> None:
    client = make_client(two)
    client.ping()
    engine = client.geofailover
    wait_until(lambda: my_heartbeat(engine), timeout=3)
    for server in two:
        server.client().config_resetstat()
    start = engine.monitor.completed_rounds
    wait_until(lambda: engine.monitor.completed_rounds >= start + 20, timeout=10)
    rounds = engine.monitor.completed_rounds - start
    stats = [s.client().info("commandstats") for s in two]
    hsets = stats[0].get("cmdstat_hset", {}).get("calls", 0)
    assert 0 < hsets <= rounds + 2  # + the heartbeat of a round in flight
    assert "cmdstat_hset" not in stats[1]  # the standby endpoint is only read
    for s in stats:
        assert not {"cmdstat_scan", "cmdstat_keys", "cmdstat_hscan"} & set(s)
        assert s.get("cmdstat_get", {}).get("calls", 0) <= rounds + 2


def test_heartbeat_is_removed_when_the_engine_closes(two, make_client: MakeClient) -> None:
    client = make_client(two)
    client.ping()
    wait_until(lambda: my_heartbeat(client.geofailover), timeout=3)
    key = plane(client.geofailover).fleet_key
    client.geofailover.close()
    assert two[0].client(db=CONTROL_DB).hget(key, ME) is None


def test_expired_heartbeats_are_not_listed_and_are_pruned(two, make_client: MakeClient) -> None:
    client = make_client(two)
    client.ping()
    engine = client.geofailover
    wait_until(lambda: my_heartbeat(engine), timeout=3)
    gone = fake_peer(two[0], engine, pid=1, active="a", at=time.time() - 100, ttl=3)
    two[0].client(db=CONTROL_DB).hset(plane(engine).fleet_key, "garbage:2", b"{not json")
    assert [hb.key for hb in plane(engine).fleet()] == [ME]
    assert two[0].client(db=CONTROL_DB).hkeys(plane(engine).fleet_key) == [ME.encode()]
    assert gone.key not in json.dumps(fleet_status(engine))


def test_ages_are_measured_on_the_endpoints_clock_and_skew_is_flagged(two, make_client: MakeClient) -> None:
    client = make_client(two)
    client.ping()
    engine = client.geofailover
    wait_until(lambda: my_heartbeat(engine), timeout=3)
    # A peer whose clock runs 42 s ahead: its heartbeat looks 42 s in the future to us.
    fake_peer(two[0], engine, pid=7, active="a", at=time.time() + 42, offset=42.0, ttl=3)
    st = fleet_status(engine)
    peer = next(p for p in st["fleet"] if p["key"] == "peer-host:7")
    assert peer["age"] < 1.0 and peer["clock_skewed"] is True
    mine = next(p for p in st["fleet"] if p["key"] == ME)
    assert mine["clock_skewed"] is False


# -- overrides reach the fleet ------------------------------------------------------------------------


def test_failover_and_failback_reach_a_running_process(two, make_client: MakeClient, observer) -> None:
    client = make_client(two)
    client.ping()
    engine = client.geofailover
    wait_until(lambda: my_heartbeat(engine), timeout=3)
    operator = observer(two, engine.name)
    result = request(operator, "failover", "b", reason="maintenance", wait=5)
    assert result.ok and result.written_to == ["a", "b"] and result.failed == {}
    assert [(hb.key, hb.active) for hb in result.moved] == [(ME, "b")]
    assert engine.active == "b"
    assert engine.status()["hold"]["reason"] == "maintenance (fleet override by " + result.override.who + ")"
    assert client.set("k", 1) and two[1].client().get("k") == b"1"
    result = request(operator, "failback", wait=5)
    assert result.ok and [(hb.key, hb.active) for hb in result.moved] == [(ME, "a")]
    assert engine.active == "a" and engine.status()["hold"] is None


def test_the_operator_process_sends_no_heartbeat(two, observer) -> None:
    operator = observer(two, "opsonly")
    request(operator, "failover", "b", wait=0)
    operator.check_now()
    assert two[0].client(db=CONTROL_DB).hlen(plane(operator).fleet_key) == 0
    assert two[1].client(db=CONTROL_DB).hlen(plane(operator).fleet_key) == 0


def test_pin_with_a_duration_lapses_by_itself(two, make_client: MakeClient, observer) -> None:
    client = make_client(two, failback_grace_period=0.1)
    client.ping()
    engine = client.geofailover
    wait_until(lambda: my_heartbeat(engine), timeout=3)
    result = request(observer(two, engine.name), "pin", "b", duration=0.6, wait=5)
    assert result.ok and engine.active == "b" and engine.status()["hold"]["pinned"]
    wait_until(lambda: engine.active == "a" and engine.status()["hold"] is None, timeout=4, message="pin did not lapse")
    hb = wait_until(lambda: (h := my_heartbeat(engine)) and h.hold is None and h, timeout=3)
    assert hb.active == "a"


def test_timed_failover_lapses_by_itself(two, make_client: MakeClient, observer) -> None:
    client = make_client(two, failback_grace_period=0.1)
    client.ping()
    engine = client.geofailover
    wait_until(lambda: my_heartbeat(engine), timeout=3)
    result = request(observer(two, engine.name), "failover", "b", duration=0.6, wait=5)
    assert result.ok and engine.active == "b"
    wait_until(lambda: engine.active == "a" and engine.status()["hold"] is None, timeout=4, message="timed failover did not lapse")


def test_pin_expiry_is_measured_on_the_endpoints_clock(two, make_client: MakeClient) -> None:
    """A pin of 60 s written 59.5 s ago (by the server's clock) has 0.5 s left, whatever
    the writer's clock said: a process joining now lapses it with the rest of the fleet."""
    client = make_client(two, failback_grace_period=0.1)
    client.ping()
    engine = client.geofailover
    writer_clock = time.time() - 3600  # the operator's clock was an hour behind: irrelevant
    ov = record("pin", "b", at=writer_clock, until=writer_clock + 60)
    for server in two:
        store(server, plane(engine).override_key, ov, stored_at=server_now(server) - 59.5)
    wait_until(lambda: engine.status()["hold"] is not None, timeout=3, message="pin not applied")
    hold = engine.status()["hold"]
    assert hold["endpoint"] == "b" and hold["until"] - time.time() < 1.0
    wait_until(lambda: engine.active == "a" and engine.status()["hold"] is None, timeout=4, message="pin did not lapse")


def test_an_operator_whose_clock_is_behind_still_supersedes(two, make_client: MakeClient, observer) -> None:
    client = make_client(two)
    client.ping()
    engine = client.geofailover
    future = record("failover", "b", at=time.time() + 120)  # written by a clock two minutes ahead
    for server in two:
        store(server, plane(engine).override_key, future, stored_at=server_now(server))
    wait_until(lambda: engine.active == "b", timeout=3)
    result = request(observer(two, engine.name), "failback", wait=5)
    assert result.override.at > future.at
    assert result.ok and engine.active == "a"


def test_conflicting_copies_resolve_by_timestamp_and_converge(two, make_client: MakeClient) -> None:
    client = make_client(two)
    client.ping()
    engine = client.geofailover
    key = plane(engine).override_key
    older = record("failover", "a", at=time.time() - 10, reason="older")
    newer = record("failover", "b", at=time.time() - 5, reason="newer")
    store(two[0], key, newer, stored_at=server_now(two[0]) - 5)
    store(two[1], key, older, stored_at=server_now(two[1]) - 10)
    wait_until(lambda: engine.active == "b", timeout=3, message="the newer copy did not win")
    assert "newer" in engine.status()["hold"]["reason"]
    # The endpoint with the stale copy is repaired, keeping the record's age.
    copy = wait_until(lambda: Override.from_json(two[1].client(db=CONTROL_DB).get(key) or b"{}") if b"newer" in (two[1].client(db=CONTROL_DB).get(key) or b"") else None,
                      timeout=3, message="stale copy not repaired")
    assert copy == newer
    stored_at = json.loads(two[1].client(db=CONTROL_DB).get(key))["stored_at"]
    assert server_now(two[1]) - stored_at >= 5


def test_a_corrupt_copy_is_ignored_logged_once_and_repaired(two, make_client: MakeClient, caplog) -> None:
    client = make_client(two)
    client.ping()
    engine = client.geofailover
    key = plane(engine).override_key
    two[1].client(db=CONTROL_DB).set(key, b"\x00garbage")
    caplog.set_level(logging.WARNING, "geofailover")
    ov = record("failover", "b")
    store(two[0], key, ov, stored_at=server_now(two[0]))
    wait_until(lambda: engine.active == "b", timeout=3)
    wait_until(lambda: two[1].client(db=CONTROL_DB).get(key) not in (None, b"\x00garbage"), timeout=3, message="corrupt copy not repaired")
    assert Override.from_json(two[1].client(db=CONTROL_DB).get(key)) == ov
    assert sum("ignoring the override record on b" in r.getMessage() for r in caplog.records) == 1


def test_an_endpoint_that_comes_back_empty_gets_the_record_again(two, make_client: MakeClient, observer) -> None:
    client = make_client(two)
    client.ping()
    engine = client.geofailover
    wait_until(lambda: my_heartbeat(engine), timeout=3)
    result = request(observer(two, engine.name), "failover", "b", wait=5)
    assert result.ok
    two[0].restart()  # region a returns empty
    key = plane(engine).override_key
    wait_until(lambda: two[0].client(db=CONTROL_DB).get(key) is not None, timeout=5, message="record not copied back to a")
    assert Override.from_json(two[0].client(db=CONTROL_DB).get(key)).id == result.override.id


# -- failure paths ------------------------------------------------------------------------------


def test_unknown_or_unhealthy_target_is_refused_before_anything_is_written(two, observer) -> None:
    operator = observer(two, "refusing")
    with pytest.raises(UnknownEndpointError, match="'nope'"):
        request(operator, "failover", "nope")
    two[1].kill()
    with pytest.raises(UnhealthyEndpointError, match="pass force=True"):
        request(operator, "failover", "b")
    assert two[0].client(db=CONTROL_DB).get(plane(operator).override_key) is None
    with pytest.raises(ValueError, match="duration"):
        request(operator, "failback", duration=5)
    with pytest.raises(ValueError, match="positive"):
        request(operator, "pin", "a", duration=-1)
    with pytest.raises(ValueError, match="unknown action"):
        request(operator, "explode")  # type: ignore[arg-type]


def test_a_down_endpoint_is_reported_and_gets_the_record_when_back(two, make_client: MakeClient, observer) -> None:
    client = make_client(two)
    client.ping()
    engine = client.geofailover
    wait_until(lambda: my_heartbeat(engine), timeout=3)
    two[1].kill()
    result = request(observer(two, engine.name), "pin", "a", wait=5)
    assert result.written_to == ["a"] and list(result.failed) == ["b"]
    assert "ConnectionError" in result.failed["b"]
    assert result.ok  # the fleet got it through a
    two[1].restart()
    key = plane(engine).override_key
    wait_until(lambda: two[1].client(db=CONTROL_DB).get(key) is not None, timeout=5, message="record not copied to b")


def test_nothing_written_when_no_endpoint_is_reachable(two, observer) -> None:
    operator = observer(two, "isolated")
    for server in two:
        server.kill()
    result = request(operator, "unpin", wait=1)
    assert isinstance(result, ActionResult)
    assert (result.ok, result.written_to, sorted(result.failed)) == (False, [], ["a", "b"])


def test_a_process_that_cannot_reach_the_target_is_a_straggler_with_a_reason(two, make_client: MakeClient, observer, fault_proxy_factory) -> None:
    proxy = fault_proxy_factory(two[1])
    proxy.refuse()  # this process's path to b is broken; the operator's is fine
    client = make_client([two[0], proxy])
    client.ping()
    engine = client.geofailover
    wait_until(lambda: engine.status()["endpoints"][1]["health"] == "unhealthy", timeout=3)
    wait_until(lambda: my_heartbeat(engine), timeout=3)
    result = request(observer(two, engine.name), "failover", "b", wait=1.5)
    assert not result.ok and result.moved == []
    [straggler] = result.stragglers
    assert straggler.key == ME and straggler.active == "a"
    assert straggler.note is not None and straggler.note.startswith("not followed: b is unhealthy from here")
    assert engine.active == "a"


def test_a_pin_on_a_target_that_is_down_waits_and_applies_when_it_recovers(two, make_client: MakeClient) -> None:
    client = make_client(two, failback_grace_period=0.1)
    client.ping()
    engine = client.geofailover
    two[1].kill()
    wait_until(lambda: engine.status()["endpoints"][1]["health"] == "unhealthy", timeout=3)
    store(two[0], plane(engine).override_key, record("pin", "b"), stored_at=server_now(two[0]))
    hb = wait_until(lambda: (h := my_heartbeat(engine)) and h.note and h, timeout=3, message="no pending note")
    assert hb.note.startswith("pin waiting: b is unhealthy") and hb.active == "a"
    two[1].restart()
    wait_until(lambda: engine.active == "b" and engine.status()["hold"]["pinned"], timeout=5, message="pending pin not applied")


def test_a_process_with_different_endpoint_names_says_why_it_did_not_follow(two, make_client: MakeClient) -> None:
    client = make_client(two)
    client.ping()
    engine = client.geofailover
    store(two[0], plane(engine).override_key, record("failover", "eu-central"), stored_at=server_now(two[0]))
    hb = wait_until(lambda: (h := my_heartbeat(engine)) and h.note and h, timeout=3)
    assert "no endpoint named 'eu-central'" in hb.note and engine.active == "a"


@pytest.mark.parametrize("peer_holds", [False, True])
def test_a_late_joiner_follows_a_standing_failover_only_if_the_fleet_still_holds_it(
    two, make_client: MakeClient, peer_holds: bool
) -> None:
    name = f"late{int(peer_holds)}"
    ov = record("failover", "b", at=time.time() - 600)
    key = f"geofailover:{name}:override"
    for server in two:
        store(server, key, ov, stored_at=server_now(server) - 600)
    # A running peer: either still on the operator's endpoint, or back on a after b failed.
    probe = registry.build_engine(FailoverConfig.from_string(url_list(two), name=name, control_plane=True))
    try:
        hold = {"endpoint": "b", "pinned": False, "until": None, "reason": "x", "since": 0.0} if peer_holds else None
        fake_peer(two[0], probe, pid=99, active="b" if peer_holds else "a", override=ov.id, hold=hold)
    finally:
        probe.close()
    client = make_client(two, name=name)
    client.ping()
    engine = client.geofailover
    hb = wait_until(lambda: (h := my_heartbeat(engine)) and h.override == ov.id and h, timeout=3)
    if peer_holds:
        assert engine.active == "b" and hb.note is None
    else:
        assert engine.active == "a" and "the fleet has dropped this override" in (hb.note or "")


def test_control_plane_off_writes_nothing_and_says_how_to_enable_it(two, make_client: MakeClient) -> None:
    client = make_client(two, control_plane=False)
    client.ping()
    engine = client.geofailover
    assert engine.control is None
    rounds = engine.monitor.completed_rounds
    wait_until(lambda: engine.monitor.completed_rounds >= rounds + 5, timeout=3)
    assert two[0].client(db=CONTROL_DB).keys("geofailover:*") == [] and two[1].client(db=CONTROL_DB).keys("geofailover:*") == []
    with pytest.raises(ConfigurationError, match=r"'control_plane'.*Fix: set control_plane=True"):
        request(engine, "failover", "b")
    st = fleet_status(engine)
    assert st["control_plane"]["enabled"] is False and st["fleet"] == []


def test_keys_outside_the_acl_are_reported_once_and_traffic_is_unaffected(redis_server_factory, request_cleanup, caplog) -> None:
    servers = redis_server_factory(2)
    for server in servers:
        server.client().acl_setuser("app", enabled=True, passwords=["+app-secret-pw"], keys=["app:*"], commands=["+@all"])
    caplog.set_level(logging.WARNING, "geofailover")
    urls = ";".join(f"redis://app:app-secret-pw@{s.host}:{s.port}/0?name={n}" for s, n in zip(servers, "ab", strict=True))
    client = FailoverRedis.from_url(urls, name="acl", **FAST)
    request_cleanup.append(client)
    client.geofailover.check_now()
    assert client.set("app:k", 1)
    rounds = client.geofailover.monitor.completed_rounds
    wait_until(lambda: client.geofailover.monitor.completed_rounds >= rounds + 5, timeout=3)
    refused = [r.getMessage() for r in caplog.records if "control-plane command refused" in r.getMessage()]
    assert len(refused) == 2  # once per endpoint, not once per interval
    assert "check the ACL" in refused[0] and "app-secret-pw" not in caplog.text


def test_records_status_and_logs_never_carry_passwords(redis_server_factory, make_client: MakeClient, observer, caplog) -> None:
    servers = redis_server_factory(2, password="hunter2-secret")
    caplog.set_level(logging.DEBUG, "geofailover")
    client = make_client(servers)
    client.ping()
    engine = client.geofailover
    wait_until(lambda: my_heartbeat(engine), timeout=3)
    servers[1].kill()
    request(observer(servers, engine.name), "failover", "a", force=True, wait=2)
    raw = [servers[0].client(db=CONTROL_DB).get(plane(engine).override_key), *servers[0].client(db=CONTROL_DB).hvals(plane(engine).fleet_key)]
    text = json.dumps(fleet_status(engine), default=str) + repr(raw) + caplog.text
    assert "hunter2-secret" not in text
