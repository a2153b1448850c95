"""Reading ``GEOFAILOVER_*`` keys from ``app.config`` into a core ``FailoverConfig``.

Shared by the extension and the Flask-Caching backend so that both build the
*same* configuration (and therefore share one engine through the core
registry) whichever of ``geo.init_app(app)`` and ``cache.init_app(app)`` runs
first.

Every mistake is reported as a :class:`~geofailover_core.ConfigurationError`
naming the Flask key the user actually wrote (``GEOFAILOVER_OPTIONS['socket_timout']``),
not the core's internal field name, because that is the line they must fix.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from geofailover_core.config import EndpointConfig, FailoverConfig, connection_option_names
from geofailover_core.errors import ConfigurationError
from geofailover_core.masking import mask_text

DEFAULT_INSTANCE = "default"
_INSTANCE_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Options that size the Flask client's connection pool. They are not engine
# options (every client of one engine may size its pool differently), so they
# are taken out of GEOFAILOVER_OPTIONS before the core sees it.
POOL_OPTIONS = ("max_connections", "blocking_pool", "pool_timeout")


@dataclass(frozen=True)
class Keys:
    """The ``app.config`` keys of one named instance."""

    url: str
    endpoints: str
    options: str

    @property
    def example(self) -> str:
        return (
            f"set app.config[{self.url!r}] = 'redis://us.example:6379/0?name=us-east&weight=2;"
            f"redis://eu.example:6379/0?name=eu-west&weight=1' (or FLASK_{self.url} in the environment with "
            f"app.config.from_prefixed_env()), or {self.endpoints} = "
            "[{'name': 'us-east', 'url': 'redis://...', 'weight': 2}, ...]"
        )


@dataclass(frozen=True)
class PoolOptions:
    """How the Flask client's pool is built (see :data:`POOL_OPTIONS`)."""

    max_connections: int | None = None
    blocking_pool: bool = False
    pool_timeout: float = 20.0


def check_instance_name(name: str) -> str:
    """Instance names become part of config keys (``GEOFAILOVER_<NAME>_URL``),
    so they are restricted to what maps one-to-one onto an upper-case key."""
    if not isinstance(name, str) or not _INSTANCE_RE.match(name):
        raise ConfigurationError(
            "GeoFailover(name=...)",
            f"{name!r} is not a valid instance name",
            "use lower-case letters, digits and '_', starting with a letter (e.g. 'sessions'); "
            "its settings are then GEOFAILOVER_SESSIONS_URL, ..._ENDPOINTS, ..._OPTIONS",
        )
    return name


def keys_for(name: str) -> Keys:
    """``default`` reads ``GEOFAILOVER_URL``; ``sessions`` reads ``GEOFAILOVER_SESSIONS_URL``."""
    check_instance_name(name)
    prefix = "GEOFAILOVER_" if name == DEFAULT_INSTANCE else f"GEOFAILOVER_{name.upper()}_"
    return Keys(url=f"{prefix}URL", endpoints=f"{prefix}ENDPOINTS", options=f"{prefix}OPTIONS")


def _rekey(exc: ConfigurationError, key: str) -> ConfigurationError:
    """The core's error, re-addressed to the Flask key the value came from."""
    setting = exc.setting
    if setting.startswith("endpoints"):
        rest = setting[len("endpoints") :]
        where = f"{key}{rest}" if key.endswith("ENDPOINTS") else (f"{key} -> endpoints{rest}" if rest else key)
    elif _IDENTIFIER_RE.match(setting):
        where = f"{key}[{setting!r}]"
    else:
        where = f"{key} -> {setting}"
    return ConfigurationError(where, mask_text(exc.problem), mask_text(exc.fix))


