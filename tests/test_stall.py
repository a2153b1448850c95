"""A frozen region costs a caller about one probe timeout, not a socket timeout.

The socket timeout here is 30 s and the monitor's own interval 5 s, so only
the stall watch (a command waiting for its reply asks for a probe at once)
can explain a read that is answered by the other region within the deadline.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from geofailover_core import ReplyLostError
from geofailover_core.testing import FaultProxy, wait_until

from .conftest import MakeClient
from .test_failover import mark

SLOW_TIMEOUTS = {"socket_timeout": 30.0, "probe_interval": 5.0, "health_check_timeout": 0.3}


def _in_thread(call: Any) -> list[Any]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(call())
        except Exception as exc:
            out.append(exc)

    threading.Thread(target=run, daemon=True).start()
    return out


def test_a_read_in_flight_on_a_frozen_region_is_resent_on_the_next(two, make_client: MakeClient) -> None:
    mark(two)
    client = make_client(two, **SLOW_TIMEOUTS)
    assert client.get("whoami") == b"0"
    wait_until(lambda: client.geofailover.monitor.completed_rounds >= 1, timeout=3)  # the next regular round is 5 s away
    two[0].freeze()
    try:
        out = _in_thread(lambda: client.get("whoami"))
        wait_until(lambda: out, timeout=5, message="the read waited for the socket timeout")
        assert out == [b"1"]
        assert client.geofailover.active == "b" and client.geofailover.status()["stall_probes"] >= 1
    finally:
        two[0].thaw()


def test_a_write_in_flight_on_a_frozen_region_is_raised_not_resent(two, make_client: MakeClient) -> None:
    client = make_client(two, **SLOW_TIMEOUTS)
    client.ping()
    wait_until(lambda: client.geofailover.monitor.completed_rounds >= 1, timeout=3)  # the next regular round is 5 s away
    two[0].freeze()
    try:
        out = _in_thread(lambda: client.incr("counter"))
        wait_until(lambda: out, timeout=5, message="the write waited for the socket timeout")
        assert isinstance(out[0], ReplyLostError)  # it may have been applied there: never applied twice
        assert two[1].client().get("counter") is None
    finally:
        two[0].thaw()


def test_a_slow_but_healthy_region_is_probed_not_failed_over(two, make_client: MakeClient) -> None:
    proxy = FaultProxy(two[0])
    try:
        from geofailover_core import FailoverRedis

        client = FailoverRedis.from_url(f"{proxy.url}?name=a&weight=2;{two[1].url}?name=b", name="slowlink", **SLOW_TIMEOUTS)
        try:
            client.set("k", "v")
            proxy.delay(60)  # 120 ms round trip: every command outlives the stall threshold
            for _ in range(5):
                assert client.get("k") == b"v"
            assert client.geofailover.active == "a"
            assert client.geofailover.status()["stall_probes"] >= 1
        finally:
            client.geofailover.close()
    finally:
        proxy.close()


@pytest.mark.parametrize("blocking", ["blpop", "pubsub"])
def test_waits_that_are_the_callers_own_are_not_stalls(two, make_client: MakeClient, blocking: str) -> None:
    client = make_client(two, **SLOW_TIMEOUTS)
    client.ping()
    if blocking == "blpop":
        out = _in_thread(lambda: client.blpop(["nothing"], timeout=1))
        wait_until(lambda: out, timeout=5)
        assert out == [None]
    else:
        ps = client.pubsub()
        ps.subscribe("news")
        assert ps.get_message(timeout=1) is not None  # the subscribe confirmation
        assert ps.get_message(timeout=1) is None
        ps.close()
    assert client.geofailover.status()["stall_probes"] == 0
