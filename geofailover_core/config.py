"""Configuration: endpoints and engine options, from objects, dicts or one string.

Three front doors lead to the same validated :class:`FailoverConfig`:

* Python objects: ``FailoverConfig(endpoints=[EndpointConfig(...)], ...)``;
* a plain dict, which is what Django's ``CACHES`` and Flask's ``app.config``
  hold: :meth:`FailoverConfig.from_dict`;
* one string for an environment variable, complete URLs separated by ``;``
  with our own query keys ``name`` and ``weight``:
  :meth:`FailoverConfig.from_string`.

Every mistake raises :class:`~geofailover_core.errors.ConfigurationError`
at construction time naming the setting and the fix, because a typo found
during an outage is found too late.
"""

from __future__ import annotations

import difflib
import inspect
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import redis.connection

from .defaults import DEFAULTS
from .errors import ConfigurationError
from .masking import mask_url

SCHEMES = ("redis", "rediss", "unix")
RETRY_POLICIES = ("all", "read_only", "none")
PROBE_POLICIES = ("all", "any", "majority")
_OUR_QUERY_KEYS = ("name", "weight")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:\-]+$")

# Connection keyword arguments that only redis-py itself may set.
_INTERNAL_CONNECTION_KWARGS = frozenset(
    {
        "self", "kwargs", "host", "port", "path", "event_dispatcher", "maintenance_state",
        "maintenance_notification_hash", "orig_host_address", "orig_socket_timeout",
        "orig_socket_connect_timeout", "oss_cluster_maint_notifications_handler",
        "maint_notifications_pool_handler", "himport_registry", "redis_connect_func",
        "command_packer",
    }
)


@cache
def connection_option_names() -> frozenset[str]:
    """Names accepted as client options: read from redis-py's own signatures, so
    every option of the installed redis-py is accepted and nothing else is."""
    names: set[str] = {"ssl", "max_connections"}
    for cls in (
        redis.connection.AbstractConnection,
        redis.connection.Connection,
        redis.connection.SSLConnection,
        redis.connection.UnixDomainSocketConnection,
    ):
        names.update(inspect.signature(cls.__init__).parameters)
    return frozenset(names - _INTERNAL_CONNECTION_KWARGS)


ENGINE_OPTIONS = frozenset(DEFAULTS) - {"socket_timeout", "socket_connect_timeout"}


def _unknown(setting: str, key: str, known: Iterable[str]) -> ConfigurationError:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f"did you mean {close[0]!r}?" if close else "remove it or check the spelling against the README's option table"
    return ConfigurationError(f"{setting}.{key}" if setting else key, "unknown option", hint)


