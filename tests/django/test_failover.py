"""Real faults under the cache backend: kills, all-down, signals, fork."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import signal
import socket
import threading
import traceback
from collections import defaultdict
from typing import Any

import pytest
import redis

from geofailover_core import NoHealthyEndpointError
from geofailover_core.testing import RedisServer, wait_until

#: Sample arguments for every public cache method, and what it returns when
#: IGNORE_EXCEPTIONS swallows an outage (django-redis's conventions: the
#: ``default`` for get, ``{}`` for get_many, None otherwise).
WHEN = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
CALLS: dict[str, tuple[tuple[Any, ...], Any]] = {
    "get": (("k", "dflt"), "dflt"),
    "get_or_set": (("k", "made"), "made"),
    "get_many": ((["k", "j"],), {}),
    "set": (("k", 1), None),
    "add": (("k", 1), None),
    "set_many": (({"k": 1},), None),
    "touch": (("k", 10), None),
    "delete": (("k",), None),
    "delete_many": ((["k"],), None),
    "delete_pattern": (("k*",), None),
    "clear": ((), None),
    "has_key": (("k",), None),
    "incr": (("k",), None),
    "decr": (("k",), None),
    "incr_version": (("k",), None),
    "decr_version": (("k",), None),
    "keys": (("*",), None),
    "iter_keys": (("*",), []),
    "ttl": (("k",), None),
    "pttl": (("k",), None),
    "persist": (("k",), None),
    "expire": (("k", 10), None),
    "pexpire": (("k", 10), None),
    "expire_at": (("k", WHEN), None),
    "pexpire_at": (("k", WHEN), None),
    "sadd": (("s", 1), None),
    "scard": (("s",), None),
    "sdiff": (("s", "t"), None),
    "sdiffstore": (("d", "s"), None),
    "sinter": (("s", "t"), None),
    "sinterstore": (("d", "s"), None),
    "sismember": (("s", 1), None),
    "smismember": (("s", 1), None),
    "smembers": (("s",), None),
    "smove": (("s", "t", 1), None),
    "spop": (("s",), None),
    "srandmember": (("s",), None),
    "srem": (("s", 1), None),
    "sscan": (("s",), None),
    "sscan_iter": (("s",), []),
    "sunion": (("s", "t"), None),
    "sunionstore": (("d", "s"), None),
    "hset": (("h", "f", "v"), None),
    "hdel": (("h", "f"), None),
    "hlen": (("h",), None),
    "hkeys": (("h",), None),
    "hexists": (("h", "f"), None),
    "zadd": (("z", {"a": 1.0}), None),
    "zcard": (("z",), None),
    "zcount": (("z", 0, 1), None),
    "zincrby": (("z", 1.0, "a"), None),
    "zpopmax": (("z",), None),
    "zpopmin": (("z",), None),
    "zrange": (("z", 0, -1), None),
    "zrangebyscore": (("z", 0, 1), None),
    "zrank": (("z", "a"), None),
    "zrem": (("z", "a"), None),
    "zremrangebyscore": (("z", 0, 1), None),
    "zrevrange": (("z", 0, -1), None),
    "zrevrangebyscore": (("z", 1, 0), None),
    "zscore": (("z", "a"), None),
}
#: Public methods that never talk to Redis (or, for lock(), only build an object).
NO_IO = {"aclose", "make_key", "make_and_validate_key", "validate_key", "get_backend_timeout", "close", "client", "lock", "geofailover", "geofailover_binding", "alias", "default_timeout", "key_func", "key_prefix", "version", "logger"}


def _public_methods(cache: Any) -> set[str]:
    names = set()
    for name in dir(type(cache)):
        if name.startswith("_") or name in NO_IO:
            continue
        if callable(getattr(type(cache), name, None)):
            names.add(name)
    return names


def _call(cache: Any, name: str, args: tuple[Any, ...]) -> Any:
    result = getattr(cache, name)(*args)
    if name.endswith("iter_keys") or name.endswith("scan_iter"):
        result = list(result)
    return result


def _all_down(cache: Any, two: list[RedisServer]) -> None:
    cache.set("warm", 1)  # start the engine while both are up
    two[1].kill()
    two[0].kill()
    engine = cache.geofailover
    raw = cache.client.get_client()

    def down() -> bool:
        try:
            raw.ping()  # the command path notices at once; the monitor would within an interval
        except redis.exceptions.ConnectionError:
            pass
        return engine.active is None

    wait_until(down, timeout=5, message="engine never saw all endpoints down")


def _refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def test_sequential_requests_never_fail_across_kill_and_restart(geo_cache: Any, two: list[RedisServer]) -> None:
    """No command is in flight at the kill: the switch itself is invisible, even without fail-open."""
    from django.test import Client

    geo_cache(ignore=False)
    client = Client()

    def hit() -> dict[str, Any]:
        response = client.get("/count/")
        assert response.status_code == 200, response.content
        body: dict[str, Any] = response.json()
        return body

    assert [hit()["views"] for _ in range(3)] == [1, 2, 3]
    two[0].kill()
    after_kill = [hit() for _ in range(3)]
    assert [r["endpoint"] for r in after_kill] == ["b"] * 3
    assert [r["views"] for r in after_kill] == [1, 2, 3]  # cold cache on b, request fine
    two[0].restart()
    wait_until(lambda: hit()["endpoint"] == "a", timeout=5, message="no failback to a")
    assert hit()["endpoint"] == "a"


def test_concurrent_requests_keep_succeeding_while_the_active_endpoint_is_killed_and_restarted(
    geo_cache: Any, two: list[RedisServer]
) -> None:
    """Under load some commands are in flight when the region dies. A write whose
    reply was lost is not re-sent (retry_on_failover="read_only"), so with
    IGNORE_EXCEPTIONS (the recommended setting) that one call returns its default;
    every request still succeeds and everything after the switch is served by b."""
    from django.test import Client

    geo_cache(ignore=True)
    stop = threading.Event()
    views: list[tuple[int, str | None, Any]] = []
    sessions: list[tuple[int, bytes]] = []
    failures: list[str] = []

    def page_views() -> None:
        client = Client()
        while not stop.is_set():
            try:
                response = client.get("/count/")
                body = response.json() if response.status_code == 200 else {}
                views.append((response.status_code, body.get("endpoint"), body.get("views")))
            except Exception:
                failures.append(traceback.format_exc())

    def session_user() -> None:
        client = Client(raise_request_exception=False)
        while not stop.is_set():
            response = client.get("/session/")
            sessions.append((response.status_code, response.content[:200]))

    threads = [threading.Thread(target=page_views) for _ in range(3)] + [threading.Thread(target=session_user)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: sum(1 for _, ep, _ in views if ep == "a") >= 10, timeout=5, message="no traffic on a")
        two[0].kill()
        kill_mark = len(views)
        wait_until(lambda: sum(1 for _, ep, _ in views[kill_mark:] if ep == "b") >= 10, timeout=5, message="traffic did not move to b")
        two[0].restart()
        mark = len(views)
        wait_until(lambda: sum(1 for _, ep, _ in views[mark:] if ep == "a") >= 10, timeout=8, message="traffic did not fail back to a")
        mark = len(sessions)
        wait_until(lambda: sum(1 for code, _ in sessions[mark:] if code == 200) >= 3, timeout=5, message="sessions stopped working")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert failures == []
    assert {code for code, _, _ in views} == {200}, [v for v in views if v[0] != 200][:5]
    assert len(views) > 60
    # At most the commands in flight at the kill (one page-view thread has at
    # most one at a time) fail open; the planned failback loses none.
    fail_open = [v for v in views if v[2] is None]
    assert len(fail_open) <= 3, fail_open
    # Sessions live in the cache, so a switch logs users out (cache contents are
    # not replicated). Only a request that loaded its session on one endpoint
    # and saved it on the other fails, with Django's own SessionInterrupted (400).
    interrupted = [code for code, _ in sessions if code != 200]
    assert set(interrupted) <= {400} and len(interrupted) <= 2, sessions[:5]


def test_ignore_exceptions_returns_defaults_for_every_method_when_all_down(
    geo_cache: Any, two: list[RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    cache = geo_cache(ignore=True)
    methods = _public_methods(cache)
    sync = {m for m in methods if not (m.startswith("a") and m[1:] in methods)}
    untested = sync - set(CALLS)
    assert not untested, f"add these cache methods to CALLS: {sorted(untested)}"
    _all_down(cache, two)
    caplog.set_level(logging.INFO, logger="geofailover.django")
    for name, (args, expected) in CALLS.items():
        if name not in methods:  # e.g. the sorted-set helpers on django-redis 6
            continue
        assert _call(cache, name, args) == expected, name

    async def async_calls() -> list[tuple[str, Any, Any]]:
        seen = []
        for name in sorted(methods - sync):
            args, expected = CALLS.get(name[1:], ((), None))
            seen.append((name, await getattr(cache, name)(*args), expected))
        return seen

    for name, got, expected in asyncio.run(async_calls()):
        assert got == expected, name

    warnings = [r for r in caplog.records if r.name == "geofailover.django" and r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # once per outage, not per call
    assert "IGNORE_EXCEPTIONS" in warnings[0].getMessage()

    two[0].restart()
    wait_until(lambda: cache.set("back", 1), timeout=5, message="cache did not recover")
    assert cache.get("back") == 1
    infos = [r for r in caplog.records if r.name == "geofailover.django" and r.levelno == logging.INFO]
    assert len(infos) == 1 and "succeed again" in infos[0].getMessage()

    # A second outage is logged again (once).
    two[0].kill()
    for _ in range(3):
        assert cache.get("back", "gone") == "gone"
    warnings = [r for r in caplog.records if r.name == "geofailover.django" and r.levelno == logging.WARNING]
    assert len(warnings) == 2


def test_without_ignore_exceptions_every_method_raises_the_redis_error(geo_cache: Any, two: list[RedisServer]) -> None:
    cache = geo_cache(ignore=False)
    _all_down(cache, two)
    # ttl, sadd and iter_keys are among the methods django-redis itself leaves unwrapped.
    for name in ("get", "set", "ttl", "expire", "sadd", "hset", "iter_keys", "incr"):
        args, _ = CALLS[name]
        with pytest.raises(redis.exceptions.ConnectionError) as info:
            _call(cache, name, args)
        assert isinstance(info.value, NoHealthyEndpointError), name


def test_a_lock_never_fails_open(geo_cache: Any, two: list[RedisServer]) -> None:
    """IGNORE_EXCEPTIONS must not pretend a lock was acquired: acquiring raises."""
    cache = geo_cache(ignore=True)
    _all_down(cache, two)
    lock = cache.lock("job", timeout=5)
    with pytest.raises(redis.exceptions.ConnectionError):
        lock.acquire(blocking=False)


def test_signals_fire_once_per_switch(geo_cache: Any, two: list[RedisServer], caplog: pytest.LogCaptureFixture) -> None:
    from django.core.cache import caches

    from geofailover_django import signals
    from geofailover_django.cache import GeoFailoverCache

    received: dict[str, list[tuple[Any, Any, Any]]] = defaultdict(list)

    def make(kind: str) -> Any:
        def receiver(sender: Any, alias: Any, event: Any, **kwargs: Any) -> None:
            received[kind].append((sender, alias, event))

        return receiver

    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    receivers = {kind: make(kind) for kind in signals.BY_KIND}
    for kind, receiver in receivers.items():
        signals.BY_KIND[kind].connect(receiver)
    signals.failover.connect(broken)
    try:
        cache = geo_cache(ignore=True)
        cache.set("k", 1)
        # Backends of other threads share the alias's one subscription.
        threads = [threading.Thread(target=lambda: caches["default"].set("t", 1)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        engine = cache.geofailover

        two[0].kill()
        cache.set("k", 2)  # refused: failover a -> b
        wait_until(lambda: received["failover"], timeout=5, message="no failover signal")
        two[0].restart()
        wait_until(lambda: received["failback"], timeout=5, message="no failback signal")
        two[1].kill()
        wait_until(lambda: engine.status()["endpoints"][1]["health"] == "unhealthy", timeout=5)
        two[0].kill()
        cache.set("k", 3)
        wait_until(lambda: received["all_down"], timeout=5, message="no all_down signal")
        two[0].restart()
        wait_until(lambda: received["recovered"], timeout=5, message="no recovered signal")
        assert engine.events.flush(5)
    finally:
        for kind, receiver in receivers.items():
            signals.BY_KIND[kind].disconnect(receiver)
        signals.failover.disconnect(broken)

    assert {k: len(v) for k, v in received.items() if k != "health_changed"} == {"failover": 1, "failback": 1, "all_down": 1, "recovered": 1}
    sender, alias, event = received["failover"][0]
    assert sender is GeoFailoverCache and alias == "default"
    assert (event.from_endpoint, event.to_endpoint) == ("a", "b")
    assert (received["failback"][0][2].from_endpoint, received["failback"][0][2].to_endpoint) == ("b", "a")
    assert received["recovered"][0][2].to_endpoint == "a"
    assert received["health_changed"]  # every verdict change is relayed too
    # Django's send_robust logs the raising receiver, with its traceback, once.
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "broken" in r.getMessage()]
    assert [r.name for r in errors] == ["django.dispatch"] and errors[0].exc_info is not None


# Forking a process whose monitor thread runs is the point (gunicorn --preload does it);
# Python 3.12 warns about exactly that.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")
def test_fork_child_gets_working_cache_monitor_and_signals(geo_cache: Any, two: list[RedisServer]) -> None:
    """Like a gunicorn --preload worker: the parent used the cache before fork()."""
    from django.test import Client

    from geofailover_django import signals

    cache = geo_cache(ignore=False)
    cache.set("parent", 1)
    assert cache.geofailover.monitor.running
    server_pid = two[0].pid
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        report = "ok"
        try:
            os.close(read_fd)
            got: list[Any] = []

            def on_failover(sender: Any, event: Any, **kwargs: Any) -> None:
                got.append(event)

            signals.failover.connect(on_failover)
            client = Client()
            assert client.get("/count/").json()["endpoint"] == "a"
            assert cache.get("parent") == 1
            assert cache.geofailover.monitor.running, "monitor not re-armed in the child"
            os.kill(server_pid, signal.SIGKILL)  # the server is the parent's child: poll, cannot waitpid
            wait_until(lambda: _refused(two[0].host, two[0].port), timeout=5, message="server still accepting")
            response = client.get("/count/")
            assert response.status_code == 200 and response.json()["endpoint"] == "b", response.content
            wait_until(lambda: got, timeout=5, message="no failover signal in the child")
        except BaseException:
            report = traceback.format_exc()[-3000:]
            try:
                report += "\nengine status in the child: " + json.dumps(cache.geofailover.status(), default=str)
            except Exception as exc:
                report += f"\n(no status: {exc!r})"
        finally:
            os.write(write_fd, report.encode())
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    with os.fdopen(read_fd, "rb") as pipe:
        outcome = pipe.read().decode()
    assert outcome == "ok", f"forked child failed:\n{outcome}"
