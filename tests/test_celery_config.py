"""Celery/kombu settings -> engines: URL forms, errors that name the setting, masked URIs, signals."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("celery")

from celery import Celery
from kombu import Connection

import geofailover_celery
from geofailover_celery import signals
from geofailover_celery.backend import GeoFailoverBackend
from geofailover_celery.settings import render_uri, resolve
from geofailover_celery.transport import EndpointSwitched, Transport
from geofailover_core import FailoverRedis, registry
from geofailover_core.errors import ConfigurationError

_names = itertools.count()
URL = "geofailover://10.0.0.1:6379/0?name=us-east&weight=2;geofailover://10.0.0.2:6380/0?name=eu-west&weight=1"
SECRET_URL = "geofailover://:hunter2-pw@10.0.0.1:6379/0?name=us-east&weight=2;geofailover+rediss://user:hunter2-pw@10.0.0.2:6380/0?name=eu-west"


@pytest.fixture(autouse=True)
def _clean_registry() -> Iterator[None]:
    yield
    registry.close_all()


def unique() -> dict[str, Any]:
    return {"name": f"cfg{next(_names)}"}


def test_import_registers_the_scheme_with_kombu_and_celery() -> None:
    from celery.app.backends import BACKEND_ALIASES
    from kombu.transport import TRANSPORT_ALIASES

    assert TRANSPORT_ALIASES["geofailover"] == geofailover_celery.TRANSPORT
    assert BACKEND_ALIASES["geofailover"] == geofailover_celery.BACKEND
    conn = Connection(URL, transport_options={"geofailover": unique()})
    assert isinstance(conn.transport, Transport)
    assert conn.transport.driver_type == "redis", "Celery branches on the driver type"
    assert EndpointSwitched in conn.connection_errors


def test_endpoint_list_form() -> None:
    resolved = resolve(URL, {"failback_grace_period": 5, **unique()}, "broker")
    config = resolved.engine.config
    assert [(ep.name, ep.weight, ep.url) for ep in config.endpoints] == [
        ("us-east", 2.0, "redis://10.0.0.1:6379/0"),
        ("eu-west", 1.0, "redis://10.0.0.2:6380/0"),
    ]
    assert config.failback_grace_period == 5
    assert resolved.options["drain"] is True


def test_default_names_keep_broker_and_results_apart() -> None:
    broker = resolve(URL, None, "broker")
    results = resolve(URL.replace("/0?", "/1?"), None, "backend")
    assert (broker.engine.name, results.engine.name) == ("celery-broker", "celery-results")


def test_tls_and_unix_chunks_and_plain_redis_after_the_first() -> None:
    url = "geofailover+rediss://10.0.0.1:6380/0?name=a;redis://10.0.0.2:6379/0?name=b;geofailover+unix:///tmp/r.sock?db=0&name=c"
    config = resolve(url, unique(), "broker").engine.config
    assert [ep.url.split("://")[0] for ep in config.endpoints] == ["rediss", "redis", "unix"]
    assert render_uri(config).startswith("geofailover+rediss://10.0.0.1:6380/0?name=a&weight=1;geofailover://10.0.0.2")
    assert "geofailover+unix:///tmp/r.sock?db=0&name=c" in render_uri(config)


def test_named_form_with_endpoints_in_the_options() -> None:
    options = {"endpoints": ["redis://:pw-in-settings@10.0.0.1:6379/0?name=a&weight=2", "redis://10.0.0.2:6379/0?name=b"], "drain": False}
    resolved = resolve("geofailover://jobs", options, "broker")
    assert resolved.engine.name == "jobs"
    assert resolved.options["drain"] is False
    assert "pw-in-settings" not in resolved.as_uri()


def test_named_form_attaches_to_an_engine_configured_elsewhere() -> None:
    client = FailoverRedis(endpoints=["redis://10.0.0.1:6379/3?name=a"], name="shared-elsewhere")
    try:
        resolved = resolve("geofailover://shared-elsewhere", None, "backend")
        assert resolved.engine is client.geofailover
    finally:
        client.close()


@pytest.mark.parametrize(
    ("url", "options", "role", "setting", "fix"),
    [
        ("geofailover://nowhere", None, "broker", "broker_transport_options['geofailover']['endpoints']", "list the endpoints"),
        ("geofailover://nowhere", {"probe_interval": 1}, "backend",
         "result_backend_transport_options['geofailover']['endpoints']", "list the endpoints"),
        (URL, {"endpoints": ["redis://x:1/0"]}, "broker", "broker_url / broker_transport_options['geofailover']['endpoints']",
         "keep one of the two"),
        ("geofailover://h:1/0;http://h:2/0", None, "broker", "broker_url[1]", "geofailover://host:port/db"),
        (URL, {"health_check_intervall": 1}, "broker", "broker_transport_options['geofailover']['health_check_intervall']",
         "did you mean 'health_check_interval'"),
        (URL, {"drain": "yes"}, "broker", "broker_transport_options['geofailover']['drain']", "True or False"),
        (URL, {"drain_interval": 0}, "broker", "broker_transport_options['geofailover']['drain_interval']", "e.g. 1.0"),
        (URL, {"reliable_pop": 1}, "broker", "broker_transport_options['geofailover']['reliable_pop']", "True or False"),
        (URL, {"drain_batch": 0}, "broker", "broker_transport_options['geofailover']['drain_batch']", "such as 500"),
        (URL, {"result_refetch_interval": -1}, "backend", "result_backend_transport_options['geofailover']['result_refetch_interval']",
         "or 0 to turn it off"),
        ("geofailover://h:1/0?name=a&weight=-1", None, "backend", "result_backend['a'].weight", "0.001 to"),
        ("", None, "broker", "broker_url", "geofailover://"),
        ("geofailover://x", {"name": "y", "endpoints": ["redis://h:1/0"]}, "broker", "broker_transport_options['geofailover']['name']", "same name"),
        (URL, "not a dict", "broker", "broker_transport_options['geofailover']", "write a dict"),
    ],
)
def test_bad_settings_name_the_celery_setting_and_the_fix(url: str, options: Any, role: Any, setting: str, fix: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve(url, options, role)
    assert info.value.setting == setting
    assert fix in str(info.value)


def test_a_bad_chunk_is_quoted_without_its_password() -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve("geofailover://h:1/0;http://:hunter2-pw@h:2/0", None, "broker")
    assert "hunter2" not in str(info.value)


def test_banner_and_log_uris_mask_every_password() -> None:
    app = Celery("masking", set_as_current=False)
    app.conf.broker_url = SECRET_URL
    app.conf.result_backend = SECRET_URL.replace("/0?", "/1?")
    app.conf.broker_transport_options = {"geofailover": {"name": "mask-broker"}}
    app.conf.result_backend_transport_options = {"geofailover": {"name": "mask-results"}}
    try:
        conn = app.connection_for_write()
        for text in (conn.as_uri(), app.backend.as_uri(), repr(conn.transport.engine), str(conn.transport.engine.status())):
            assert "hunter2" not in text, text
        assert conn.as_uri() == (
            "geofailover://:***@10.0.0.1:6379/0?name=us-east&weight=2;"
            "geofailover+rediss://user:***@10.0.0.2:6380/0?name=eu-west&weight=1"
        )
        assert "hunter2-pw" in conn.as_uri(include_password=True)
        assert isinstance(app.backend, GeoFailoverBackend)
    finally:
        app.close()


def test_kombu_does_not_switch_urls_under_the_engine() -> None:
    """kombu treats ';' as its own failover list; switching would re-parse a chunk it cannot read."""
    conn = Connection(URL, transport_options={"geofailover": unique()})
    conn.transport  # noqa: B018 - creating the transport disarms kombu's cycle
    conn.maybe_switch_next()
    assert conn.transport.engine.endpoint_names == ["us-east", "eu-west"]
    clone = conn.clone()
    clone.transport  # noqa: B018
    clone.maybe_switch_next()
    assert clone.as_uri() == conn.as_uri()


def test_explicit_class_paths_work_without_the_alias() -> None:
    conn = Connection(URL, transport="geofailover_celery.transport:Transport", transport_options={"geofailover": unique()})
    assert isinstance(conn.transport, Transport)
    app = Celery("paths", set_as_current=False)
    app.conf.result_backend = f"geofailover_celery.backend:GeoFailoverBackend+{URL.replace('/0?', '/2?')}"
    app.conf.result_backend_transport_options = {"geofailover": unique()}
    try:
        assert isinstance(app.backend, GeoFailoverBackend)
        assert app.backend.geofailover.endpoint_names == ["us-east", "eu-west"]
    finally:
        app.close()


def test_signals_fire_once_per_switch_per_engine() -> None:
    seen: list[tuple[str, str, str | None, str | None]] = []

    def receiver(sender: str, event: Any, from_endpoint: str | None, to_endpoint: str | None, **kwargs: Any) -> None:
        seen.append((sender, event.kind, from_endpoint, to_endpoint))

    for signal in (signals.failover, signals.failback):
        signal.connect(receiver)
    try:
        options = {"geofailover": {"name": "signalled"}}
        first, second = Connection(URL, transport_options=options), Connection(URL, transport_options=options)
        engine = first.transport.engine
        assert second.transport.engine is engine  # one engine per name: bridged once
        engine.failover_to("eu-west", reason="drill")
        engine.failback()
        assert engine.events.flush()
        assert seen == [("signalled", "failover", "us-east", "eu-west"), ("signalled", "failback", "eu-west", "us-east")]
    finally:
        for signal in (signals.failover, signals.failback):
            signal.disconnect(receiver)


def test_the_backend_class_without_a_url_is_a_clear_error() -> None:
    app = Celery("nourl", set_as_current=False)
    app.conf.result_backend = "geofailover_celery.backend:GeoFailoverBackend"
    try:
        with pytest.raises(ConfigurationError) as info:
            app.backend  # noqa: B018
        assert info.value.setting == "result_backend"
    finally:
        app.close()
