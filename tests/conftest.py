"""Shared fixtures: clients with tight timeouts on real servers, cleaned up after each test."""

from __future__ import annotations

import itertools
import os
import shutil
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from geofailover_core import FailoverRedis, registry
from geofailover_core.testing import RedisServer
from geofailover_core.testing.fake_rest import CertificateAuthority, FakeRestServer

# Tight timings so that every fault costs a fraction of a second.
FAST = {
    "socket_timeout": 0.3,
    "socket_connect_timeout": 0.3,
    "probe_interval": 0.1,
    "health_check_timeout": 0.2,
    "failback_grace_period": 0.5,
    "breaker_reset_timeout": 0.2,
    "confirm_timeout": 2.0,  # generous: on a loaded 2-core CI machine a probe round can be slow
}

_names = itertools.count()

#: Where the control plane keeps its keys on the test servers (the default: database 15).
CONTROL_DB = 15

MakeClient = Callable[..., FailoverRedis]


def url_list(servers: Sequence[Any], names: Sequence[str] = ("a", "b", "c"), weights: Sequence[float] | None = None) -> str:
    weights = weights or [len(servers) - i for i in range(len(servers))]
    return ";".join(f"{s.url}?name={n}&weight={w:g}" for s, n, w in zip(servers, names, weights, strict=False))


@pytest.fixture
def make_client() -> Iterator[MakeClient]:
    """Build a FailoverRedis over the given servers (weights descending by default)."""
    made: list[FailoverRedis] = []

    def make(servers: Sequence[Any], *, weights: Sequence[float] | None = None, **options: Any) -> FailoverRedis:
        name = options.pop("name", f"test{next(_names)}")
        client = FailoverRedis.from_url(url_list(servers, weights=weights), name=name, **{**FAST, **options})
        made.append(client)
        return client

    yield make
    for client in made:
        client.geofailover.close()
        client.close()
    registry.close_all()


@pytest.fixture
def clients() -> Iterator[list[FailoverRedis]]:
    """Clients a test builds itself; closed (with their engines) afterwards."""
    made: list[FailoverRedis] = []
    yield made
    for client in made:
        client.geofailover.close()
        client.close()
    registry.close_all()


@pytest.fixture(scope="module")
def ca() -> Iterator[CertificateAuthority]:
    """A test CA for HTTPS tests of the fake Redis Software REST API."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl binary")
    with CertificateAuthority() as authority:
        yield authority


@pytest.fixture
def api() -> Iterator[FakeRestServer]:
    """A fake Redis Software REST API (plain HTTP)."""
    with FakeRestServer() as server:
        yield server


@pytest.fixture
def two(redis_server_factory: Callable[..., list[RedisServer]]) -> list[RedisServer]:
    return redis_server_factory(2)


@pytest.fixture
def three(redis_server_factory: Callable[..., list[RedisServer]]) -> list[RedisServer]:
    return redis_server_factory(3)


def run_in_child(body: Callable[[], None], describe: Callable[[], str] | None = None) -> None:
    """Run ``body()`` in a forked child (like a gunicorn --preload worker) and
    fail here with the child's traceback if it raised (``describe()`` adds
    context, e.g. the child's engine status)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        report = "ok"
        try:
            os.close(read_fd)
            body()
        except BaseException:
            report = traceback.format_exc()[-3000:]
            if describe is not None:
                try:
                    report += "\n" + describe()
                except Exception as exc:
                    report += f"\n(no description: {exc!r})"
        finally:
            os.write(write_fd, report.encode())
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    with os.fdopen(read_fd, "rb") as pipe:
        outcome = pipe.read().decode()
    assert outcome == "ok", f"forked child failed:\n{outcome}"
