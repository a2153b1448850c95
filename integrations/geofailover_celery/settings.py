"""Celery settings -> one geofailover engine per role (broker, result backend).

Two URL forms, because a URL is where Celery and kombu look for the broker
and the result backend, and where they log it from:

* a ``;`` list of complete URLs, one per endpoint, carrying our ``name`` and
  ``weight`` query keys::

      geofailover://us:6379/0?name=us-east&weight=2;geofailover://eu:6379/0?name=eu-west&weight=1

  ``geofailover://`` stands for ``redis://``; ``geofailover+rediss://`` and
  ``geofailover+unix://`` for TLS and Unix sockets. Chunks after the first may
  also be written as plain ``redis://``/``rediss://``/``unix://`` URLs.

* a *named* form, ``geofailover://NAME`` (no port, path, query or password),
  whose endpoints sit in the transport options, so that passwords need not be
  in a URL that every log line quotes::

      broker_url = "geofailover://broker"
      broker_transport_options = {"geofailover": {"endpoints": [...], ...}}

  When the options list no endpoints, ``NAME`` must be an engine already
  configured in this process (e.g. by ``FailoverRedis(endpoints=..., name=NAME)``).

Engine options (``health_check_interval``, ``failback_grace_period``...) and
redis-py connection options go in the same ``"geofailover"`` dict, next to
the adapter's own options (:data:`ADAPTER_DEFAULTS`). Every mistake raises
:class:`~geofailover_core.errors.ConfigurationError` naming the Celery setting.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from geofailover_core.config import FailoverConfig
from geofailover_core.engine import FailoverEngine
from geofailover_core.errors import ConfigurationError
from geofailover_core.masking import mask_url
from geofailover_core.registry import get_engine, lookup

Role = Literal["broker", "backend"]

SCHEME = "geofailover"

# URL scheme of one chunk -> the redis-py scheme of the endpoint.
_CHUNK_SCHEMES = {
    "geofailover": "redis",
    "geofailover+redis": "redis",
    "geofailover+rediss": "rediss",
    "geofailover+unix": "unix",
    "redis": "redis",
    "rediss": "rediss",
    "unix": "unix",
}
_BACK = {"redis": "geofailover", "rediss": "geofailover+rediss", "unix": "geofailover+unix"}

#: The adapter's own options (in the ``"geofailover"`` dict) and their defaults.
ADAPTER_DEFAULTS: dict[str, Any] = {
    # Broker: move messages left on healthy non-active endpoints (the
    # secondary after a failback, the primary's persisted backlog while we
    # are on the secondary) into the active one. Turn off for Active-Active
    # databases whose lists replicate: there the data is already everywhere.
    "drain": True,
    # Broker: seconds between two drain rounds of a consuming worker.
    "drain_interval": 1.0,
    # Broker: messages moved per endpoint and round at most.
    "drain_batch": 500,
    # Broker: take messages with an atomic pop-and-record script, woken by a
    # non-destructive BLMOVE, instead of kombu's BRPOP, whose popped message
    # is lost when the endpoint fails before the reply arrives. Redis >= 6.2.
    "reliable_pop": True,
    # Broker: how often a consumer checks whether the engine moved (a string
    # comparison; the reconnect happens within about this long of a switch).
    "switch_check_interval": 0.1,
    # Result backend: when the active endpoint lacks a result (or has only a
    # non-final state), also look on the other healthy endpoints.
    "fallback_reads": True,
    # Result backend: while AsyncResult.get() waits, re-read the pending
    # results this often (seconds; 0 turns it off). A worker whose engine has
    # not switched yet may store a result on the endpoint we just left, and
    # its PUBLISH reaches nobody listening there.
    "result_refetch_interval": 1.0,
}

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
    role: Role
    named: bool

    @property
    def config(self) -> FailoverConfig:
        return self.engine.config

    def as_uri(self, include_password: bool = False) -> str:
        return render_uri(self.engine.config, include_password=include_password)


def split_chunks(url: str | list[str] | tuple[str, ...]) -> list[str]:
    """The endpoint URLs of a ``;`` string (or of kombu's already split list)."""
    if isinstance(url, (list, tuple)):
        parts: list[str] = []
        for item in url:
            parts.extend(split_chunks(item))
        return parts
    return [part.strip() for part in url.split(";") if part.strip()]


def _is_named(chunks: list[str]) -> str | None:
    """``geofailover://NAME`` -> NAME; None for an endpoint list."""
    if len(chunks) != 1:
        return None
    parts = urlsplit(chunks[0])
    if parts.scheme != SCHEME or parts.query or parts.path not in ("", "/") or parts.fragment:
        return None
    netloc = parts.netloc
    if not netloc or ":" in netloc or "@" in netloc:
        return None
    return netloc


def endpoint_url(chunk: str, setting: str, index: int) -> str:
    """One chunk of a ``geofailover`` URL -> the endpoint's ``redis://`` URL."""
    scheme, sep, rest = chunk.partition("://")
    target = _CHUNK_SCHEMES.get(scheme.lower()) if sep else None
    if target is None:
        raise ConfigurationError(
            f"{setting}[{index}]",
            f"{mask_url(chunk)!r} is not a geofailover URL",
            "write geofailover://host:port/db?name=NAME&weight=N (geofailover+rediss:// for TLS), separated by ';'",
        )
    return f"{target}://{rest}"


def _options(raw: Any, setting: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigurationError(setting, f"expected a dict, got {type(raw).__name__}", "write {'geofailover': {...engine options...}}")
    return dict(raw)


def _adapter_options(data: dict[str, Any], setting: str) -> dict[str, Any]:
    """Pop and validate the adapter's own keys from ``data``."""
    options = dict(ADAPTER_DEFAULTS)
    for key in ADAPTER_DEFAULTS:
        if key in data:
            options[key] = data.pop(key)
    for key in ("drain", "fallback_reads", "reliable_pop"):
        if not isinstance(options[key], bool):
            raise ConfigurationError(f"{setting}.{key}", f"expected True or False, got {options[key]!r}", "write True or False")
    for key in ("drain_interval", "switch_check_interval", "result_refetch_interval"):
        value = options[key]
        zero_ok = key == "result_refetch_interval"
        if (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value < 0 or (value == 0 and not zero_ok)
        ):
            fix = "give e.g. 1.0, or 0 to turn it off" if zero_ok else "give e.g. 1.0"
            raise ConfigurationError(f"{setting}.{key}", f"must be a positive number of seconds, got {value!r}", fix)
        options[key] = float(value)
    batch = options["drain_batch"]
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigurationError(f"{setting}.drain_batch", f"must be an integer >= 1, got {batch!r}", "give e.g. 500")
    return options


def _reword(exc: ConfigurationError, url_setting: str, options_setting: str, from_url: bool) -> ConfigurationError:
    """Name the Celery setting the user actually wrote."""
    where = url_setting if from_url and exc.setting.startswith("endpoints") else options_setting
    return ConfigurationError(f"{where}: {exc.setting}", exc.problem, exc.fix)


def resolve(url: str | list[str] | tuple[str, ...] | None, raw_options: Any, role: Role) -> Resolved:
    """Build (or find) the engine that ``url`` and the ``"geofailover"`` options describe."""
    url_setting, options_setting, default_name = _ROLE_NAMES[role]
    if not url:
        raise ConfigurationError(url_setting, "empty", "write geofailover://host:port/db?name=...;... or geofailover://NAME")
    chunks = split_chunks(url)
    data = _options(raw_options, options_setting)
    options = _adapter_options(data, options_setting)
    name = _is_named(chunks)
    if name is not None:
        if "name" in data and data["name"] != name:
            raise ConfigurationError(
                f"{options_setting}.name", f"{data['name']!r} differs from the name {name!r} in {url_setting}",
                "use the same name in both places, or drop 'name' from the options",
            )
        data["name"] = name
        if "endpoints" not in data:
            if len(data) > 1:
                raise ConfigurationError(
                    f"{options_setting}.endpoints", f"missing for {url_setting} geofailover://{name}",
                    "list the endpoints there (engine options alone need endpoints to apply to)",
                )
            try:
                engine = lookup(name)
            except KeyError:
                raise ConfigurationError(
                    f"{options_setting}.endpoints", f"missing, and no engine named {name!r} is configured in this process",
                    f"list the endpoints in {options_setting}['endpoints'], or write them into {url_setting} separated by ';'",
                ) from None
            return Resolved(engine, options, role, named=True)
        data.setdefault("app_label", "celery")
        try:
            config = FailoverConfig.from_dict(data)
        except ConfigurationError as exc:
            raise _reword(exc, url_setting, options_setting, from_url=False) from None
        return Resolved(get_engine(config), options, role, named=True)
    if "endpoints" in data or "url" in data:
        raise ConfigurationError(
            f"{options_setting}.endpoints", f"given although {url_setting} already lists endpoints",
            f"list the endpoints in one place: in {url_setting}, or in the options with {url_setting} = 'geofailover://NAME'",
        )
    endpoints = [endpoint_url(chunk, url_setting, i) for i, chunk in enumerate(chunks)]
    data.setdefault("name", default_name)
    data.setdefault("app_label", "celery")  # how these processes show in `geofailover status`
    try:
        config = FailoverConfig.from_dict({"endpoints": endpoints, **data})
    except ConfigurationError as exc:
        raise _reword(exc, url_setting, options_setting, from_url=True) from None
    return Resolved(get_engine(config), options, role, named=False)


def render_uri(config: FailoverConfig, include_password: bool = False) -> str:
    """The endpoints as one ``geofailover`` URL, passwords masked unless asked for.

    This is what kombu's and Celery's banners and log lines show (``as_uri``),
    so it lists every endpoint with its name and weight.
    """
    chunks = []
    for ep in config.endpoints:
        url = ep.url if include_password else ep.masked_url
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        query += [("name", ep.name), ("weight", f"{ep.weight:g}")]
        scheme = _BACK.get(parts.scheme, parts.scheme)
        chunks.append(f"{scheme}://{parts.netloc}{parts.path}?{urlencode(query, safe='*')}")
    return ";".join(chunks)
