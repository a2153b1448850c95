"""Celery settings -> one geofailover engine per role (broker, result backend).

A URL is where Celery looks for the broker and results, and what it logs:
``geofailover://host:port/db?name=N&weight=W;...`` lists the endpoints, and
``geofailover://NAME`` keeps them (and their passwords) in the transport
options' ``"geofailover"`` dict, with the engine's and the adapter's options.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from geofailover_core import adapters
from geofailover_core.config import FailoverConfig
from geofailover_core.engine import FailoverEngine
from geofailover_core.errors import ConfigurationError
from geofailover_core.masking import mask_url
from geofailover_core.registry import lookup

Role = Literal["broker", "backend"]

SCHEME = "geofailover"

# URL scheme of one chunk -> the redis-py scheme of the endpoint, and back.
_CHUNK_SCHEMES = {
    "geofailover": "redis", "geofailover+redis": "redis", "geofailover+rediss": "rediss", "geofailover+unix": "unix",
    "redis": "redis", "rediss": "rediss", "unix": "unix",
}
_BACK = {"redis": "geofailover", "rediss": "geofailover+rediss", "unix": "geofailover+unix"}

#: The adapter's own options (in the ``"geofailover"`` dict): default and validator (``docs/celery.md``).
OPTIONS: dict[str, tuple[Any, adapters.Validator]] = {
    "drain": (True, adapters.check_bool),
    "drain_interval": (1.0, adapters.check_seconds),
    "drain_batch": (500, functools.partial(adapters.check_count, example=500)),
    "reliable_pop": (True, adapters.check_bool),
    "switch_check_interval": (0.1, adapters.check_seconds),
    "restore_unacked_after": (None, lambda value, setting: None if value is None else adapters.check_seconds(value, setting, example="300")),
    "fallback_reads": (True, adapters.check_bool),
    "fallback_window": (60.0, functools.partial(adapters.check_seconds, zero_ok=True, example="60")),
    "result_refetch_interval": (1.0, functools.partial(adapters.check_seconds, zero_ok=True)),
}
ADAPTER_DEFAULTS: dict[str, Any] = {key: default for key, (default, _) in OPTIONS.items()}

_ROLE_NAMES: dict[Role, tuple[str, str, str]] = {
    # role: (url setting, options setting, default engine name)
    "broker": ("broker_url", "broker_transport_options['geofailover']", "celery-broker"),
    "backend": ("result_backend", "result_backend_transport_options['geofailover']", "celery-results"),
}


@dataclass(frozen=True)
class Resolved:
    """The engine of one role plus the adapter options that go with it."""

    engine: FailoverEngine
    options: dict[str, Any]

    def as_uri(self, include_password: bool = False) -> str:
        return render_uri(self.engine.config, include_password=include_password)


def _named(chunks: list[str]) -> str | None:
    """``geofailover://NAME`` -> NAME; None for an endpoint list."""
    parts = urlsplit(chunks[0])
    if len(chunks) != 1 or parts.scheme != SCHEME or parts.query or parts.path not in ("", "/") or parts.fragment:
        return None
    return parts.netloc if parts.netloc and ":" not in parts.netloc and "@" not in parts.netloc else None


def endpoint_url(chunk: str, setting: str, index: int) -> str:
    """One chunk of a ``geofailover`` URL -> the endpoint's ``redis://`` URL."""
    scheme, sep, rest = chunk.partition("://")
    target = _CHUNK_SCHEMES.get(scheme.lower()) if sep else None
    if target is None:
        raise ConfigurationError(
            f"{setting}[{index}]", f"{mask_url(chunk)!r} is not a geofailover URL",
            "write geofailover://host:port/db?name=NAME&weight=N (geofailover+rediss:// for TLS), separated by ';'",
        )
    return f"{target}://{rest}"


def resolve(url: str | list[str] | tuple[str, ...] | None, raw_options: Any, role: Role) -> Resolved:
    """Build (or find) the engine that ``url`` and the ``"geofailover"`` options describe."""
    url_setting, options_setting, default_name = _ROLE_NAMES[role]
    names = adapters.SettingNames(url_setting, options_setting)
    chunks = adapters.split_endpoints(url, url_setting)
    if not chunks:
        raise ConfigurationError(url_setting, "empty", "write geofailover://host:port/db?name=...;... or geofailover://NAME")
    data = adapters.options_dict(raw_options, options_setting)
    options = adapters.pop_options(data, OPTIONS, names.option)
    defaults = {"name": default_name, "app_label": "celery"}  # how these processes show in `geofailover status`
    name = _named(chunks)
    if name is None:
        endpoints = [endpoint_url(chunk, url_setting, i) for i, chunk in enumerate(chunks)]
        config = adapters.load_config(endpoints, data, names, defaults=defaults)
        return Resolved(adapters.engine_for(config, names), options)
    if data.setdefault("name", name) != name:
        raise ConfigurationError(
            names.option("name"), f"{data['name']!r} differs from the name {name!r} in {url_setting}",
            "use the same name in both places, or drop 'name' from the options",
        )
    if "endpoints" in data:
        names = adapters.SettingNames(names.option("endpoints"), options_setting)
        config = adapters.load_config(data.pop("endpoints"), data, names, defaults=defaults)
        return Resolved(adapters.engine_for(config, names), options)
    if len(data) > 1:
        raise ConfigurationError(
            names.option("endpoints"), f"missing for {url_setting} geofailover://{name}",
            "list the endpoints there (engine options alone need endpoints to apply to)",
        )
    try:
        return Resolved(lookup(name), options)
    except KeyError:
        raise ConfigurationError(
            names.option("endpoints"), f"missing, and no engine named {name!r} is configured in this process",
            f"list the endpoints in {names.option('endpoints')}, or write them into {url_setting} separated by ';'",
        ) from None


def render_uri(config: FailoverConfig, include_password: bool = False) -> str:
    """The endpoints as one ``geofailover`` URL, as banners and log lines show it
    (``as_uri``): every endpoint with its name and weight, passwords masked unless asked for."""
    chunks = []
    for ep in config.endpoints:
        parts = urlsplit(ep.url if include_password else ep.masked_url)
        query = [*parse_qsl(parts.query, keep_blank_values=True), ("name", ep.name), ("weight", f"{ep.weight:g}")]
        chunks.append(f"{_BACK.get(parts.scheme, parts.scheme)}://{parts.netloc}{parts.path}?{urlencode(query, safe='*')}")
    return ";".join(chunks)
