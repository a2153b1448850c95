"""Settings that used to be accepted silently, secrets in configuration errors,
and per-client connection options on a shared engine.

Each bad value must be refused at construction with a ConfigurationError that
names the setting and the fix; where the behaviour involves a server, the test
runs against a real redis-server.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from geofailover_core import ConfigurationError, EndpointConfig, FailoverConfig, FailoverRedis, registry
from geofailover_core.connection import probe_params
from geofailover_core.defaults import BOUNDS, DEFAULTS
from geofailover_core.testing import RedisServer

URL = "redis://h:1/0"


@pytest.fixture
def cleanup() -> Iterator[list[FailoverRedis]]:
    made: list[FailoverRedis] = []
    yield made
    for client in made:
        client.close()
    registry.close_all()


# -- A. values that parse but cannot be meant ------------------------------------------


@pytest.mark.parametrize(
    ("settings", "setting"),
    [
        ({"endpoints": [{"url": URL, "weight": 0}]}, "endpoints['h:1'].weight"),  # was 1.0: `weight or 1.0`
        ({"endpoints": [{"url": URL, "weight": 1e-300}]}, "endpoints['h:1'].weight"),
        ({"endpoints": [{"url": URL, "weight": 1e300}]}, "endpoints['h:1'].weight"),
        ({"endpoints": URL, "probe_interval": 1e-9}, "probe_interval"),
        ({"endpoints": URL, "health_check_probes": 10**9}, "health_check_probes"),
        ({"endpoints": URL, "confirm_timeout": 1e308}, "confirm_timeout"),
        ({"endpoints": URL, "probe_interval": 10**400}, "probe_interval"),  # was OverflowError
        ({"endpoints": URL, "failback_grace_period": 1e12}, "failback_grace_period"),
        ({"endpoints": URL, "max_connections": 0}, "max_connections"),
        ({"endpoints": URL, "db": -1}, "db"),
        ({"endpoints": URL, "socket_timeout": None}, "socket_timeout"),
        ({"endpoints": URL, "decode_responses": "yes"}, "decode_responses"),
        ({"endpoints": URL, "protocol": 4}, "protocol"),
        ({"endpoints": URL, "encoding": "no-such-codec"}, "encoding"),
        ({"endpoints": [{"url": URL, "name": "a", "socket_timeout": -1}]}, "endpoints['a'].socket_timeout"),
        ({"endpoints": "redis://h:0/0"}, "endpoints['h:0'].url"),
        ({"endpoints": "redis://h:1/-1"}, "endpoints['h:1'].url"),
        ({"endpoints": "redis://h:1/abc"}, "endpoints['h:1'].url"),  # was db 0, silently
        ({"endpoints": "redis://h:1/99999"}, "endpoints['h:1'].url"),
        ({"endpoints": "redis://h:1/0?db=abc"}, "endpoints['h:1'].url?.db"),
        ({"endpoints": "redis://h:1/0?socket_timeout=-5"}, "endpoints['h:1'].url?.socket_timeout"),
        ({"endpoints": "redis://h:1/0?socket_connect_timeout=nan"}, "endpoints['h:1'].url?.socket_connect_timeout"),
        ({"endpoints": "redis://h:1/0?max_connections=0"}, "endpoints['h:1'].url?.max_connections"),
        ({"endpoints": "redis://h:1/0?health_check_interval=-1"}, "endpoints['h:1'].url?.health_check_interval"),
        ({"endpoints": "rediss://h:1/0?ssl_cert_reqs=bogus"}, "endpoints['h:1'].url?.ssl_cert_reqs"),
        ({"endpoints": "redis://h:1/0?decode_responses=maybe"}, "endpoints['h:1'].url?.decode_responses"),
        ({"endpoints": "redis://h:1/0?retry=3"}, "endpoints['h:1'].url?.retry"),
        ({"endpoints": "redis://h:1/0?probe_interval=1"}, "endpoints['h:1'].url?.probe_interval"),
        ({"endpoints": "redis://h:1/0?db=1&db=2"}, "endpoints['h:1'].url?.db"),
        ({"endpoints": "redis://h:1/1?db=2"}, "endpoints['h:1'].url?.db"),
        ({"endpoints": "redis://h:1/0?weight=2&weight=3"}, "endpoints[0].weight"),
        ({"endpoints": "redis://h:1/0?weight=1e-300"}, "endpoints['h:1'].weight"),
        ({"endpoints": [{"url": "redis://h:1/0?weight=2", "weight": 3}]}, "endpoints[0].weight"),
        ({"endpoints": "redis://h:1/0#frag"}, "endpoints[0].url"),
        ({"endpoints": "unix://"}, "endpoints['unix-0'].url"),
    ],
)
def test_values_that_cannot_be_meant_are_refused(settings: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        FailoverConfig.from_dict(settings)
    assert info.value.setting == setting
    assert info.value.fix and "Fix:" in str(info.value)


def test_bounds_come_from_the_one_table() -> None:
    spec = BOUNDS["probe_interval"]
    assert spec.minimum is not None and spec.maximum is not None
    FailoverConfig.from_string(URL, probe_interval=spec.minimum)
    FailoverConfig.from_string(URL, probe_interval=spec.maximum)
    with pytest.raises(ConfigurationError) as info:
        FailoverConfig.from_string(URL, probe_interval=spec.maximum * 2)
    assert spec.allowed in info.value.fix
    for name in DEFAULTS:  # every engine option is in the table with its bounds
        assert BOUNDS[name].kind in ("choice", "flag", "key", "text") or BOUNDS[name].maximum is not None


def test_max_connections_of_the_client_itself_is_checked() -> None:
    with pytest.raises(ConfigurationError) as info:
        FailoverRedis(URL, name="maxconn", max_connections=0)
    assert info.value.setting == "max_connections"


def test_socket_timeout_in_the_url_is_refused_not_left_to_fail_every_command(two: list[RedisServer]) -> None:
    # redis-py accepts ?socket_timeout=-5 and then every command raises ValueError
    # while the probes (which use their own timeout) keep the endpoint healthy.
    with pytest.raises(ConfigurationError) as info:
        FailoverRedis.from_url(f"{two[0].url}?name=a&socket_timeout=-5;{two[1].url}?name=b", name="negative-timeout")
    assert info.value.setting == "endpoints['a'].url?.socket_timeout"


def test_a_database_that_is_not_a_number_is_refused_not_db_0(two: list[RedisServer]) -> None:
    with pytest.raises(ConfigurationError) as info:
        FailoverRedis.from_url(f"redis://{two[0].host}:{two[0].port}/abc?name=a", name="db-abc")
    assert info.value.setting == "endpoints['a'].url"


def test_url_query_options_mean_what_they_say(two: list[RedisServer], cleanup: list[FailoverRedis]) -> None:
    # redis-py passes ?decode_responses=false on as the string "false", which is true.
    client = FailoverRedis.from_url(
        f"redis://{two[0].host}:{two[0].port}?name=a&decode_responses=false&db=3;{two[1].url}?name=b", name="typed-query", probe_interval=0.1
    )
    cleanup.append(client)
    client.set("k", "v")
    assert client.get("k") == b"v"
    assert two[0].client(db=3).get("k") == b"v"


# -- B. secrets in configuration errors ------------------------------------------------

PASSWORD = "k9ZxQwe7Rt/3Fa+Lm0="
FRAGMENTS = ("k9ZxQwe7Rt", "3Fa+Lm0", "k9Zx", "Lm0=")


def _message(call: Any) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        call()
    return info.value


@pytest.mark.parametrize(
    "build",
    [
        lambda: FailoverConfig.from_string(f"redis://default:{PASSWORD}@host/0"),
        lambda: FailoverConfig.from_string(f"redis://default:{PASSWORD}@host/0?name=a"),
        lambda: FailoverConfig.from_dict({"endpoints": [{"name": "a", "url": f"redis://default:{PASSWORD}@host/0"}]}),
        lambda: EndpointConfig("a", f"redis://default:{PASSWORD}@host/0"),
        lambda: FailoverRedis.from_url(f"redis://default:{PASSWORD}@host/0", name="pw-slash"),
        lambda: FailoverConfig.from_string("redis://:k9Zx#Qwe7@host/0"),
        lambda: FailoverConfig.from_string("redis://:k9ZxQwe7?Rt@host/0"),
        lambda: FailoverConfig.from_string("redis://:1234?k9ZxQwe7@host/0"),
    ],
)
def test_an_unencoded_password_is_never_quoted_and_the_fix_says_percent_encode(build: Any) -> None:
    exc = _message(build)
    text = str(exc)
    for fragment in (*FRAGMENTS, "Qwe7", "Rt@"):
        assert fragment not in text
    assert "percent-encoded" in exc.fix
    assert "Port could not be cast" not in text


def test_a_semicolon_in_a_password_of_an_endpoint_string() -> None:
    exc = _message(lambda: FailoverConfig.from_string("redis://:k9Zx;Qwe7@host:1/0;redis://other:1/0"))
    assert "k9Zx" not in str(exc) and "Qwe7" not in str(exc)
    assert "%3B" in exc.fix


def test_a_percent_encoded_password_works(redis_server_factory: Any, cleanup: list[FailoverRedis]) -> None:
    from urllib.parse import quote

    secret = "k9Zx/Qw;e7#Rt?@="
    (server,) = redis_server_factory(1, password=secret)
    client = FailoverRedis.from_url(f"redis://:{quote(secret, safe='')}@{server.host}:{server.port}/0?name=a", name="encoded-pw")
    cleanup.append(client)
    assert client.ping()
    assert secret not in repr(client.geofailover.config)


# -- D. connection options are each client's own ---------------------------------------


def test_clients_of_one_engine_may_differ_in_connection_options(two: list[RedisServer], cleanup: list[FailoverRedis]) -> None:
    urls = f"{two[0].url}?name=a;{two[1].url}?name=b"
    first = FailoverRedis.from_url(urls, name="per-client", probe_interval=0.1)
    cleanup.append(first)
    # Used to raise "already in use in this process with different endpoints or options".
    second = FailoverRedis.from_url(urls, name="per-client", probe_interval=0.1, socket_timeout=5, decode_responses=True, client_name="second")
    cleanup.append(second)
    assert second.geofailover is first.geofailover
    first.set("k", "v")
    assert first.get("k") == b"v" and second.get("k") == "v"
    assert second.client_getname() == "second" and first.client_getname() is None
    conn = second.connection_pool.get_connection()
    try:
        assert conn.socket_timeout == 5
    finally:
        second.connection_pool.release(conn)
    conn = first.connection_pool.get_connection()
    try:
        assert conn.socket_timeout == DEFAULTS["socket_timeout"]
    finally:
        first.connection_pool.release(conn)
    # The probes keep the engine's own timeouts, whatever its clients use.
    _, params = probe_params(first.geofailover.config, "a")
    assert params["socket_timeout"] == first.geofailover.config.health_check_timeout


def test_a_client_given_a_whole_configuration_uses_its_own_connection_options(two: list[RedisServer], cleanup: list[FailoverRedis]) -> None:
    urls = f"{two[0].url}?name=a;{two[1].url}?name=b"
    first = FailoverRedis(config={"endpoints": urls, "name": "own-config", "decode_responses": True})
    second = FailoverRedis(config={"endpoints": urls, "name": "own-config"})
    cleanup += [first, second]
    assert second.geofailover is first.geofailover
    first.set("k", "v")
    assert first.get("k") == "v" and second.get("k") == b"v"


def test_a_different_engine_option_under_one_name_is_still_an_error_naming_it(two: list[RedisServer], cleanup: list[FailoverRedis]) -> None:
    urls = f"{two[0].url}?name=a;{two[1].url}?name=b"
    cleanup.append(FailoverRedis.from_url(urls, name="engine-conflict"))
    with pytest.raises(ConfigurationError) as info:
        FailoverRedis.from_url(urls, name="engine-conflict", failback_grace_period=99)
    assert "already in use" in info.value.problem and "failback_grace_period" in info.value.problem


def test_users_of_the_engines_own_configuration_must_agree_on_connection_options(two: list[RedisServer]) -> None:
    """A caller that builds its connections from ``engine.config`` (not its own
    configuration) would silently get another client's options: still refused."""
    urls = f"{two[0].url}?name=a;{two[1].url}?name=b"
    try:
        registry.get_engine({"endpoints": urls, "name": "shared-conn", "decode_responses": True})
        with pytest.raises(ConfigurationError, match="connection options"):
            registry.get_engine({"endpoints": urls, "name": "shared-conn"})
        assert registry.get_engine({"endpoints": urls, "name": "shared-conn"}, own_connections=True).name == "shared-conn"
    finally:
        registry.close_all()