def _number(setting: str, value: Any, *, positive: bool, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigurationError(setting, f"expected a number, got {type(value).__name__}", "give a number of seconds")
    try:
        number = float(value)
    except ValueError:
        raise ConfigurationError(setting, f"{value!r} is not a number", "give a number") from None
    if math.isnan(number) or math.isinf(number):
        raise ConfigurationError(setting, f"{value!r} is not finite", "give a finite number")
    if positive and number <= 0:
        raise ConfigurationError(setting, f"must be > 0, got {value!r}", "give a positive number")
    if number < 0:
        raise ConfigurationError(setting, f"must not be negative, got {value!r}", "give 0 or a positive number")
    return number


@dataclass(frozen=True)
class EndpointConfig:
    """One region's endpoint.

    ``weight`` orders endpoints: the highest-weight healthy one is active, ties
    go to the one listed first. ``options`` are redis-py connection keyword
    arguments for this endpoint only (timeouts, TLS files, credentials) and
    override the URL and the global client options. ``health_checks``, when
    given, replaces the global list for this endpoint.
    """

    name: str
    url: str
    weight: float = 1.0
    options: Mapping[str, Any] = field(default_factory=dict)
    health_checks: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        where = f"endpoints[{self.name!r}]" if self.name else "endpoints[?]"
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ConfigurationError(
                f"{where}.name", f"{self.name!r} is not a valid endpoint name",
                "use letters, digits and . _ : - (e.g. 'us-east')",
            )
        if not isinstance(self.url, str) or "://" not in self.url:
            raise ConfigurationError(f"{where}.url", "not a URL", "write redis://host:port/db, rediss://... or unix:///path")
        scheme = urlsplit(self.url).scheme.lower()
        if scheme not in SCHEMES:
            raise ConfigurationError(
                f"{where}.url", f"scheme {scheme!r} is not supported", "use redis://, rediss:// or unix://"
            )
        weight = _number(f"{where}.weight", self.weight, positive=True)
        object.__setattr__(self, "weight", weight)
        known = connection_option_names()
        for key in self.options:
            if key not in known:
                raise _unknown(where, key, known)
        object.__setattr__(self, "options", dict(self.options))
        if self.health_checks is not None:
            object.__setattr__(self, "health_checks", tuple(self.health_checks))
        try:
            parsed = redis.connection.parse_url(self.url)
        except ValueError as exc:
            raise ConfigurationError(f"{where}.url", str(exc), "check the URL against redis-py's from_url syntax") from None
        for key in parsed:
            if key not in known and key not in ("host", "port", "path", "connection_class"):
                raise _unknown(f"{where}.url?", key, known)

    @classmethod
    def from_url(cls, url: str, *, index: int = 0, **overrides: Any) -> EndpointConfig:
        """Build an endpoint from a URL carrying our ``name``/``weight`` query keys."""
        url = url.strip()
        try:
            parts = urlsplit(url)
        except ValueError:
            raise ConfigurationError(f"endpoints[{index}]", "not a URL", "write redis://host:port/db") from None
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        ours = {k: v for k, v in pairs if k in _OUR_QUERY_KEYS}
        rest = [(k, v) for k, v in pairs if k not in _OUR_QUERY_KEYS]
        base = url.partition("?")[0]
        clean = f"{base}?{urlencode(rest)}" if rest else base
        name = overrides.pop("name", None) or ours.get("name") or _default_name(parts, index)
        weight: Any = overrides.pop("weight", None) or ours.get("weight", 1.0)
        return cls(name=name, url=clean, weight=weight, **overrides)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | str, *, index: int = 0) -> EndpointConfig:
        if isinstance(data, EndpointConfig):
            return data
        if isinstance(data, str):
            return cls.from_url(data, index=index)
        if not isinstance(data, Mapping):
            raise ConfigurationError(
                f"endpoints[{index}]", f"expected a dict or URL string, got {type(data).__name__}",
                "write {'name': 'us-east', 'url': 'redis://...', 'weight': 2}",
            )
        data = dict(data)
        if "url" not in data:
            raise ConfigurationError(f"endpoints[{index}].url", "missing", "add 'url': 'redis://host:port/0'")
        url = data.pop("url")
        name = data.pop("name", None)
        weight = data.pop("weight", None)
        health_checks = data.pop("health_checks", None)
        options = dict(data.pop("options", {}) or {})
        known = connection_option_names()
        for key in list(data):
            if key not in known:
                raise _unknown(f"endpoints[{index}]", key, known | {"name", "url", "weight", "health_checks"})
            options[key] = data.pop(key)
        return cls.from_url(
            str(url), index=index, name=name, weight=weight, options=options,
            health_checks=tuple(health_checks) if health_checks is not None else None,
        )

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Secret strings of this endpoint, so text that might quote them can be masked."""
        parsed = redis.connection.parse_url(self.url)
        values = [parsed.get("password"), self.options.get("password"), self.options.get("ssl_password")]
        return tuple(str(v) for v in values if v)

    def connection_params(self, base: Mapping[str, Any]) -> tuple[type[redis.connection.AbstractConnection], dict[str, Any]]:
        """The redis-py connection class and kwargs for this endpoint.

        Precedence, lowest first: ``base`` (global client options and finite
        timeouts), the URL, this endpoint's ``options``.
        """
        parsed = dict(redis.connection.parse_url(self.url))
        conn_class: type[redis.connection.AbstractConnection] = parsed.pop(
            "connection_class", redis.connection.Connection
        )
        kwargs: dict[str, Any] = {**base, **parsed, **self.options}
        kwargs.pop("max_connections", None)
        if kwargs.pop("ssl", False) and conn_class is redis.connection.Connection:
            conn_class = redis.connection.SSLConnection
        if conn_class is redis.connection.UnixDomainSocketConnection:
            for key in ("socket_keepalive", "socket_keepalive_options", "socket_type"):
                kwargs.pop(key, None)
        if not issubclass(conn_class, redis.connection.SSLConnection):
            for key in list(kwargs):
                if key.startswith("ssl_"):
                    kwargs.pop(key)
        return conn_class, kwargs

    def fingerprint(self) -> tuple[Any, ...]:
        return (self.name, self.url, self.weight, tuple(sorted((k, repr(v)) for k, v in self.options.items())))

    def __repr__(self) -> str:
        return f"EndpointConfig(name={self.name!r}, url={self.masked_url!r}, weight={self.weight!r})"


def _default_name(parts: Any, index: int) -> str:
    if parts.scheme == "unix":
        return f"unix-{index}"
    host = (parts.hostname or "localhost").lower()
    try:
        port = parts.port or 6379
    except ValueError:
        raise ConfigurationError(f"endpoints[{index}].url", "the port is not a number", "write redis://host:6379/0") from None
    return f"{host}:{port}"


@dataclass(frozen=True)
class FailoverConfig:
    """A complete, validated configuration of one failover engine.

    ``name`` keys the per-process registry: every client built with the same
    name shares one engine (one monitor thread, one set of breakers).
    ``client_options`` are redis-py connection keyword arguments applied to
    every endpoint.
    """

    endpoints: tuple[EndpointConfig, ...]
    name: str = "default"
    health_checks: tuple[Any, ...] = ()
    client_options: Mapping[str, Any] = field(default_factory=dict)
    socket_timeout: float = DEFAULTS["socket_timeout"]
    socket_connect_timeout: float = DEFAULTS["socket_connect_timeout"]
    health_check_interval: float = DEFAULTS["health_check_interval"]
    health_check_timeout: float = DEFAULTS["health_check_timeout"]
    health_check_probes: int = DEFAULTS["health_check_probes"]
    health_check_probe_delay: float = DEFAULTS["health_check_probe_delay"]
    health_check_policy: str = DEFAULTS["health_check_policy"]
    failure_threshold: int = DEFAULTS["failure_threshold"]
    breaker_reset_timeout: float = DEFAULTS["breaker_reset_timeout"]
    auto_failback: bool = DEFAULTS["auto_failback"]
    failback_grace_period: float = DEFAULTS["failback_grace_period"]
    retry_on_failover: str = DEFAULTS["retry_on_failover"]
    confirm_timeout: float = DEFAULTS["confirm_timeout"]
    health_check_combine: str = DEFAULTS["health_check_combine"]
    control_plane: bool = DEFAULTS["control_plane"]
    control_key_prefix: str = DEFAULTS["control_key_prefix"]
    app_label: str = DEFAULTS["app_label"]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ConfigurationError("name", f"{self.name!r} is not a valid configuration name", "use letters, digits and . _ : -")
        endpoints = tuple(self.endpoints or ())
        if not endpoints:
            raise ConfigurationError("endpoints", "no endpoints configured", "list at least one endpoint URL (two or more for failover)")
        seen: set[str] = set()
        for ep in endpoints:
            if not isinstance(ep, EndpointConfig):
                raise ConfigurationError("endpoints", f"expected EndpointConfig, got {type(ep).__name__}", "use FailoverConfig.from_dict for dicts and URLs")
            if ep.name in seen:
                raise ConfigurationError(f"endpoints[{ep.name!r}].name", "duplicate endpoint name", "give every endpoint a unique name (?name=us-east)")
            seen.add(ep.name)
        object.__setattr__(self, "endpoints", endpoints)
        object.__setattr__(self, "health_checks", tuple(self.health_checks or ()))
        known = connection_option_names()
        for key in self.client_options:
            if key not in known:
                raise _unknown("", key, known | ENGINE_OPTIONS)
        object.__setattr__(self, "client_options", dict(self.client_options))
        for name in ("socket_timeout", "socket_connect_timeout", "health_check_interval", "health_check_timeout", "confirm_timeout"):
            object.__setattr__(self, name, _number(name, getattr(self, name), positive=True))
        for name in ("health_check_probe_delay", "breaker_reset_timeout", "failback_grace_period"):
            object.__setattr__(self, name, _number(name, getattr(self, name), positive=False))
        for name in ("health_check_probes", "failure_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(name, f"must be an integer >= 1, got {value!r}", "give a whole number such as 3")
        if self.health_check_policy not in PROBE_POLICIES:
            raise ConfigurationError("health_check_policy", f"{self.health_check_policy!r} is not a policy", f"use one of {', '.join(PROBE_POLICIES)}")
        if self.health_check_combine not in PROBE_POLICIES:
            raise ConfigurationError("health_check_combine", f"{self.health_check_combine!r} is not a policy", f"use one of {', '.join(PROBE_POLICIES)}")
        if not isinstance(self.control_plane, bool):
            raise ConfigurationError("control_plane", f"expected True or False, got {self.control_plane!r}", "write True or False")
        if not isinstance(self.control_key_prefix, str) or not _NAME_RE.match(self.control_key_prefix):
            raise ConfigurationError("control_key_prefix", f"{self.control_key_prefix!r} is not a valid key prefix", "use letters, digits and . _ : -")
        if not isinstance(self.app_label, str):
            raise ConfigurationError("app_label", f"expected a string, got {type(self.app_label).__name__}", "write a short label such as 'web'")
        if self.retry_on_failover not in RETRY_POLICIES:
            raise ConfigurationError("retry_on_failover", f"{self.retry_on_failover!r} is not a policy", f"use one of {', '.join(RETRY_POLICIES)}")
        if not isinstance(self.auto_failback, bool):
            raise ConfigurationError("auto_failback", f"expected True or False, got {self.auto_failback!r}", "write True or False")

    # -- alternative constructors -------------------------------------------------

    @classmethod
    def from_string(cls, urls: str, **options: Any) -> FailoverConfig:
        """``"redis://a:6379/0?name=us&weight=2;rediss://:pw@b:6379/0?name=eu"``."""
        if not isinstance(urls, str):
            raise ConfigurationError("endpoints", f"expected a string, got {type(urls).__name__}", "separate complete URLs with ';'")
        items = [u for u in (part.strip() for part in urls.split(";")) if u]
        return cls.from_dict({"endpoints": items, **options})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FailoverConfig:
        """Build from a settings dict: ``endpoints`` (list or ``;`` string), engine
        options, and redis-py connection options for every endpoint."""
        if not isinstance(data, Mapping):
            raise ConfigurationError("GEOFAILOVER", f"expected a dict, got {type(data).__name__}", "write a dict with an 'endpoints' key")
        data = dict(data)
        raw = data.pop("endpoints", None)
        if raw is None and "url" in data:
            raw = data.pop("url")
        if raw is None:
            raise ConfigurationError("endpoints", "missing", "add 'endpoints': ['redis://host:6379/0?name=us-east&weight=2', ...]")
        if isinstance(raw, str):
            raw = [u for u in (part.strip() for part in raw.split(";")) if u]
        if not isinstance(raw, (list, tuple)):
            raise ConfigurationError("endpoints", f"expected a list or a ';'-separated string, got {type(raw).__name__}", "list the endpoint URLs")
        endpoints = tuple(EndpointConfig.from_dict(item, index=i) for i, item in enumerate(raw))
        kwargs: dict[str, Any] = {}
        client_options = dict(data.pop("client_options", {}) or {})
        known = connection_option_names()
        for key, value in data.items():
            if key in ENGINE_FIELDS:
                kwargs[key] = value
            elif key in known:
                client_options[key] = value
            else:
                raise _unknown("", key, ENGINE_FIELDS | known)
        return cls(endpoints=endpoints, client_options=client_options, **kwargs)

    @classmethod
    def coerce(cls, value: FailoverConfig | Mapping[str, Any] | str) -> FailoverConfig:
        if isinstance(value, FailoverConfig):
            return value
        if isinstance(value, str):
            return cls.from_string(value)
        return cls.from_dict(value)

    # -- derived -----------------------------------------------------------------

    def base_connection_options(self) -> dict[str, Any]:
        """Connection kwargs shared by all endpoints before URL and per-endpoint options."""
        return {
            "socket_timeout": self.socket_timeout,
            "socket_connect_timeout": self.socket_connect_timeout,
            **self.client_options,
        }

    def fingerprint(self) -> tuple[Any, ...]:
        """What must match for two users of one name to share an engine."""
        engine = tuple((f.name, repr(getattr(self, f.name))) for f in fields(self) if f.name not in ("endpoints", "client_options", "name"))
        return (tuple(ep.fingerprint() for ep in self.endpoints), engine)

    def with_options(self, **changes: Any) -> FailoverConfig:
        return replace(self, **changes)

    def endpoint(self, name: str) -> EndpointConfig:
        for ep in self.endpoints:
            if ep.name == name:
                return ep
        raise KeyError(name)

    def __repr__(self) -> str:
        eps = ", ".join(repr(ep) for ep in self.endpoints)
        return f"FailoverConfig(name={self.name!r}, endpoints=[{eps}])"


#: The options a configuration's engine is made of (every client of one engine shares them).
ENGINE_FIELDS: frozenset[str] = frozenset(f.name for f in fields(FailoverConfig)) - {"endpoints", "client_options"}


def split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split constructor keyword arguments into engine options and client options."""
    engine: dict[str, Any] = {}
    client: dict[str, Any] = {}
    known = connection_option_names()
    for key, value in options.items():
        if key in ENGINE_FIELDS:
            engine[key] = value
        elif key in known:
            client[key] = value
        else:
            raise _unknown("", key, ENGINE_FIELDS | known)
    return engine, client
