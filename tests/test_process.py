"""One engine per name per process; fork safety; no leaks."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from geofailover_core import ConfigurationError, FailoverRedis, get_engine, registry
from geofailover_core.testing import wait_until

from .conftest import FAST, MakeClient, run_in_child, url_list


def test_sixteen_threads_first_use_share_one_engine(two) -> None:
    urls = url_list(two)
    barrier = threading.Barrier(16)
    clients: list[FailoverRedis] = []
    errors: list[BaseException] = []

    def first_use() -> None:
        try:
            barrier.wait()
            client = FailoverRedis.from_url(urls, name="shared16", **FAST)
            client.incr("hits")
            clients.append(client)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert len({id(c.geofailover) for c in clients}) == 1
        assert two[0].client().get("hits") == b"16"
        monitors = [t for t in threading.enumerate() if t.name == "geofailover-monitor[shared16]"]
        assert len(monitors) == 1
    finally:
        registry.close_all()


def test_same_name_with_different_endpoints_is_an_error(two) -> None:
    get_engine({"name": "dup", "endpoints": two[0].url})
    try:
        with pytest.raises(ConfigurationError, match="already in use"):
            get_engine({"name": "dup", "endpoints": two[1].url})
    finally:
        registry.close_all()


def _thread_count(prefix: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith(prefix))


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_thread_or_fd_leak_per_failover(two, make_client: MakeClient) -> None:
    client = make_client(two, failback_grace_period=0.05)
    client.ping()
    name = client.geofailover.name
    wait_until(lambda: client.geofailover.status()["endpoints"][1]["health"] == "healthy", timeout=2)
    threads_before = threading.active_count()
    fds_before = _fd_count()
    for _ in range(6):
        two[0].kill()
        assert client.incr("n")
        two[0].restart()
        wait_until(lambda: client.geofailover.active == "a", timeout=4)
        assert client.incr("n")
    wait_until(lambda: threading.active_count() <= threads_before, timeout=2, message="threads leaked")
    assert _fd_count() <= fds_before + 2  # a probe socket may be mid-reconnect
    assert _thread_count(f"geofailover-monitor[{name}]") == 1


def test_close_stops_threads_and_closes_sockets(two) -> None:
    fds_before = _fd_count()
    client = FailoverRedis.from_url(url_list(two), name="closing", **FAST)
    client.geofailover.on("failover", lambda e: None)
    client.ping()
    client.geofailover.check_now()
    assert _thread_count("geofailover-monitor[closing]") == 1
    client.geofailover.close()
    client.close()
    assert _thread_count("geofailover-") == 0 or all(
        not t.name.endswith("[closing]") for t in threading.enumerate()
    )
    wait_until(lambda: _fd_count() <= fds_before, timeout=2, message="sockets left open after close()")


def test_fork_child_gets_a_working_monitor_and_fresh_sockets(two, make_client: MakeClient) -> None:
    client = make_client(two)
    client.set("parent", 1)
    assert client.geofailover.monitor.running
    server_pid = two[0].pid

    def child() -> None:  # like a gunicorn --preload worker
        assert client.get("parent") == b"1"
        assert client.geofailover.monitor.running
        os.kill(server_pid, signal.SIGKILL)  # the server is the parent's child
        assert client.get("parent") is None  # a read: re-sent on b, which never had the key
        assert client.set("child", 1)
        assert client.geofailover.active == "b"

    run_in_child(child)
    assert two[1].client().get("child") == b"1"
