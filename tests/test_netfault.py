"""Kernel-level network faults (iptables in a private network namespace).

Skipped unless the run entered a private netns (root with GEOFAILOVER_NETNS=1,
which ``./dev.sh test`` sets). These are the faults a proxy cannot imitate:
a dropped SYN is a *connect* timeout, not a read timeout.
"""

from __future__ import annotations

import time

import pytest

from geofailover_core.testing import wait_until

from .conftest import MakeClient
from .test_failover import mark

pytestmark = pytest.mark.netfault


def test_blackholed_region_costs_about_one_socket_timeout_not_minutes(two, iptables_faults, make_client: MakeClient) -> None:
    """Regression guard for the redis-py retry trap (152 s on a blackholed pooled socket)."""
    mark(two)
    client = make_client(two, socket_timeout=0.3, socket_connect_timeout=0.3)
    assert client.get("whoami") == b"0"
    iptables_faults.blackhole(two[0].host, two[0].port)
    started = time.monotonic()
    assert client.get("whoami") == b"1"
    assert time.monotonic() - started < 3.0
    assert client.geofailover.active == "b"
    iptables_faults.heal()
    wait_until(lambda: client.geofailover.active == "a", timeout=5, message="no failback after heal")


def test_new_connections_to_a_blackholed_region_time_out_on_connect(two, iptables_faults, make_client: MakeClient) -> None:
    mark(two)
    iptables_faults.blackhole(two[0].host, two[0].port)
    client = make_client(two, socket_connect_timeout=0.3)
    started = time.monotonic()
    assert client.get("whoami") == b"1"  # first ever command: connect times out, re-sent on b
    assert time.monotonic() - started < 3.0
    status = client.geofailover.status()["endpoints"][0]
    assert status["health"] == "unhealthy" or "connect" in (status["last_error"] or "").lower()


def test_kernel_reset_fails_over(two, iptables_faults, make_client: MakeClient) -> None:
    mark(two)
    client = make_client(two)
    assert client.get("whoami") == b"0"
    iptables_faults.reset(two[0].host, two[0].port)
    assert client.get("whoami") == b"1"
    assert client.geofailover.active == "b"
