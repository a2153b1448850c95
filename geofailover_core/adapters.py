"""What every framework adapter shares when it reads its settings.

Django's ``CACHES``, Flask's ``app.config`` and Celery's transport options
all hold the same two things: a list of endpoints (a ``;`` string or a list)
and a dict of engine and connection options. This module turns them into a
:class:`~geofailover_core.config.FailoverConfig` once, for all three, and
re-addresses every :class:`ConfigurationError` to the setting the user
actually wrote (``GEOFAILOVER_OPTIONS['socket_timout']``, not the core's
field name), because that is the line they must fix. The adapters keep only
what is specific to their framework: where the settings live and what their
own extra options mean.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import redis.connection

from .config import ENGINE_FIELDS, EndpointConfig, FailoverConfig, check_connection_option, connection_option_names
from .engine import FailoverEngine
from .errors import ConfigurationError
from .masking import mask_text, mask_url
from .registry import get_engine

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A ';' always separates endpoints; with ``commas`` a ',' does too when a URL
# follows it (a LOCATION copied from django-redis's comma-separated form).
_SEMICOLON = re.compile(r"\s*;\s*")
_SEMICOLON_OR_COMMA = re.compile(r"\s*;\s*|\s*,\s*(?=(?:redis|rediss|unix)://)", re.IGNORECASE)


@dataclass(frozen=True)
class SettingNames:
    """How the adapter's user wrote the settings, for error messages.

    ``endpoints``: where the endpoint list came from (``GEOFAILOVER_URL``,
    ``CACHES['default']['LOCATION']``); ``options``: the dict of engine
    options (``GEOFAILOVER_OPTIONS``); ``rename``: optional overrides for
    single core settings (Django names ``socket_timeout`` ``SOCKET_TIMEOUT``
    when it came from there).
    """

    endpoints: str
    options: str
    rename: Mapping[str, str] = field(default_factory=dict)

    def option(self, key: str) -> str:
        """``GEOFAILOVER_OPTIONS['key']``."""
        return f"{self.options}[{key!r}]"

    def name(self, setting: str) -> str:
        """The adapter's name for a core setting such as ``endpoints[1].url`` or ``socket_timeout``."""
        if setting in self.rename:
            return self.rename[setting]
        if setting.startswith("endpoints"):
            rest = setting[len("endpoints"):]
            return f"{self.endpoints}{rest}" if rest.startswith("[") else self.endpoints
        head, dot, rest = setting.partition(".")
        if _IDENTIFIER.match(head):
            return self.option(head) + (f" -> {rest}" if dot else "")
        return f"{self.options} -> {setting}"

    def readdress(self, exc: ConfigurationError) -> ConfigurationError:
        """The core's error, addressed to the adapter's setting, secrets masked."""
        return ConfigurationError(self.name(exc.setting), mask_text(exc.problem), mask_text(exc.fix))


def split_endpoints(value: Any, setting: str, *, commas: bool = False) -> list[Any]:
    """An endpoint list as written in settings -> a list of URL strings and dicts.

    A string is split on ``;`` (and, with ``commas``, on a ``,`` followed by a
    URL scheme); a list keeps its dicts and splits its strings the same way.
    """
    pattern = _SEMICOLON_OR_COMMA if commas else _SEMICOLON
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [part for part in pattern.split(value.strip()) if part]
    if isinstance(value, (list, tuple)):
        items: list[Any] = []
        for item in value:
            items.extend(split_endpoints(item, setting, commas=commas) if isinstance(item, str) else [item])
        return items
    raise ConfigurationError(
        setting, f"expected a list of URLs or a ';'-separated string, got {type(value).__name__}",
        "write ['redis://host-a:6379/0?name=a&weight=2', 'redis://host-b:6379/0?name=b'] or one string with ';' between URLs",
    )


def parse_endpoint(item: Any, index: int, names: SettingNames, *, defaults: Mapping[str, Any] | None = None) -> EndpointConfig:
    """One endpoint (URL or dict). ``defaults`` are connection options applied
    unless the URL or the dict sets them (django-redis's ``PASSWORD``)."""
    try:
        ep = EndpointConfig.from_dict(item, index=index)
    except ConfigurationError as exc:
        raise names.readdress(exc) from None
    except (ValueError, TypeError) as exc:  # e.g. urlsplit's "Port could not be cast to integer"
        shown = mask_url(item) if isinstance(item, str) else f"endpoint #{index + 1}"
        raise ConfigurationError(
            f"{names.endpoints}[{index}]", f"{shown!r} is not a valid Redis URL ({mask_text(str(exc))})",
            "write redis://host:port/db, rediss://host:port/db or unix:///path/to.sock",
        ) from None
    if defaults:
        parsed = redis.connection.parse_url(ep.url)
        extra = {k: v for k, v in defaults.items() if v and not parsed.get(k) and k not in ep.options}
        if extra:
            ep = replace(ep, options={**ep.options, **extra})
    return ep


