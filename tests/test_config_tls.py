"""``rediss://`` verifies the server's certificate *and host name* on every
redis-py version geofailover supports (``redis>=5``): redis-py 5 left
``ssl_check_hostname`` off, so a certificate issued to any other host by a
trusted CA was accepted.

Self-contained on purpose (the test kit's servers and CA, redis-py, pytest):
it also runs on the oldest supported redis-py in a throwaway venv.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from geofailover_core import FailoverConfig, registry
from geofailover_core.connection import direct_client, endpoint_params, probe_params
from geofailover_core.testing import RedisServer
from geofailover_core.testing.fake_rest import CertificateAuthority
from geofailover_core.testing.ports import pick_free_port


class TlsServer:
    """A real redis-server with a TLS port whose certificate names ``hosts``."""

    def __init__(self, factory: Callable[..., list[RedisServer]], ca: CertificateAuthority, hosts: tuple[str, ...]) -> None:
        cert, key = ca.issue(hosts[0], hosts=hosts)
        self.tls_port = pick_free_port("127.0.0.1")
        args = ["--tls-port", str(self.tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                "--tls-ca-cert-file", str(ca.cert_file), "--tls-auth-clients", "no"]  # fmt: skip
        (self.server,) = factory(1, extra_args=args)

    def url(self, host: str = "127.0.0.1") -> str:
        return f"rediss://{host}:{self.tls_port}/0"


@pytest.fixture
def tls(redis_server_factory: Callable[..., list[RedisServer]], ca: CertificateAuthority) -> Iterator[Callable[[tuple[str, ...]], TlsServer]]:
    yield lambda hosts: TlsServer(redis_server_factory, ca, hosts)
    registry.close_all()


def _ping(config: FailoverConfig, endpoint: str, *, probe: bool = False) -> Any:
    cls, kwargs = (probe_params if probe else endpoint_params)(config, endpoint)
    client = direct_client(cls, kwargs, 2)
    try:
        return client.ping()
    finally:
        client.connection_pool.disconnect()


def _config(ca: CertificateAuthority, *urls: str, **options: Any) -> FailoverConfig:
    return FailoverConfig.from_dict(
        {"endpoints": list(urls), "ssl_ca_certs": str(ca.cert_file), "control_plane": False, "health_check_timeout": 2, **options}
    )


@pytest.mark.parametrize("probe", [False, True], ids=["client-connection", "probe"])
def test_a_certificate_for_another_host_is_refused(tls: Any, ca: CertificateAuthority, probe: bool) -> None:
    elsewhere = tls(("elsewhere.example",))
    config = _config(ca, f"{elsewhere.url()}?name=wrong")
    with pytest.raises(redis.exceptions.ConnectionError, match=r"(?i)certificate|match|hostname"):
        _ping(config, "wrong", probe=probe)


def test_the_right_host_name_is_accepted(tls: Any, ca: CertificateAuthority) -> None:
    here = tls(("localhost", "127.0.0.1"))
    config = _config(ca, f"{here.url()}?name=right")
    assert _ping(config, "right") is True
    assert _ping(config, "right", probe=True) is True


@pytest.mark.parametrize(
    "off",
    [{"ssl_check_hostname": False}, {"ssl_cert_reqs": "none"}],
    ids=["check_hostname-off", "cert_reqs-none"],
)
def test_the_user_may_turn_the_check_off(tls: Any, ca: CertificateAuthority, off: dict[str, Any]) -> None:
    elsewhere = tls(("elsewhere.example",))
    config = _config(ca, f"{elsewhere.url()}?name=wrong", **off)
    assert _ping(config, "wrong") is True


def test_the_check_can_be_turned_off_in_the_url_too(tls: Any, ca: CertificateAuthority) -> None:
    elsewhere = tls(("elsewhere.example",))
    config = _config(ca, f"{elsewhere.url()}?name=wrong&ssl_check_hostname=false")
    assert _ping(config, "wrong") is True


def test_the_engine_never_routes_to_an_endpoint_with_the_wrong_certificate(tls: Any, ca: CertificateAuthority) -> None:
    elsewhere, here = tls(("elsewhere.example",)), tls(("localhost", "127.0.0.1"))
    engine = registry.build_engine(_config(ca, f"{elsewhere.url()}?name=wrong&weight=2", f"{here.url()}?name=right"))
    try:
        assert engine.check_now(timeout=10)
        assert engine.active == "right"
        assert not engine.endpoint("wrong").eligible()
    finally:
        engine.close()

