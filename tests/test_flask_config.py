"""GeoFailover extension: settings, errors at init_app, several apps and instances, per-app state."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("flask", reason="Flask integration tests need the flask extra: pip install geofailover[flask]")

from flask import Flask

from geofailover_core import ConfigurationError, FailoverRedis, registry
from geofailover_core.pool import FailoverBlockingConnectionPool
from geofailover_flask import GeoFailover

from .test_flask_support import FAST, engine_url, new_app

# Never contacted: engines start lazily, so configuration tests need no server.
UNUSED = "redis://127.0.0.1:1/0?name=a&weight=2;redis://127.0.0.1:2/0?name=b"


@pytest.fixture(autouse=True)
def _close_engines() -> Iterator[None]:
    yield
    registry.close_all()


def _init(**config: object) -> Flask:
    app = new_app(**config)
    GeoFailover().init_app(app)
    return app


def test_missing_settings_name_the_key_and_the_fix() -> None:
    with pytest.raises(ConfigurationError) as info:
        _init()
    message = str(info.value)
    assert "GEOFAILOVER_URL" in message and "missing" in message
    assert "GEOFAILOVER_ENDPOINTS" in message and "from_prefixed_env" in message


def test_url_and_endpoints_together_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match=r"GEOFAILOVER_URL / GEOFAILOVER_ENDPOINTS.*both are set"):
        _init(GEOFAILOVER_URL=UNUSED, GEOFAILOVER_ENDPOINTS=["redis://127.0.0.1:1/0"])


@pytest.mark.parametrize(
    ("config", "pattern"),
    [
        ({"GEOFAILOVER_URL": ""}, r"'GEOFAILOVER_URL': no endpoints configured"),
        ({"GEOFAILOVER_URL": " ; "}, r"'GEOFAILOVER_URL': no endpoints configured"),
        ({"GEOFAILOVER_URL": ["redis://x"]}, r"'GEOFAILOVER_URL': expected a string.*GEOFAILOVER_ENDPOINTS"),
        ({"GEOFAILOVER_ENDPOINTS": "redis://x:1/0"}, r"'GEOFAILOVER_ENDPOINTS': a string, expected a list.*GEOFAILOVER_URL"),
        ({"GEOFAILOVER_ENDPOINTS": []}, r"'GEOFAILOVER_ENDPOINTS': no endpoints configured"),
        ({"GEOFAILOVER_ENDPOINTS": {"url": "redis://x"}}, r"'GEOFAILOVER_ENDPOINTS': expected a list"),
        ({"GEOFAILOVER_URL": UNUSED, "GEOFAILOVER_OPTIONS": "fast"}, r"'GEOFAILOVER_OPTIONS': expected a dict"),
        ({"GEOFAILOVER_URL": UNUSED, "GEOFAILOVER_OPTIONS": {"socket_timout": 1}}, r"GEOFAILOVER_OPTIONS\['socket_timout'\].*did you mean 'socket_timeout'"),
        ({"GEOFAILOVER_URL": UNUSED, "GEOFAILOVER_OPTIONS": {"failback_grace_period": -1}}, r"GEOFAILOVER_OPTIONS\['failback_grace_period'\].*out of range"),
        ({"GEOFAILOVER_URL": UNUSED, "GEOFAILOVER_OPTIONS": {"endpoints": UNUSED}}, r"GEOFAILOVER_URL / GEOFAILOVER_OPTIONS\['endpoints'\].*given in both places"),
        ({"GEOFAILOVER_URL": UNUSED, "GEOFAILOVER_OPTIONS": {"max_connections": 0}}, r"GEOFAILOVER_OPTIONS\['max_connections'\].*>= 1"),
        ({"GEOFAILOVER_URL": UNUSED, "GEOFAILOVER_OPTIONS": {"blocking_pool": "yes"}}, r"GEOFAILOVER_OPTIONS\['blocking_pool'\].*True or False"),
        ({"GEOFAILOVER_URL": UNUSED, "GEOFAILOVER_OPTIONS": {"pool_timeout": 0}}, r"GEOFAILOVER_OPTIONS\['pool_timeout'\]"),
        ({"GEOFAILOVER_URL": "http://x:1/0"}, r"GEOFAILOVER_URL\['x:1'\]\.url.*scheme 'http'"),
        ({"GEOFAILOVER_URL": "redis://x:1/0?name=a;redis://y:1/0?name=a"}, r"GEOFAILOVER_URL\['a'\]\.name.*duplicate"),
        ({"GEOFAILOVER_URL": "redis://x:1/0?weight=0"}, r"GEOFAILOVER_URL\['x:1'\]\.weight.*out of range"),
        ({"GEOFAILOVER_ENDPOINTS": [{"name": "a"}]}, r"GEOFAILOVER_ENDPOINTS\[0\]\.url.*missing"),
        ({"GEOFAILOVER_ENDPOINTS": [{"url": "redis://x:1/0", "wieght": 2}]}, r"GEOFAILOVER_ENDPOINTS\[0\]\.wieght.*did you mean 'weight'"),
        ({"GEOFAILOVER_ENDPOINTS": [42]}, r"GEOFAILOVER_ENDPOINTS\[0\].*expected a dict or URL"),
    ],
)
def test_bad_settings_raise_at_init_app_naming_the_flask_key(config: dict[str, object], pattern: str) -> None:
    with pytest.raises(ConfigurationError, match=pattern) as info:
        _init(**config)
    assert "Fix:" in str(info.value)


def test_errors_never_quote_a_password() -> None:
    with pytest.raises(ConfigurationError) as info:
        _init(GEOFAILOVER_URL="redis://:hunter2-secret@x:1/0?name=a;redis://:hunter2-secret@y:1/0?name=a")
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        _init(GEOFAILOVER_URL="redis://:hunter2-secret@x:1/0?nmae=a")
    assert "hunter2" not in str(info.value)


def test_invalid_instance_names_are_refused() -> None:
    for bad in ("Sessions", "a-b", "", "1st"):
        with pytest.raises(ConfigurationError, match="not a valid instance name"):
            GeoFailover(name=bad)


def test_endpoints_as_a_list_of_dicts_and_engine_options() -> None:
    app = _init(
        GEOFAILOVER_ENDPOINTS=[
            {"name": "us-east", "url": "redis://127.0.0.1:1/0", "weight": 2, "socket_timeout": 0.5},
            "redis://127.0.0.1:2/0?name=eu-west",
        ],
        GEOFAILOVER_OPTIONS={"failback_grace_period": 7, "decode_responses": True, "app_label": "web"},
    )
    geo_state = app.extensions["geofailover"]["default"]
    assert geo_state.engine.endpoint_names == ["us-east", "eu-west"]
    assert geo_state.engine.name == "default"
    assert geo_state.config.failback_grace_period == 7
    assert geo_state.config.app_label == "web"
    assert geo_state.client.get_encoder().decode_responses is True


def test_settings_come_from_the_environment_via_from_prefixed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_GEOFAILOVER_URL", UNUSED)
    monkeypatch.setenv("FLASK_GEOFAILOVER_OPTIONS", '{"failback_grace_period": 3}')
    app = Flask("envapp")
    app.config.from_prefixed_env()
    geo = GeoFailover(app)
    assert geo.get_engine(app).endpoint_names == ["a", "b"]
    assert geo.get_engine(app).config.failback_grace_period == 3


def test_client_is_a_failover_redis_inside_an_app_context_only() -> None:
    geo = GeoFailover()
    app = new_app(GEOFAILOVER_URL=UNUSED)
    geo.init_app(app)
    with app.app_context():
        assert isinstance(geo.client, FailoverRedis)
        assert geo.client is geo.get_client(app)
        assert geo.engine is geo.client.geofailover
    with pytest.raises(RuntimeError, match="application context"):
        geo.client  # noqa: B018 - the property is the thing under test


def test_an_app_without_init_app_gets_a_clear_error() -> None:
    geo = GeoFailover()
    app = new_app(GEOFAILOVER_URL=UNUSED)
    with app.app_context(), pytest.raises(RuntimeError, match=r"not initialised on app .*init_app"):
        geo.client  # noqa: B018


def test_init_app_twice_on_one_app_is_refused() -> None:
    geo = GeoFailover()
    app = new_app(GEOFAILOVER_URL=UNUSED)
    geo.init_app(app)
    with pytest.raises(RuntimeError, match="already initialised"):
        geo.init_app(app)
    with pytest.raises(RuntimeError, match="already initialised"):
        GeoFailover().init_app(app)


def test_the_extension_keeps_no_per_app_state() -> None:
    geo = GeoFailover()
    before = dict(vars(geo))
    app = new_app(GEOFAILOVER_URL=UNUSED)
    geo.init_app(app)
    assert vars(geo) == before == {"name": "default"}
    assert set(app.extensions["geofailover"]) == {"default"}


def test_one_extension_serves_several_apps_and_identical_settings_share_one_engine() -> None:
    geo = GeoFailover()
    first, second = new_app(GEOFAILOVER_URL=UNUSED), new_app(GEOFAILOVER_URL=UNUSED)
    geo.init_app(first)
    geo.init_app(second)
    assert geo.get_engine(first) is geo.get_engine(second)
    assert geo.get_client(first) is not geo.get_client(second)  # each app its own pool


def test_two_apps_with_different_endpoints_need_different_names() -> None:
    geo = GeoFailover()
    geo.init_app(new_app(GEOFAILOVER_URL=UNUSED))
    other = new_app(GEOFAILOVER_URL="redis://127.0.0.1:3/0?name=c")
    with pytest.raises(ConfigurationError) as info:
        geo.init_app(other)
    assert "GEOFAILOVER_OPTIONS['name']" in str(info.value)
    assert "already in use" in str(info.value)
    renamed = new_app(GEOFAILOVER_URL="redis://127.0.0.1:3/0?name=c", GEOFAILOVER_OPTIONS={"name": "other-app"})
    geo.init_app(renamed)
    assert geo.get_engine(renamed).name == "other-app"
    assert geo.get_engine(renamed).endpoint_names == ["c"]


def test_named_instances_read_their_own_keys() -> None:
    geo = GeoFailover()
    sessions = GeoFailover(name="sessions")
    app = new_app(GEOFAILOVER_URL=UNUSED, GEOFAILOVER_SESSIONS_URL="redis://127.0.0.1:3/0?name=s1;redis://127.0.0.1:4/0?name=s2")
    geo.init_app(app)
    with pytest.raises(ConfigurationError, match=r"GEOFAILOVER_SESSIONS_URL.*missing"):
        sessions.init_app(new_app(GEOFAILOVER_URL=UNUSED, GEOFAILOVER_OPTIONS={"name": "x"}))
    sessions.init_app(app)
    assert app.config["GEOFAILOVER_SESSIONS_OPTIONS"] == {}  # setdefault'ed
    assert sessions.get_engine(app).name == "sessions"
    assert sessions.get_engine(app).endpoint_names == ["s1", "s2"]
    assert geo.get_engine(app).endpoint_names == ["a", "b"]
    assert list(app.extensions["geofailover"]) == ["default", "sessions"]


def test_pool_options_size_the_clients_pool() -> None:
    app = _init(GEOFAILOVER_URL=UNUSED, GEOFAILOVER_OPTIONS={"max_connections": 7})
    assert app.extensions["geofailover"]["default"].client.connection_pool.max_connections == 7
    registry.close_all()
    app = _init(GEOFAILOVER_URL=UNUSED, GEOFAILOVER_OPTIONS={"blocking_pool": True, "max_connections": 3, "pool_timeout": 2})
    pool = app.extensions["geofailover"]["default"].client.connection_pool
    assert isinstance(pool, FailoverBlockingConnectionPool)
    assert pool.max_connections == 3 and pool.timeout == 2


def test_make_client_takes_connection_options_only() -> None:
    geo = GeoFailover()
    app = new_app(GEOFAILOVER_URL=UNUSED)
    geo.init_app(app)
    text_client = geo.make_client(app, decode_responses=True)
    assert text_client.geofailover is geo.get_engine(app)
    assert text_client.get_encoder().decode_responses is True
    assert geo.get_client(app).get_encoder().decode_responses is False
    with pytest.raises(ConfigurationError, match=r"make_client\['failback_grace_period'\].*GEOFAILOVER_OPTIONS"):
        geo.make_client(app, failback_grace_period=1)
    with pytest.raises(ConfigurationError, match="did you mean 'decode_responses'"):
        geo.make_client(app, decode_response=True)
    with pytest.raises(ConfigurationError, match=r"make_client\['zzz'\]\": unknown option. Fix: use redis-py connection options"):
        geo.make_client(app, zzz=1)


def test_status_and_reprs_hold_no_secrets(redis_server_factory) -> None:
    servers = redis_server_factory(2, password="s3cr3t-pw")
    geo = GeoFailover()
    app = new_app(GEOFAILOVER_URL=engine_url(servers), GEOFAILOVER_OPTIONS=FAST)
    geo.init_app(app)
    assert geo.get_client(app).incr("n") == 1
    text = f"{geo.status(app)} {geo!r} {geo.get_client(app)!r} {geo.get_engine(app)!r} {app.extensions['geofailover']}"
    assert "s3cr3t" not in text
    assert "***" in str(geo.status(app))
