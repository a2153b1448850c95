"""Configuration: every front door, every mistake caught at construction with a named fix."""

from __future__ import annotations

import pytest

from geofailover_core import ConfigurationError, EndpointConfig, FailoverConfig, FailoverRedis
from geofailover_core.config import connection_option_names


def test_string_form_strips_our_query_keys_before_redis_py_sees_them() -> None:
    cfg = FailoverConfig.from_string(
        "redis://10.0.0.1:6379/0?name=us-east&weight=2;rediss://:pw@10.1.0.1:6380/1?name=eu-west&weight=1"
    )
    assert [ep.name for ep in cfg.endpoints] == ["us-east", "eu-west"]
    assert [ep.weight for ep in cfg.endpoints] == [2.0, 1.0]
    assert "name=" not in cfg.endpoints[0].url and "weight=" not in cfg.endpoints[0].url
    cls, kwargs = cfg.endpoints[1].connection_params(cfg.base_connection_options())
    assert cls.__name__ == "SSLConnection"
    assert kwargs["host"] == "10.1.0.1" and kwargs["port"] == 6380 and kwargs["db"] == 1
    assert kwargs["password"] == "pw"


def test_redis_py_query_options_survive() -> None:
    cfg = FailoverConfig.from_string("redis://h:1/0?name=a&socket_timeout=2.5")
    _, kwargs = cfg.endpoints[0].connection_params(cfg.base_connection_options())
    assert kwargs["socket_timeout"] == 2.5


def test_unix_socket_endpoint() -> None:
    cfg = FailoverConfig.from_string("unix:///tmp/redis.sock?db=2&name=local&weight=3;redis://h:1?name=remote")
    cls, kwargs = cfg.endpoints[0].connection_params(cfg.base_connection_options())
    assert cls.__name__ == "UnixDomainSocketConnection" and kwargs["path"] == "/tmp/redis.sock"
    assert cfg.endpoints[0].weight == 3


def test_dict_form_matches_string_form() -> None:
    from_dict = FailoverConfig.from_dict(
        {
            "name": "cache",
            "endpoints": [
                {"name": "us-east", "url": "redis://10.0.0.1:6379/0", "weight": 2, "socket_timeout": 0.5},
                "redis://10.1.0.1:6379/0?name=eu-west",
            ],
            "probe_interval": 2,
            "decode_responses": True,
        }
    )
    assert from_dict.name == "cache"
    assert from_dict.probe_interval == 2.0
    assert from_dict.client_options == {"decode_responses": True}
    assert from_dict.endpoints[0].options == {"socket_timeout": 0.5}
    assert [ep.name for ep in from_dict.endpoints] == ["us-east", "eu-west"]
    assert FailoverConfig.from_dict({"endpoints": "redis://a:1?name=x;redis://b:1?name=y"}).endpoints[1].name == "y"


def test_python_objects() -> None:
    cfg = FailoverConfig(endpoints=(EndpointConfig("a", "redis://h:1/0", 2), EndpointConfig("b", "redis://h:2/0")), failback_grace_period=30)
    assert cfg.failback_grace_period == 30.0
    assert cfg.endpoint("b").weight == 1.0


def test_default_names_are_host_port() -> None:
    cfg = FailoverConfig.from_string("redis://Redis-US:6379;redis://redis-eu")
    assert [ep.name for ep in cfg.endpoints] == ["redis-us:6379", "redis-eu:6379"]


@pytest.mark.parametrize(
    ("source", "setting", "fix_words"),
    [
        ("", "endpoints", "at least one"),
        ("http://h:1", ".url", "redis://"),
        ("redis://a:1?name=x;redis://b:1?name=x", ".name", "unique"),
        ("redis://a:1?weight=0", ".weight", "0.001 to"),
        ("redis://a:1?weight=-2", ".weight", "0.001 to"),
        ("redis://a:1?weight=heavy", ".weight", "number"),
        ("redis://a:1?name=bad name", ".name", "letters"),
        ("redis://a:1?bogus_key=1", "bogus_key", "spelling"),
        ("redis://a:notaport/0", ".url", "6379"),
    ],
)
def test_bad_strings_raise_configuration_error(source: str, setting: str, fix_words: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        FailoverConfig.from_string(source)
    assert isinstance(info.value, ValueError)
    assert setting in info.value.setting
    assert fix_words in info.value.fix


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"probe_interval": -1}, "probe_interval"),
        ({"probe_interval": 0}, "probe_interval"),
        ({"health_check_timeout": "soon"}, "health_check_timeout"),
        ({"failback_grace_period": -5}, "failback_grace_period"),
        ({"socket_timeout": float("inf")}, "socket_timeout"),
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"health_check_probes": 1.5}, "health_check_probes"),
        ({"health_check_policy": "most"}, "health_check_policy"),
        ({"retry_on_failover": "sometimes"}, "retry_on_failover"),
        ({"auto_failback": "yes"}, "auto_failback"),
        ({"socket_timout": 1}, "socket_timout"),
    ],
)
def test_bad_engine_options(options: dict[str, object], setting: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        FailoverConfig.from_string("redis://a:1", **options)  # type: ignore[arg-type]
    assert info.value.setting == setting
    assert "Fix:" in str(info.value)


def test_typo_gets_a_suggestion() -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'health_check_timeout'"):
        FailoverConfig.from_dict({"endpoints": "redis://a:1", "health_check_timout": 1})


def test_unknown_endpoint_option() -> None:
    with pytest.raises(ConfigurationError, match=r"endpoints\[0\]\.sockettimeout"):
        FailoverConfig.from_dict({"endpoints": [{"url": "redis://a:1", "sockettimeout": 1}]})


def test_constructor_rejects_unknown_options_at_startup() -> None:
    with pytest.raises(ConfigurationError, match="decode_response"):
        FailoverRedis.from_url("redis://127.0.0.1:1?name=a", name="cfgtest", decode_response=True)


def test_missing_endpoints_and_unknown_name() -> None:
    with pytest.raises(ConfigurationError, match="endpoints"):
        FailoverRedis()
    with pytest.raises(ConfigurationError, match="no configuration named"):
        FailoverRedis(name="never-configured")


def test_known_connection_options_come_from_redis_py() -> None:
    names = connection_option_names()
    assert {"socket_timeout", "ssl_ca_certs", "decode_responses", "username", "password", "client_name"} <= names
    assert "host" not in names and "event_dispatcher" not in names


def test_finite_socket_timeouts_by_default() -> None:
    cfg = FailoverConfig.from_string("redis://a:1")
    _, kwargs = cfg.endpoints[0].connection_params(cfg.base_connection_options())
    assert 0 < kwargs["socket_timeout"] < 5
    assert 0 < kwargs["socket_connect_timeout"] < 5


def test_repr_masks_password() -> None:
    cfg = FailoverConfig.from_string("redis://user:s3cretpw@h:1/0?name=a")
    assert "s3cretpw" not in repr(cfg)
    assert "s3cretpw" not in repr(cfg.endpoints[0])
