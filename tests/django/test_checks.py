"""System checks catch each bad setting, with an id, the setting and a fix; no secrets."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import BACKEND, GeoSettings

SECRET = "hunter2-very-secret"
GOOD = ["redis://127.0.0.1:6390/0?name=a&weight=2", "redis://127.0.0.1:6391/0?name=b"]


def entry(location: Any = None, **options: Any) -> dict[str, Any]:
    return {"BACKEND": BACKEND, "LOCATION": GOOD if location is None else location, "OPTIONS": options}


def run_checks() -> list[Any]:
    from django.core import checks

    return [m for m in checks.run_checks(tags=[checks.Tags.caches]) if m.id and m.id.startswith("geofailover.")]


CASES: list[tuple[str, dict[str, Any], str, str]] = [
    # (case, CACHES entry, expected id, a word the hint must contain)
    ("no endpoints", entry(location=""), "geofailover.E002", "LOCATION"),
    ("location of wrong type", entry(location=42), "geofailover.E002", "redis://"),
    ("unsupported scheme", entry(location=["http://example.com:80/0?name=a", GOOD[1]]), "geofailover.E003", "redis://"),
    ("port is not a number", entry(location=[f"redis://:{SECRET}@h:notaport/0", GOOD[1]]), "geofailover.E003", "redis://"),
    ("unknown URL query option", entry(location=["redis://h:1/0?name=a&sockettimeout=1", GOOD[1]]), "geofailover.E003", "socket_timeout"),
    ("duplicate names", entry(location=["redis://h1:1/0?name=x", "redis://h2:1/0?name=x"]), "geofailover.E004", "unique"),
    ("weight zero", entry(location=["redis://h1:1/0?name=a&weight=0", GOOD[1]]), "geofailover.E001", "0.001 to"),
    ("negative interval", entry(GEOFAILOVER={"probe_interval": -1}), "geofailover.E001", "0.01 to"),
    ("bad retry policy", entry(GEOFAILOVER={"retry_on_failover": "sometimes"}), "geofailover.E001", "read_only"),
    ("unknown engine option", entry(GEOFAILOVER={"failback_grace": 3}), "geofailover.E005", "failback_grace_period"),
    ("typo in OPTIONS", entry(IGNORE_EXCEPTION=True), "geofailover.E006", "IGNORE_EXCEPTIONS"),
    ("foreign CLIENT_CLASS", entry(CLIENT_CLASS="django_redis.client.DefaultClient"), "geofailover.E007", "GeoFailoverClient"),
    ("CLIENT_CLASS does not import", entry(CLIENT_CLASS="nowhere.Client"), "geofailover.E007", "dotted path"),
    ("foreign CONNECTION_FACTORY", entry(CONNECTION_FACTORY="django_redis.pool.ConnectionFactory"), "geofailover.E008", "GeoFailoverConnectionFactory"),
    ("foreign pool class", entry(CONNECTION_POOL_CLASS="redis.connection.ConnectionPool"), "geofailover.E009", "FailoverPoolMixin"),
    ("foreign redis client class", entry(REDIS_CLIENT_CLASS="redis.client.Redis"), "geofailover.E009", "FailoverRedis"),
    ("sentinel options", entry(SENTINELS=[("h", 26379)]), "geofailover.E010", "SENTINELS"),
    ("endpoints twice", entry(GEOFAILOVER={"endpoints": GOOD}), "geofailover.E012", "one of the two"),
    ("timeout twice", entry(SOCKET_TIMEOUT=1, GEOFAILOVER={"socket_timeout": 2}), "geofailover.E012", "one place"),
    ("pool kwarg overrides address", entry(CONNECTION_POOL_KWARGS={"host": "x"}), "geofailover.E013", "URL"),
    ("unknown pool kwarg", entry(CONNECTION_POOL_KWARGS={"max_connection": 5}), "geofailover.E013", "max_connections"),
    ("client kwargs", entry(REDIS_CLIENT_KWARGS={"decode_responses": True}), "geofailover.E013", "GEOFAILOVER"),
    ("GEOFAILOVER not a dict", entry(GEOFAILOVER="fast"), "geofailover.E014", "dict"),
    ("decode_responses", entry(GEOFAILOVER={"decode_responses": True}), "geofailover.E015", "bytes"),
    ("alias unusable as a name", None, "geofailover.E001", "name"),  # built below: alias with a space
    ("single endpoint", entry(location=GOOD[:1]), "geofailover.W002", "LOCATION"),
    ("close connection", entry(CLOSE_CONNECTION=True), "geofailover.W004", "handshake"),
    ("unread option", entry(MY_OWN_FLAG=1), "geofailover.W005", "W005"),
    ("replica option", entry(REPLICA_READ_ONLY=False), "geofailover.W006", "failover members"),
]


@pytest.mark.parametrize(("case", "cache", "check_id", "hint_word"), CASES, ids=[c[0] for c in CASES])
def test_each_bad_setting_has_its_check(geo_settings: GeoSettings, case: str, cache: dict[str, Any] | None, check_id: str, hint_word: str) -> None:
    alias = "my cache" if cache is None else "default"
    caches = {alias: cache or entry()}
    if alias != "default":
        caches["default"] = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    geo_settings(CACHES=caches)
    messages = run_checks()
    ids = [m.id for m in messages]
    assert check_id in ids, [(m.id, m.msg) for m in messages]
    message = next(m for m in messages if m.id == check_id)
    assert message.obj == f"CACHES[{alias!r}]"
    assert hint_word in (message.hint or "") + message.msg + (message.id or "")
    for m in messages:
        assert SECRET not in f"{m.msg} {m.hint}"


def test_a_good_configuration_has_no_findings(geo_settings: GeoSettings) -> None:
    geo_settings(CACHES={"default": entry(IGNORE_EXCEPTIONS=True, GEOFAILOVER={"failback_grace_period": 30})})
    assert run_checks() == []


def test_two_aliases_one_engine_name_different_endpoints(geo_settings: GeoSettings) -> None:
    other = ["redis://127.0.0.1:7000/0?name=a", "redis://127.0.0.1:7001/0?name=b"]
    geo_settings(
        CACHES={
            "default": entry(GEOFAILOVER={"name": "shared"}),
            "sessions": entry(location=other, GEOFAILOVER={"name": "shared"}),
        }
    )
    assert [m.id for m in run_checks()] == ["geofailover.E011"]


def test_manage_py_check_fails_with_the_messages_and_does_not_crash(geo_settings: GeoSettings) -> None:
    """Django's own cache checks build every backend: ours must not raise there."""
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    geo_settings(CACHES={"default": entry(location=["redis://h:1/0?name=x", "redis://h:2/0?name=x"], CLIENT_CLASS="nowhere.Client")})
    with pytest.raises(SystemCheckError) as info:
        call_command("check")
    text = str(info.value)
    assert "geofailover.E004" in text and "geofailover.E007" in text
    assert "HINT:" in text


def test_first_use_of_a_bad_cache_raises_improperly_configured(geo_settings: GeoSettings) -> None:
    from django.core.cache import caches
    from django.core.exceptions import ImproperlyConfigured

    geo_settings(CACHES={"default": entry(location=[f"redis://:{SECRET}@h:nope/0", GOOD[1]])})
    cache = caches["default"]  # building the backend never raises
    with pytest.raises(ImproperlyConfigured) as info:
        cache.get("k")
    text = str(info.value)
    assert "geofailover.E003" in text and "Fix:" in text and "CACHES['default']" in text
    assert SECRET not in text
    assert "misconfigured" in repr(cache)


def test_missing_app_is_reported(geo_settings: GeoSettings) -> None:
    geo_settings(CACHES={"default": entry()}, INSTALLED_APPS=["django.contrib.sessions"])
    messages = run_checks()
    assert [m.id for m in messages] == ["geofailover.W001"]
    assert "INSTALLED_APPS" in (messages[0].hint or "")


def test_non_geofailover_caches_are_left_alone(geo_settings: GeoSettings) -> None:
    geo_settings(CACHES={"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://h:1/0,redis://h:2/0"}})
    assert run_checks() == []