def options_dict(value: Any, setting: str) -> dict[str, Any]:
    """A settings value that must be a dict (``None`` is an empty one)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(setting, f"expected a dict, got {type(value).__name__}", "write a dict such as {'failback_grace_period': 30}")
    return dict(value)


def endpoints_in_one_place(listed: Any, options: Mapping[str, Any], names: SettingNames) -> None:
    """Endpoints belong in ``names.endpoints``; a copy in the options dict is ambiguous."""
    for key in ("endpoints", "url"):
        if key in options and listed:
            raise ConfigurationError(
                f"{names.endpoints} / {names.option(key)}", "endpoints are given in both places",
                f"keep one of the two ({names.endpoints} is the usual place)",
            )


def load_config(
    endpoints: Any,
    options: Mapping[str, Any] | None,
    names: SettingNames,
    *,
    defaults: Mapping[str, Any] | None = None,
    endpoint_defaults: Mapping[str, Any] | None = None,
    commas: bool = False,
) -> FailoverConfig:
    """Endpoints and an options dict, as written in an adapter's settings ->
    a validated configuration. ``defaults`` fill engine options the user did
    not set (the adapter's engine name, ``app_label``)."""
    data = options_dict(options, names.options)
    endpoints_in_one_place(endpoints, data, names)
    items = split_endpoints(endpoints, names.endpoints, commas=commas)
    if not items:
        raise ConfigurationError(
            names.endpoints, "no endpoints configured",
            "list the endpoint URLs, e.g. 'redis://us:6379/0?name=us-east&weight=2;redis://eu:6379/0?name=eu-west'",
        )
    parsed = [parse_endpoint(item, i, names, defaults=endpoint_defaults) for i, item in enumerate(items)]
    for key, value in (defaults or {}).items():
        data.setdefault(key, value)
    try:
        return FailoverConfig.from_dict({**data, "endpoints": parsed})
    except ConfigurationError as exc:
        raise names.readdress(exc) from None
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(names.options, mask_text(str(exc)), "check the option against the README's option table") from None


def engine_for(config: FailoverConfig, names: SettingNames) -> FailoverEngine:
    """The shared engine of ``config``; a name already used with other settings
    is reported against the adapter's ``name`` option."""
    try:
        return get_engine(config)
    except ConfigurationError as exc:
        if exc.setting != "name":
            raise
        raise ConfigurationError(
            names.option("name"),
            f"geofailover configuration {config.name!r} is already in use in this process with different endpoints or options "
            "(another app, cache or library configured it first)",
            f"give this endpoint set its own name ({names.option('name')} = 'myapp-...'), "
            "or use identical settings in both places to share one engine",
        ) from None


def client_connection_options(options: Mapping[str, Any], setting: str, engine_setting: str) -> dict[str, Any]:
    """Validate redis-py connection options for one more client of an engine.

    ``socket_timeout`` and ``socket_connect_timeout`` are both engine defaults
    and connection options; here they are connection options of this client.
    Engine-only options (health checks, failback...) are shared by every
    client of a configuration, so asking for them per client is an error.
    """
    known = connection_option_names()
    result: dict[str, Any] = {}
    for key, value in options.items():
        if key in known:
            result[key] = check_connection_option(f"{setting}[{key!r}]", key, value)
        elif key in ENGINE_FIELDS:
            raise ConfigurationError(f"{setting}[{key!r}]", "an engine option, shared by every client of the configuration", f"set it in {engine_setting}")
        else:
            raise ConfigurationError(f"{setting}[{key!r}]", "unknown option", suggest(key, known, "use redis-py connection options (socket_timeout, client_name, decode_responses...)"))
    return result


def suggest(key: str, known: Sequence[str] | frozenset[str], otherwise: str) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f"did you mean {close[0]!r}?" if close else otherwise


# -- validators of adapters' own options ----------------------------------------------


def check_bool(value: Any, setting: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(setting, f"expected True or False, got {value!r}", "write True or False")
    return value


def check_seconds(value: Any, setting: str, *, zero_ok: bool = False, example: str = "1.0") -> float:
    """A finite number of seconds, > 0 (or >= 0 with ``zero_ok``: "off")."""
    if (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
        or value < 0 or (value == 0 and not zero_ok)
    ):
        fix = f"give e.g. {example}, or 0 to turn it off" if zero_ok else f"give e.g. {example}"
        raise ConfigurationError(setting, f"must be a {'non-negative' if zero_ok else 'positive'} number of seconds, got {value!r}", fix)
    return float(value)


def check_count(value: Any, setting: str, *, minimum: int = 1, example: int = 50, optional: bool = False) -> int | None:
    """A whole number >= ``minimum`` (or None when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(setting, f"must be an integer >= {minimum}, got {value!r}", f"give a whole number such as {example}")
    return value


Validator = Callable[[Any, str], Any]


def pop_options(data: dict[str, Any], spec: Mapping[str, tuple[Any, Validator]], where: Callable[[str], str]) -> dict[str, Any]:
    """Take an adapter's own options out of ``data`` (they are not engine
    options), each validated: ``spec`` maps key -> (default, validator)."""
    result: dict[str, Any] = {}
    for key, (default, validate) in spec.items():
        result[key] = validate(data.pop(key), where(key)) if key in data else default
    return result


__all__ = [
    "SettingNames",
    "check_bool",
    "check_count",
    "check_seconds",
    "client_connection_options",
    "endpoints_in_one_place",
    "engine_for",
    "load_config",
    "options_dict",
    "parse_endpoint",
    "pop_options",
    "split_endpoints",
    "suggest",
]
