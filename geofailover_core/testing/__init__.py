"""Test kit for code that must survive Redis failures: real servers, real faults.

Use it to test your own application's behaviour when a Redis region dies,
hangs, comes back empty, or sits behind a broken network, without Docker,
mocks, or sleeps.

With pytest (the plugin is registered as ``pytest11: geofailover`` and loads
automatically once ``geofailover`` is installed; otherwise pass
``-p geofailover_core.testing.plugin``)::

    def test_region_dies(redis_servers, fault_proxy_factory):
        a, b, c = redis_servers                    # three real servers
        proxy = fault_proxy_factory(a)             # a's endpoint, faultable
        client = make_my_failover_client([proxy.url, b.url, c.url])
        proxy.blackhole()                          # or a.kill(), a.freeze()
        assert client.get("k") ...                 # served by b
        proxy.heal(); a.restart()                  # failback (a is empty)

Fixtures: ``redis_binary``, ``redis_server``, ``redis_servers`` (three),
``redis_server_factory(n, **kw)``, ``fault_proxy_factory(upstream, **kw)``,
``iptables_faults`` (kernel faults; tests marked ``netfault`` skip unless the
run entered a private network namespace, e.g. as root with
``GEOFAILOVER_NETNS=1``). Everything is killed/closed at teardown.

Without pytest, use the classes directly (both are context managers)::

    with RedisServer().start() as server, FaultProxy(server) as proxy:
        ...

Which fault to use: ``RedisServer.kill`` (refused), ``freeze``/``thaw``
(hang: read timeouts), ``restart`` (empty server, same port); ``FaultProxy``
for data-path faults (``blackhole``, ``delay``, ``reset``, ``refuse``) that
need no root; ``IptablesFaults`` for packet-level faults (connect timeouts)
inside the private namespace. Wait for outcomes with ``wait_until``.

For Redis Software's REST API (lag-aware availability checks) use
``FakeRestServer``: HTTP or HTTPS with a throwaway ``CertificateAuthority``,
Basic auth, the availability semantics of real clusters, fault hooks and a
request log.

Give clients under test short timeouts and no retries
(``retry=Retry(NoBackoff(), 0)``): redis-py's default retry policy turns one
blackholed call into minutes.

Names are imported lazily so that loading the pytest plugin does not import
redis-py for test runs that never use it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .binary import ServerBinary, find_redis_server
    from .fake_rest import CertificateAuthority, FakeBdb, FakeRestServer, RecordedRequest
    from .netns import IptablesFaults, enter_private_netns
    from .process import stop_process_group
    from .proxy import FaultProxy
    from .server import RedisServer, start_all
    from .waiting import wait_until

__all__ = [
    "CertificateAuthority",
    "FakeBdb",
    "FakeRestServer",
    "FaultProxy",
    "IptablesFaults",
    "RecordedRequest",
    "RedisServer",
    "ServerBinary",
    "enter_private_netns",
    "find_redis_server",
    "start_all",
    "stop_process_group",
    "wait_until",
]

_LOCATIONS = {
    "CertificateAuthority": ".fake_rest",
    "FakeBdb": ".fake_rest",
    "FakeRestServer": ".fake_rest",
    "RecordedRequest": ".fake_rest",
    "FaultProxy": ".proxy",
    "IptablesFaults": ".netns",
    "RedisServer": ".server",
    "ServerBinary": ".binary",
    "enter_private_netns": ".netns",
    "find_redis_server": ".binary",
    "start_all": ".server",
    "stop_process_group": ".process",
    "wait_until": ".waiting",
}


def __getattr__(name: str) -> object:
    module = _LOCATIONS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