def load(config: Mapping[str, Any], name: str) -> tuple[FailoverConfig, PoolOptions]:
    """Validate the instance's keys and build its core configuration.

    The engine name (which keys the per-process registry and the fleet's
    control-plane records) defaults to the instance name, so a web process
    and ``flask geofailover ...`` in another process agree on it.
    """
    keys = keys_for(name)
    url = config.get(keys.url)
    endpoints = config.get(keys.endpoints)
    options = config.get(keys.options)
    if url is not None and endpoints is not None:
        raise ConfigurationError(
            f"{keys.url} / {keys.endpoints}", "both are set",
            f"set only one: {keys.url} (one ';'-separated string of URLs) or {keys.endpoints} (a list of dicts or URLs)",
        )
    if url is None and endpoints is None:
        raise ConfigurationError(keys.url, "missing", keys.example)
    if url is not None:
        source = keys.url
        if not isinstance(url, str):
            raise ConfigurationError(keys.url, f"expected a string, got {type(url).__name__}", f"write complete URLs separated by ';', or use {keys.endpoints} for a list")
        items: list[Any] = [part.strip() for part in url.split(";") if part.strip()]
        if not items:
            raise ConfigurationError(keys.url, "empty", keys.example)
    else:
        source = keys.endpoints
        if isinstance(endpoints, str):
            raise ConfigurationError(keys.endpoints, "a string, expected a list", f"put a ';'-separated string in {keys.url}, or write a list of dicts here")
        if not isinstance(endpoints, (list, tuple)):
            raise ConfigurationError(keys.endpoints, f"expected a list, got {type(endpoints).__name__}", "write [{'name': 'us-east', 'url': 'redis://...', 'weight': 2}, ...]")
        items = list(endpoints)
        if not items:
            raise ConfigurationError(keys.endpoints, "empty list", keys.example)
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ConfigurationError(keys.options, f"expected a dict, got {type(options).__name__}", "write a dict such as {'failback_grace_period': 30, 'decode_responses': True}")
    data = dict(options)
    for misplaced in ("endpoints", "url"):
        if misplaced in data:
            raise ConfigurationError(f"{keys.options}[{misplaced!r}]", "endpoints do not belong in the options", f"move them to {keys.url} or {keys.endpoints}")
    pool = _pool_options(data, keys)
    data.setdefault("name", name)
    try:
        parsed = [EndpointConfig.from_dict(item, index=i) for i, item in enumerate(items)]
    except ConfigurationError as exc:
        raise _rekey(exc, source) from None
    try:
        return FailoverConfig.from_dict({**data, "endpoints": parsed}), pool
    except ConfigurationError as exc:
        raise _rekey(exc, source if exc.setting.startswith("endpoints") else keys.options) from None


def _pool_options(data: dict[str, Any], keys: Keys) -> PoolOptions:
    max_connections = data.pop("max_connections", None)
    blocking_pool = data.pop("blocking_pool", False)
    pool_timeout = data.pop("pool_timeout", 20.0)
    if max_connections is not None and (isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1):
        raise ConfigurationError(f"{keys.options}['max_connections']", f"must be an integer >= 1, got {max_connections!r}", "give a whole number such as 50, or leave it out")
    if not isinstance(blocking_pool, bool):
        raise ConfigurationError(f"{keys.options}['blocking_pool']", f"expected True or False, got {blocking_pool!r}", "write True or False")
    if isinstance(pool_timeout, bool) or not isinstance(pool_timeout, (int, float)) or pool_timeout <= 0:
        raise ConfigurationError(f"{keys.options}['pool_timeout']", f"must be a number > 0, got {pool_timeout!r}", "give the seconds to wait for a free connection, e.g. 20")
    return PoolOptions(max_connections=max_connections, blocking_pool=blocking_pool, pool_timeout=float(pool_timeout))


def connection_options(options: Mapping[str, Any], where: str, keys: Keys) -> dict[str, Any]:
    """Validate redis-py connection options for one more client of an engine.

    ``socket_timeout`` and ``socket_connect_timeout`` are both engine defaults
    and connection options; here they are connection options of this client.
    Engine-only options (health checks, failback...) are shared by every
    client of a configuration, so asking for them per client is an error.
    """
    known = connection_option_names()
    engine_fields = {f.name for f in fields(FailoverConfig)} - {"endpoints", "client_options"}
    result: dict[str, Any] = {}
    for key, value in options.items():
        if key in known:
            result[key] = value
        elif key in engine_fields:
            raise ConfigurationError(
                f"{where}[{key!r}]", "an engine option, shared by every client of the configuration", f"set it in {keys.options}"
            )
        else:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            raise ConfigurationError(
                f"{where}[{key!r}]", "unknown option",
                f"did you mean {close[0]!r}?" if close else "use redis-py connection options (socket_timeout, client_name, decode_responses...)",
            )
    return result


def rekey_registry_error(exc: ConfigurationError, name: str, engine_name: str) -> ConfigurationError:
    """The registry refuses a second, different configuration under one name;
    say which Flask key gives it a name of its own."""
    keys = keys_for(name)
    return ConfigurationError(
        f"{keys.options}['name']",
        f"geofailover configuration {engine_name!r} is already in use in this process with different endpoints or options "
        "(another Flask app or library configured it first)",
        f"give this app's endpoint set its own name, e.g. {keys.options} = {{'name': 'myapp-{name}'}}, "
        "or use identical settings in both places to share one engine",
    )
