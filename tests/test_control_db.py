"""The control plane's keys live out of the application's keyspace (control_db)."""

from __future__ import annotations

from collections.abc import Callable

from geofailover_core import FailoverRedis
from geofailover_core.control import fleet_status, request
from geofailover_core.testing import RedisServer, wait_until

from .conftest import CONTROL_DB, FAST, MakeClient, url_list


def _heartbeats(server: RedisServer, name: str, db: int) -> int:
    return int(server.client(db=db).hlen(f"geofailover:{name}:fleet"))


def test_the_applications_keyspace_never_sees_the_control_keys(two, make_client: MakeClient) -> None:
    client = make_client(two, name="keyspace")
    client.set("app:key", 1)
    wait_until(lambda: _heartbeats(two[0], "keyspace", CONTROL_DB) == 1, timeout=3)
    app = two[0].client()
    assert app.keys("*") == [b"app:key"] and app.dbsize() == 1 and app.randomkey() == b"app:key"
    assert fleet_status(client.geofailover)["control_plane"]["databases"] == {"a": CONTROL_DB, "b": CONTROL_DB}


def test_flushdb_of_the_application_database_keeps_an_operators_override(two, make_client: MakeClient) -> None:
    client = make_client(two, name="flushed")
    client.ping()
    wait_until(lambda: _heartbeats(two[0], "flushed", CONTROL_DB) == 1, timeout=3)
    operator = FailoverRedis.from_url(url_list(two), name="flushed", **FAST)  # another client of the engine stands in for the CLI
    result = request(operator.geofailover, "failover", "b", reason="maintenance", wait=5)
    assert result.ok and client.geofailover.active == "b"
    for server in two:
        server.client().flushdb()  # django-redis cache.clear()
    for server in two:
        assert server.client(db=CONTROL_DB).get("geofailover:flushed:override") is not None
    status = fleet_status(client.geofailover)
    assert status["override"] is not None and status["override"]["in_force"]
    operator.close()


def test_an_application_on_database_15_gets_14(redis_server_factory: Callable[..., list[RedisServer]], clients: list[FailoverRedis]) -> None:
    servers = redis_server_factory(2)
    urls = ";".join(f"redis://{s.host}:{s.port}/15?name={n}&weight={w}" for s, n, w in zip(servers, "ab", (2, 1), strict=True))
    client = FailoverRedis.from_url(urls, name="db15", **FAST)
    clients.append(client)
    client.set("k", 1)
    wait_until(lambda: _heartbeats(servers[0], "db15", 14) == 1, timeout=3)
    assert servers[0].client(db=15).keys("*") == [b"k"]


def test_a_configured_control_db(two, make_client: MakeClient) -> None:
    client = make_client(two, name="ctl3", control_db=3)
    client.ping()
    wait_until(lambda: _heartbeats(two[0], "ctl3", 3) == 1, timeout=3)
    assert two[0].client(db=CONTROL_DB).keys("*") == []


def test_a_server_with_one_database_shares_the_applications(redis_server_factory: Callable[..., list[RedisServer]], clients: list[FailoverRedis]) -> None:
    """Redis Software and Redis Cloud have one database: the keys go there, under
    the prefix, and FLUSHDB there removes them; heartbeats come back within an interval."""
    servers = redis_server_factory(2, extra_args=["--databases", "1"])
    client = FailoverRedis.from_url(url_list(servers), name="onedb", **FAST)
    clients.append(client)
    client.set("k", 1)
    wait_until(lambda: _heartbeats(servers[0], "onedb", 0) == 1, timeout=3)
    assert fleet_status(client.geofailover)["control_plane"]["databases"] == {"a": 0, "b": 0}
    servers[0].client().flushdb()
    wait_until(lambda: _heartbeats(servers[0], "onedb", 0) == 1, timeout=3, message="the heartbeat did not come back after FLUSHDB")
