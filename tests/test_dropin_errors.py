"""Errors that name the real cause: a wrong password or an ACL is not an outage,
and callers that catch timeouts see a timeout when every region times out."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
import redis

from geofailover_core import AllEndpointsTimedOutError, NoHealthyEndpointError, cli
from geofailover_core.testing import RedisServer, wait_until

from .conftest import FAST, MakeClient


def _urls(servers: list[RedisServer], password: str | None = None) -> str:
    auth = f":{password}@" if password else ""
    return ";".join(
        f"redis://{auth}{s.host}:{s.port}/0?name={n}&weight={w}" for s, n, w in zip(servers, "ab", (2, 1), strict=False)
    )


@pytest.fixture
def guarded(redis_server_factory: Callable[..., list[RedisServer]]) -> list[RedisServer]:
    return redis_server_factory(2, password="the-right-one")


def test_a_wrong_password_everywhere_raises_the_authentication_error_not_an_outage(guarded, clients: list[Any]) -> None:
    from geofailover_core import FailoverRedis

    client = FailoverRedis.from_url(_urls(guarded, "k9-wrong"), name="wrongpw", **FAST)
    clients.append(client)
    with pytest.raises(redis.exceptions.AuthenticationError):
        client.get("k")  # the first command gets the real error
    wait_until(lambda: client.geofailover.active is None, timeout=3)
    with pytest.raises(NoHealthyEndpointError) as caught:
        client.get("k")
    text = str(caught.value)
    assert "a: rejects our credentials" in text and "b: rejects our credentials" in text
    assert "configuration problem, not an outage" in text and "k9-wrong" not in text
    assert isinstance(caught.value.__cause__, redis.exceptions.AuthenticationError)
    status = client.geofailover.status()
    assert [e["rejection"] for e in status["endpoints"]] == ["rejects our credentials"] * 2
    assert "k9-wrong" not in repr(status)


def test_check_says_the_endpoint_rejects_our_credentials(guarded) -> None:
    out = io.StringIO()
    code = cli.main(["check", "--url", _urls(guarded, "k9-wrong"), "--color", "never"], stdout=out)
    assert code == 2
    assert "rejects our credentials" in out.getvalue() and "k9-wrong" not in out.getvalue()


def test_an_acl_that_denies_our_probe_is_named(two, make_client: MakeClient) -> None:
    two[0].client().acl_setuser("app", enabled=True, passwords=["+apppw"], keys=["*"], commands=["+@all", "-ping"])
    two[1].client().acl_setuser("app", enabled=True, passwords=["+apppw"], keys=["*"], commands=["+@all"])
    urls = ";".join(f"redis://app:apppw@{s.host}:{s.port}/0?name={n}&weight={w}" for s, n, w in zip(two, "ab", (2, 1), strict=True))
    from geofailover_core import FailoverRedis

    client = FailoverRedis.from_url(urls, name="acl", **FAST)
    try:
        client.set("k", "v")
        wait_until(lambda: client.geofailover.active == "b", timeout=3)
        a = client.geofailover.status()["endpoints"][0]
        assert a["rejection"] == "denies our user this command (ACL)"
        assert a["health_detail"].startswith("denies our user this command (ACL)")
        assert "apppw" not in repr(client.geofailover.status())
    finally:
        client.geofailover.close()


def test_every_endpoint_timing_out_is_also_a_timeout_error(two, make_client: MakeClient) -> None:
    client = make_client(two)
    client.ping()
    for server in two:
        server.freeze()
    try:
        wait_until(lambda: client.geofailover.active is None, timeout=5)
        with pytest.raises(redis.exceptions.TimeoutError) as caught:
            client.get("k")
        assert isinstance(caught.value, AllEndpointsTimedOutError)
        assert isinstance(caught.value, redis.exceptions.ConnectionError)  # what django-redis and kombu catch
        assert isinstance(caught.value.__cause__, redis.exceptions.TimeoutError)
    finally:
        for server in two:
            server.thaw()


def test_a_refused_region_is_not_a_timeout(two, make_client: MakeClient) -> None:
    client = make_client(two)
    client.ping()
    for server in two:
        server.kill()
    wait_until(lambda: client.geofailover.active is None, timeout=5)
    with pytest.raises(NoHealthyEndpointError) as caught:
        client.get("k")
    assert not isinstance(caught.value, redis.exceptions.TimeoutError)
    assert isinstance(caught.value.__cause__, redis.exceptions.ConnectionError)
