"""No secret ever appears in status, logs, reprs or exception messages."""

from __future__ import annotations

import json
import logging

import pytest
import redis

from geofailover_core import FailoverConfig, FailoverRedis, NoHealthyEndpointError
from geofailover_core.masking import mask_text, mask_url
from geofailover_core.testing import wait_until

SECRET = "Sup3r-S3cret-pw"


@pytest.fixture
def protected(redis_server_factory) -> list:  # type: ignore[no-untyped-def,type-arg]
    return redis_server_factory(2, password=SECRET)


def test_secret_never_leaks(protected, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    urls = ";".join(
        f"redis://:{SECRET}@{s.host}:{s.port}/0?name={n}&weight={w}" for s, n, w in zip(protected, "ab", (2, 1), strict=True)
    )
    client = FailoverRedis.from_url(urls, name="secret", socket_timeout=0.3, probe_interval=0.1, health_check_timeout=0.2)
    texts: list[str] = []
    try:
        client.geofailover.on("*", lambda e: texts.append(json.dumps(e.as_dict())))
        assert client.set("k", 1)
        texts += [repr(client), repr(client.connection_pool), repr(client.geofailover), repr(client.geofailover.config)]
        texts.append(str(client.connection_pool.connection_kwargs))
        protected[0].kill()
        assert client.get("k") is None
        protected[1].kill()
        wait_until(lambda: client.geofailover.active is None, timeout=3)
        with pytest.raises(NoHealthyEndpointError) as info:
            client.get("k")
        texts.append(str(info.value))
        texts.append(json.dumps(client.geofailover.status()))
        client.geofailover.events.flush()
    finally:
        client.geofailover.close()
    texts.append(caplog.text)
    for text in texts:
        assert SECRET not in text
    assert "***" in json.dumps(texts)


def test_wrong_password_error_does_not_echo_it(protected) -> None:
    client = FailoverRedis.from_url(
        f"redis://:wrong-{SECRET}@{protected[0].host}:{protected[0].port}/0?name=a",
        name="wrongpw",
        socket_timeout=0.3,
        probe_interval=0.1,
        retry_on_failover="none",
    )
    try:
        with pytest.raises(redis.exceptions.RedisError) as info:
            client.ping()
        assert SECRET not in str(info.value)
        client.geofailover.check_now()
        assert SECRET not in json.dumps(client.geofailover.status())
    finally:
        client.geofailover.close()


def test_config_error_never_quotes_the_url_password() -> None:
    with pytest.raises(ValueError) as info:
        FailoverConfig.from_string(f"redis://:{SECRET}@h:1/0?name=a;redis://:{SECRET}@h:2/0?name=a")
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("rediss://user:pw@h:1/0", "rediss://user:***@h:1/0"),
        ("redis://h:1/0?password=pw&db=1", "redis://h:1/0?password=***&db=1"),
        ("redis://h:1/0", "redis://h:1/0"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_mask_text_masks_urls_inside_messages_and_known_secrets() -> None:
    text = "cannot connect to redis://app:hunter22@db:6379 with token=abc123; pw hunter22"
    masked = mask_text(text, ("hunter22",))
    assert "hunter22" not in masked and "abc123" not in masked
