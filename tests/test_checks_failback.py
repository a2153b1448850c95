"""Lag-gated failback with real Redis servers and the fake Redis Software API.

The lag-aware REST check gates only the *return* of traffic: a lagging member
is not failed back to (automatically, by a pin, or manually without force)
until it catches up, it never evicts the member that serves, a failover away
from a dead member is never blocked by it, and an API that cannot answer
never causes a failover.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from geofailover_core import FailoverRedis, UnhealthyEndpointError
from geofailover_core.testing import FakeRestServer, RedisServer, wait_until

from .conftest import FAST

REST = "geofailover_core.checks.RestAvailabilityHealthCheck"
ROUND_BUDGET = 5.0  # generous deadline for anything that takes a few monitor rounds


@pytest.fixture
def api() -> Iterator[FakeRestServer]:
    with FakeRestServer(password="S3cret-REST-pw") as server:
        yield server


def build(
    clients: list[FailoverRedis],
    servers: Sequence[RedisServer],
    api: FakeRestServer,
    *,
    check: dict[str, Any] | None = None,
    weights: Sequence[float] | None = None,
    **options: Any,
) -> FailoverRedis:
    """A client configured the way Django/Flask settings would: plain dicts,
    one REST check per endpoint (each endpoint is its own database)."""
    names = "abc"
    weights = weights or [len(servers) - i for i in range(len(servers))]
    endpoints = []
    for name, server, weight in zip(names, servers, weights, strict=False):
        bdb = api.add_bdb_for(server)
        endpoints.append(
            {"name": name, "url": server.url, "weight": weight,
             "health_checks": [{"class": REST, **api.check_options(bdb_uid=bdb.uid), **(check or {})}]}
        )  # fmt: skip
    config = {"name": f"rest-{len(clients)}-{id(api)}", "endpoints": endpoints, **FAST, **options}
    client = FailoverRedis(config=config)
    clients.append(client)
    return client


def endpoint(client: FailoverRedis, name: str) -> dict[str, Any]:
    return next(e for e in client.geofailover.status()["endpoints"] if e["name"] == name)


def gate(client: FailoverRedis, name: str) -> dict[str, Any]:
    state = endpoint(client, name)["failback_gate"]
    assert state is not None
    return state  # type: ignore[no-any-return]


def rest_outcome(client: FailoverRedis, name: str) -> dict[str, Any]:
    """The REST check's outcome of ``name``'s last round ({} before the first)."""
    checks = endpoint(client, name)["checks"]
    return next((c for c in checks if c["name"].startswith("rest")), {})


def rounds_pass(client: FailoverRedis, n: int) -> None:
    """Wait until ``n`` more monitor rounds have completed."""
    monitor = client.geofailover.monitor
    target = monitor.completed_rounds + n
    wait_until(lambda: monitor.completed_rounds >= target, timeout=ROUND_BUDGET, message=f"{n} more monitor rounds")


# ``failback_grace_period`` is 0.5 s and the interval 0.1 s: 12 rounds are well past the grace.
PAST_GRACE = 12


def test_a_lagging_member_is_not_failed_back_to_until_it_catches_up(two, api, clients, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="geofailover")
    a, _b = two
    client = build(clients, two, api)
    events: list[tuple[str, str | None, str | None, str | None]] = []
    client.geofailover.on("*", lambda e: events.append((e.kind, e.from_endpoint, e.to_endpoint, e.reason)))
    client.set("k", "v")
    wait_until(lambda: gate(client, "a")["open"], timeout=ROUND_BUDGET, message="a's gate opens")
    assert [c["name"] for c in endpoint(client, "a")["checks"]] == ["ping", "rest-lag"]  # PING added: a gate is no health check

    api.bdb(1).lag_ms = 500  # a falls behind while it serves: the gate closes, a keeps serving
    wait_until(lambda: not gate(client, "a")["open"], timeout=ROUND_BUDGET, message="a's gate closes")
    rounds_pass(client, 3)
    assert client.geofailover.active == "a" and client.get("k") == b"v"

    a.kill()
    wait_until(lambda: client.geofailover.active == "b", timeout=ROUND_BUDGET, message="failover to b")
    a.restart()
    wait_until(lambda: endpoint(client, "a")["health"] == "healthy", timeout=ROUND_BUDGET, message="a answers again")
    rounds_pass(client, PAST_GRACE)
    assert client.geofailover.active == "b", "a is healthy past the grace period but still lagging"
    a_gate = gate(client, "a")
    assert a_gate["status"] == "unhealthy" and "lagging more than 100 ms" in a_gate["detail"]

    api.bdb(1).lag_ms = 20  # caught up
    wait_until(lambda: client.geofailover.active == "a", timeout=ROUND_BUDGET, message="failback once a caught up")
    assert events[-1][:3] == ("failback", "b", "a") and events[-1][3] == "failback"
    messages = [r.getMessage() for r in caplog.records]
    assert any("failback gate of a closed" in m for m in messages) and any("failback gate of a open" in m for m in messages)


def test_manual_moves_and_pins_respect_the_gate(two, api, clients) -> None:  # type: ignore[no-untyped-def]
    a, _b = two
    client = build(clients, two, api)
    geo = client.geofailover
    client.ping()
    wait_until(lambda: gate(client, "a")["open"] and gate(client, "b")["open"], timeout=ROUND_BUDGET, message="gates open")
    geo.pin("a")
    api.bdb(1).lag_ms = 500
    wait_until(lambda: not gate(client, "a")["open"], timeout=ROUND_BUDGET, message="a's gate closes")
    a.kill()
    wait_until(lambda: geo.active == "b", timeout=ROUND_BUDGET, message="failover despite the pin")
    a.restart()
    wait_until(lambda: endpoint(client, "a")["health"] == "healthy", timeout=ROUND_BUDGET, message="a answers again")
    rounds_pass(client, PAST_GRACE)
    assert geo.active == "b", "the pin's return waits for the gate too"
    with pytest.raises(UnhealthyEndpointError, match=r"a is not ready for traffic to return .*lagging.*force=True"):
        geo.failover_to("a")
    geo.failback()  # honours the gate: nowhere better to go
    assert geo.active == "b"
    geo.pin("b")
    api.bdb(1).lag_ms = 0
    wait_until(lambda: gate(client, "a")["open"], timeout=ROUND_BUDGET, message="a's gate opens")
    geo.pin("a")
    assert geo.active == "a"
    api.bdb(2).lag_ms = 500
    wait_until(lambda: not gate(client, "b")["open"], timeout=ROUND_BUDGET, message="b's gate closes")
    geo.failover_to("b", force=True)  # an operator may insist
    assert geo.active == "b"


def test_failover_prefers_a_caught_up_member_but_is_never_blocked(three, api, clients) -> None:  # type: ignore[no-untyped-def]
    a, b, _c = three
    client = build(clients, three, api)
    geo = client.geofailover
    client.ping()
    api.bdb(2).lag_ms = 500  # b lags
    wait_until(lambda: not gate(client, "b")["open"] and gate(client, "c")["open"], timeout=ROUND_BUDGET, message="gates settle")
    a.kill()
    wait_until(lambda: geo.active is not None and geo.active != "a", timeout=ROUND_BUDGET, message="failover")
    assert geo.active == "c", "b ranks higher but lags: the caught-up c is preferred"
    api.bdb(2).lag_ms = 0
    wait_until(lambda: geo.active == "b", timeout=ROUND_BUDGET, message="failback to b once it caught up")
    api.bdb(3).lag_ms = 500  # now c lags too, and b dies: c is the only member left
    wait_until(lambda: not gate(client, "c")["open"], timeout=ROUND_BUDGET, message="c's gate closes")
    b.kill()
    wait_until(lambda: geo.active == "c", timeout=ROUND_BUDGET, message="a lag gate never blocks a failover from a dead member")


FAULTS: list[tuple[str, Callable[[FakeRestServer], None], str]] = [
    ("HTTP 500", lambda api: api.respond(500), "HTTP 500"),
    ("reset", lambda api: api.reset(), "reset"),
    ("hang", lambda api: api.hang(), "no answer from"),
    ("401", lambda api: api.add_user(api.username, "rotated-elsewhere"), "401"),
    ("malformed 503", lambda api: api.respond(503, "{"), "HTTP 503 without a database verdict"),
]


@pytest.mark.parametrize("lag_aware", [False, True], ids=["availability-as-health", "lag-as-gate"])
def test_an_inconclusive_rest_answer_never_causes_a_failover(two, api, clients, lag_aware: bool) -> None:  # type: ignore[no-untyped-def]
    client = build(clients, two, api, check={"lag_aware": lag_aware})
    geo = client.geofailover
    name = "rest-lag" if lag_aware else "rest-availability"
    switches: list[str] = []
    geo.on("failover", lambda e: switches.append(e.to_endpoint))
    client.ping()
    wait_until(lambda: rest_outcome(client, "a").get("status") == "healthy", timeout=ROUND_BUDGET, message="REST answers")
    for label, fault, words in FAULTS:
        fault(api)
        wait_until(
            lambda words=words: words in rest_outcome(client, "a").get("detail", ""),  # type: ignore[misc]
            timeout=ROUND_BUDGET, message=f"{label} seen by the check",
        )
        rounds_pass(client, 3)
        a = endpoint(client, "a")
        outcome = rest_outcome(client, "a")
        assert (outcome["name"], outcome["status"]) == (name, "inconclusive")
        assert geo.active == "a" and a["health"] == "healthy", f"{label} must not evict a"
        api.heal()
        api.add_user(api.username, api.password)
    assert switches == []
    if not lag_aware:  # the plain check in health mode does evict on a real verdict
        api.bdb(1).available = False
        wait_until(lambda: geo.active == "b", timeout=ROUND_BUDGET, message="a 503 bdb_unavailable is conclusive")
        assert "bdb_unavailable" in endpoint(client, "a")["health_detail"]


def test_rest_calls_per_interval_and_discovery_from_the_request_log(two, api, clients) -> None:  # type: ignore[no-untyped-def]
    a, b = two
    endpoints = []
    for name, server, weight in (("a", a, 2), ("b", b, 1)):
        api.add_bdb_for(server)
        endpoints.append({"name": name, "url": server.url, "weight": weight, "health_checks": [{"class": REST, **api.check_options()}]})
    client = FailoverRedis(config={"name": "rest-count", "endpoints": endpoints, **FAST})
    clients.append(client)
    geo = client.geofailover
    client.ping()
    rounds_pass(client, 2)
    api.clear_log()
    start = geo.monitor.completed_rounds
    for _ in range(20):  # confirmation rounds on top of the regular ones
        geo.check_now()
    rounds_pass(client, 10)
    rounds = geo.monitor.completed_rounds - start
    per_uid = {uid: api.count("availability", uid=uid) for uid in (1, 2)}
    regular = 10 + 2  # the rounds a 0.1 s interval allows in that time, with slack
    assert all(n <= regular for n in per_uid.values()), (per_uid, rounds)
    assert rounds > max(per_uid.values()), "extra rounds reused the last answer"
    assert api.count("list_bdbs") == 0 and api.count("get_bdb") == 0, "uid and crdt flag stay cached"
    print(f"\nREST availability requests per member over {rounds} rounds: {per_uid}")


def test_discovery_once_per_member_and_never_unfiltered(two, api, clients) -> None:  # type: ignore[no-untyped-def]
    a, b = two
    endpoints = []
    for name, server, weight in (("a", a, 2), ("b", b, 1)):
        api.add_bdb_for(server)
        endpoints.append({"name": name, "url": server.url, "weight": weight, "health_checks": [{"class": REST, **api.check_options()}]})
    client = FailoverRedis(config={"name": "rest-discovery", "endpoints": endpoints, **FAST})
    clients.append(client)
    client.ping()
    rounds_pass(client, 10)
    assert api.count("list_bdbs") == 2  # one discovery per member
    assert {r.fields for r in api.requests("list_bdbs")} == {("uid", "endpoints")}
    assert {r.fields for r in api.requests("get_bdb")} == {("uid", "crdt")}
    assert {r.uid for r in api.requests("availability")} == {1, 2}


def test_rest_credentials_never_appear_in_logs_status_or_events(two, api, clients, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    token = base64.b64encode(f"{api.username}:{api.password}".encode()).decode()
    client = build(clients, two, api, check={"lag_aware": False})
    geo = client.geofailover
    texts: list[str] = []
    geo.on("*", lambda e: texts.append(json.dumps(e.as_dict())))
    client.ping()
    api.respond(401)
    rounds_pass(client, 3)
    api.heal()
    api.bdb(1).available = False
    wait_until(lambda: geo.active == "b", timeout=ROUND_BUDGET, message="failover on 503")
    geo.events.flush()
    texts += [json.dumps(geo.status()), repr(geo), repr(geo.config), caplog.text]
    texts += [repr(c) for ep in geo._states for c in ep.checks]
    for text in texts:
        assert api.password not in text and token not in text