def test_health_check_interval_of_a_client_is_redis_pys_keepalive_ping(two: list[RedisServer], cleanup: list[FailoverRedis]) -> None:
    client = FailoverRedis.from_url(f"{two[0].url}?name=a;{two[1].url}?name=b", name="hci", health_check_interval=30)
    cleanup.append(client)
    assert client.geofailover.config.probe_interval == DEFAULTS["probe_interval"]
    assert client.ping()
    conn = client.connection_pool.get_connection()
    try:
        assert conn.health_check_interval == 30
    finally:
        client.connection_pool.release(conn)
    _, params = probe_params(client.geofailover.config, "a")
    assert "health_check_interval" not in params


def test_health_check_interval_in_a_settings_dict_is_ambiguous() -> None:
    exc = _message(lambda: FailoverConfig.from_dict({"endpoints": URL, "health_check_interval": 2}))
    assert exc.setting == "health_check_interval"
    assert "probe_interval" in exc.fix and "client_options" in exc.fix
    cfg = FailoverConfig.from_dict({"endpoints": URL, "probe_interval": 2, "client_options": {"health_check_interval": 30}})
    assert cfg.probe_interval == 2 and cfg.client_options == {"health_check_interval": 30}


def test_health_check_interval_of_failover_config_is_the_deprecated_probe_interval() -> None:
    endpoints = (EndpointConfig("a", URL),)
    with pytest.warns(DeprecationWarning, match="probe_interval"):
        cfg = FailoverConfig(endpoints=endpoints, health_check_interval=2)  # type: ignore[call-arg]
    assert cfg.probe_interval == 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cfg.with_options(app_label="web").probe_interval == 2.0
    with pytest.warns(DeprecationWarning), pytest.raises(ConfigurationError, match="probe_interval"):
        FailoverConfig(endpoints=endpoints, health_check_interval=2, probe_interval=3)  # type: ignore[call-arg]


def test_connection_options_are_not_part_of_the_fingerprint() -> None:
    base = FailoverConfig.from_string(URL)
    assert base.fingerprint() == FailoverConfig.from_string(URL, socket_timeout=9, decode_responses=True).fingerprint()
    assert base.fingerprint() != FailoverConfig.from_string(URL, probe_interval=9).fingerprint()


def test_pool_connection_kwargs_hold_no_secret_and_follow_the_client(two: list[RedisServer], cleanup: list[FailoverRedis]) -> None:
    client = FailoverRedis.from_url(f"{two[0].url}?name=a", name="kwargs", socket_connect_timeout=0.7)
    cleanup.append(client)
    assert client.connection_pool.connection_kwargs["socket_connect_timeout"] == 0.7
    assert isinstance(client, redis.Redis)
