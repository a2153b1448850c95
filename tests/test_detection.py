"""What counts as a failure on the command path, and what never does."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from geofailover_core.commands import Failure, blocking_seconds, classify
from geofailover_core.testing import wait_until

from .conftest import MakeClient


def breaker(client: redis.Redis, name: str = "a") -> dict:  # type: ignore[type-arg]
    return next(e for e in client.geofailover.status()["endpoints"] if e["name"] == name)  # type: ignore[attr-defined]


def test_application_errors_never_count(two, make_client: MakeClient) -> None:
    client = make_client(two, failure_threshold=1)
    client.set("str", "x")
    for _ in range(5):
        with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
            client.lpush("str", 1)
    lock = client.lock("L", timeout=5)
    assert lock.acquire()
    client.delete("L")
    with pytest.raises(redis.exceptions.LockNotOwnedError):
        lock.release()
    assert client.geofailover.active == "a"
    assert breaker(client)["counters"].get("command_failures", 0) == 0


def test_a_member_that_became_a_replica_is_left_at_the_first_refused_write(two, make_client: MakeClient) -> None:
    two[0].client().replicaof(two[1].host, two[1].port)
    client = make_client(two)  # the default failure threshold: reads in between would reset any count
    wait_until(lambda: two[0].client().info("replication")["master_link_status"] == "up", timeout=5)
    assert client.get("k") is None  # reads still work on a replica
    # READONLY: refused, so provably not applied, and re-sent on b; the caller sees no error
    assert client.set("k", 2)
    assert client.geofailover.active == "b"
    assert breaker(client)["breaker"] == "open"
    assert two[1].client().get("k") == b"2"
    two[0].client().replicaof("no", "one")


def test_blocking_command_longer_than_socket_timeout_is_not_a_fault(two, make_client: MakeClient) -> None:
    client = make_client(two, socket_timeout=0.2, failure_threshold=1)
    started = time.monotonic()
    assert client.blpop(["empty-list"], timeout=1) is None
    assert time.monotonic() - started >= 0.9
    assert client.xread({"nostream": "$"}, block=600) in ([], {}, None)
    assert client.geofailover.active == "a"
    assert breaker(client)["counters"].get("command_failures", 0) == 0


def test_blocking_command_is_served_by_a_push_from_another_client(two, make_client: MakeClient) -> None:
    client = make_client(two, socket_timeout=0.2)
    threading.Timer(0.5, lambda: two[0].client().rpush("q", "job")).start()
    assert client.blpop(["q"], timeout=3) == (b"q", b"job")


def test_consecutive_timeouts_open_the_breaker_but_a_success_resets_the_count(two, make_client: MakeClient) -> None:
    # Health checks that always pass isolate the breaker: only command errors count here.
    client = make_client(two, failure_threshold=3, confirm_timeout=0.05, health_checks=[lambda ctx: True])
    client.ping()

    def time_out_once() -> None:
        two[0].freeze()  # the server stays up but stops answering
        try:
            with pytest.raises(redis.exceptions.TimeoutError):
                client.incr("n")  # a write that may have been received: not re-sent
        finally:
            two[0].thaw()

    time_out_once()
    time_out_once()
    assert breaker(client)["breaker"] == "closed"
    assert breaker(client)["breaker_failures"] == 2
    assert client.ping()  # a success: the consecutive count is back to zero
    assert breaker(client)["breaker_failures"] == 0
    time_out_once()
    time_out_once()
    assert client.geofailover.active == "a"
    two[0].freeze()
    try:
        client.incr("n")  # the third consecutive timeout opens the breaker
    except redis.exceptions.TimeoutError:
        pass
    finally:
        two[0].thaw()
    assert breaker(client)["breaker"] == "open"
    assert client.geofailover.active == "b"


@pytest.mark.parametrize(
    ("exc", "command", "kind"),
    [
        (redis.exceptions.ResponseError("WRONGTYPE Operation against a key"), "LPUSH", Failure.IGNORE),
        (redis.exceptions.ResponseError("READONLY You can't write against a read only replica."), "SET", Failure.CONCLUSIVE),
        (redis.exceptions.ReadOnlyError("You can't write against a read only replica."), "SET", Failure.CONCLUSIVE),
        (redis.exceptions.ResponseError("UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)"), "BRPOP", Failure.CONCLUSIVE),
        (redis.exceptions.ResponseError("UNBLOCKED client unblocked via CLIENT UNBLOCK"), "BLPOP", Failure.IGNORE),
        (redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), "SET", Failure.IGNORE),
        (redis.exceptions.ResponseError("MASTERDOWN Link with MASTER is down"), "GET", Failure.COUNT),
        (redis.exceptions.BusyLoadingError("LOADING"), "GET", Failure.COUNT),
        (redis.exceptions.LockNotOwnedError("not owned"), None, Failure.IGNORE),
        (redis.exceptions.TimeoutError("Timeout reading"), "GET", Failure.COUNT),
        (redis.exceptions.TimeoutError("Timeout reading"), "BLPOP", Failure.IGNORE),
        (redis.exceptions.TimeoutError("Timeout reading"), "XREAD", Failure.IGNORE),
        (redis.exceptions.ConnectionError("Error 111 connecting to h:1. Connection refused."), "GET", Failure.CONCLUSIVE),
        (redis.exceptions.ConnectionError("Connection closed by server."), "GET", Failure.COUNT),
        (redis.exceptions.AuthenticationError("invalid password"), "GET", Failure.COUNT),
    ],
)
def test_classification(exc: BaseException, command: str | None, kind: Failure) -> None:
    assert classify(exc, command) is kind


@pytest.mark.parametrize(
    ("args", "seconds"),
    [
        (("BLPOP", "a", "b", 5), 5.0),
        (("BRPOP", "a", 0), 0.0),
        (("BLMOVE", "a", "b", "LEFT", "RIGHT", 2.5), 2.5),
        (("BLMPOP", 3, 1, "a", "LEFT"), 3.0),
        (("XREAD", "COUNT", 1, "BLOCK", 1500, "STREAMS", "s", "$"), 1.5),
        (("XREAD", "STREAMS", "s", "$"), None),
        (("WAIT", 1, 200), 0.2),
        (("GET", "k"), None),
    ],
)
def test_blocking_seconds(args: tuple[object, ...], seconds: float | None) -> None:
    assert blocking_seconds(str(args[0]), args) == seconds


def test_a_stale_socket_failure_is_never_blamed_on_the_new_endpoint(two, make_client: MakeClient) -> None:
    """A socket made before a switch that fails after it carries its own generation."""
    client = make_client(two, health_checks=[lambda ctx: True])
    client.ping()
    pool = client.connection_pool
    stale = pool.get_connection()  # to a, checked out before the switch
    two[0].kill()
    client.geofailover.failover_to("b", reason="operator")
    stale.disconnect()
    with pytest.raises(redis.exceptions.ConnectionError) as info:
        stale.connect()  # refused: conclusive, but about a
    client.geofailover.report_failure(client.geofailover.generation, info.value, "GET")
    b = breaker(client, "b")
    assert b["breaker"] == "closed" and b["counters"].get("command_failures", 0) == 0
    pool.release(stale)
    assert client.ping() and client.geofailover.active == "b"
