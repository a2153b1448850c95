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
during an outage is found too late. Every value is checked against the one
table of bounds in :mod:`geofailover_core.defaults`, including the redis-py
options of an endpoint URL's query: redis-py itself accepts
``?socket_timeout=-5`` and then fails every command, while the probes (which
use their own timeout) keep saying the endpoint is healthy.

A message about a URL never quotes the URL's text: a password with an
unencoded ``/``, ``#``, ``?``, ``;`` or ``@`` makes the parser cut the URL in
the wrong place, and any quoted piece may then be a piece of the password.

Engine options and connection options are kept apart. Engine options
(endpoints, weights, checks, intervals, failback...) make up the engine, and
every user of one configuration name must agree on them; connection options
(``socket_timeout``, ``decode_responses``, ``client_name``, redis-py's
``health_check_interval``...) belong to each client's own connections, as in
redis-py, so clients sharing an engine may differ in them.
"""

from __future__ import annotations

import codecs
import difflib
import inspect
import math
import re
import ssl
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import InitVar, dataclass, field, fields, replace
from functools import cache
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlencode, urlsplit

import redis.connection

from .defaults import BOUNDS, DEFAULTS, Setting
from .errors import ConfigurationError
from .masking import mask_url

SCHEMES = ("redis", "rediss", "unix")
RETRY_POLICIES = BOUNDS["retry_on_failover"].choices
PROBE_POLICIES = BOUNDS["health_check_policy"].choices
_OUR_QUERY_KEYS = ("name", "weight")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:\-]+$")
_OPTION_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.-]{0,15}$")
_PERCENT_ENCODE = (
    "a password containing '/', ';', '#', '?' or '@' must be percent-encoded "
    "(urllib.parse.quote(password, safe=''))"
)
_ENCODE_PASSWORD = f"if the URL has a password, {_PERCENT_ENCODE}"
_TRUE = frozenset({"1", "true", "yes", "on", "t", "y"})
_FALSE = frozenset({"0", "false", "no", "off", "f", "n"})

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

# Connection options whose value is a plain string, so an endpoint URL's query
# may carry them as written. Any other option a URL carries must be in the
# table of bounds (it is parsed and checked from there); the rest take Python
# objects (retry, credential_provider...) and can only be given in code.
_TEXT_OPTIONS = frozenset(
    {
        "client_name", "username", "password", "ssl_keyfile", "ssl_certfile", "ssl_ca_certs", "ssl_ca_path",
        "ssl_ca_data", "ssl_password", "ssl_ciphers", "lib_name", "lib_version",
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


def _suggest(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    if not close:
        return "remove it or check the spelling against the README's option table"
    if close[0] == "health_check_interval":
        return "did you mean 'health_check_interval' (redis-py's connection PING) or 'probe_interval' (geofailover's probe rounds)?"
    return f"did you mean {close[0]!r}?"


def _unknown(setting: str, key: str, known: Iterable[str]) -> ConfigurationError:
    return ConfigurationError(f"{setting}.{key}" if setting else key, "unknown option", _suggest(key, known))


# -- values, checked against the table of bounds --------------------------------------


def _number(setting: str, spec: Setting, value: Any, shown: str | None) -> float | int:
    """``value`` as a number within the bounds; ``shown`` is how a message may
    quote it (None: never, the text came from a URL that may hold a password)."""
    integer = spec.kind == "integer"
    wanted = "a whole number" if integer else "a number"
    fix = f"give {wanted} from {spec.allowed}"
    if isinstance(value, str):
        try:
            value = int(value.strip()) if integer else float(value.strip())
        except ValueError:
            raise ConfigurationError(setting, f"{shown or 'the value'} is not {wanted}", fix) from None
        shown = repr(value) if shown is not None else None
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(setting, f"expected {wanted}, got {type(value).__name__}", fix)
    label = shown or "the value"
    if integer and not isinstance(value, int):
        raise ConfigurationError(setting, f"{label} is not a whole number", fix)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigurationError(setting, f"{label} is not finite", fix)
    if (spec.minimum is not None and value < spec.minimum) or (spec.maximum is not None and value > spec.maximum):
        raise ConfigurationError(setting, f"{label} is out of range", fix)
    return value if integer else float(value)


def check_value(setting: str, spec: Setting, value: Any, *, from_text: bool = False, quote: bool = True) -> Any:
    """``value`` checked (and typed) against ``spec``.

    ``from_text``: the value is text from a URL query, parsed as redis-py
    would mean it (``"true"``, ``"3"``). ``quote``: a message may repeat the
    value (False for a URL that may have been cut inside its password).
    """
    shown = repr(value) if quote else None
    got = f", got {shown}" if shown else ""
    if value is None and spec.nullable:
        return None
    kind = spec.kind
    if kind in ("seconds", "number", "integer"):
        if isinstance(value, str) and kind == "integer" and not from_text:
            raise ConfigurationError(setting, f"expected a whole number{got}", f"give a whole number from {spec.allowed}")
        return _number(setting, spec, value, shown)
    if kind == "flag":
        if from_text and isinstance(value, str):
            word = value.strip().lower()
            if word in _TRUE:
                return True
            if word in _FALSE:
                return False
        if not isinstance(value, bool):
            raise ConfigurationError(setting, f"expected True or False{got}", "write true or false" if from_text else "write True or False")
        return value
    if kind == "choice":
        if spec.name == "ssl_cert_reqs" and isinstance(value, ssl.VerifyMode):
            return value
        if from_text and isinstance(value, str) and all(isinstance(c, int) for c in spec.choices):
            try:
                value = int(value)
            except ValueError:
                pass
        if isinstance(value, bool) or value not in spec.choices:
            raise ConfigurationError(setting, f"not one of the allowed values{got}", f"use one of {spec.allowed}")
        return value
    if not isinstance(value, str):
        raise ConfigurationError(setting, f"expected a string, got {type(value).__name__}", f"give {spec.allowed}")
    if kind == "key" and not _NAME_RE.match(value):
        raise ConfigurationError(setting, f"not a valid key prefix{got}", "use letters, digits and . _ : -")
    if kind in ("codec", "codec_errors"):
        try:
            codecs.lookup(value) if kind == "codec" else codecs.lookup_error(value)
        except LookupError:
            raise ConfigurationError(setting, f"not {spec.allowed}{got}", 'use e.g. "utf-8" and "strict"') from None
    return value


def check_connection_options(options: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """redis-py connection options given in code (settings, keyword arguments):
    names known to the installed redis-py, values within the table's bounds."""
    if not isinstance(options, Mapping):
        raise ConfigurationError(where or "client_options", f"expected a dict, got {type(options).__name__}", "write a dict of redis-py connection options")
    known = connection_option_names()
    result: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(key, str) and _OPTION_NAME_RE.match(key):
            setting = f"{where}.{key}" if where else key
        else:  # an odd name is quoted, as in the dict the user wrote
            setting = f"{where or 'client_options'}[{key!r}]"
        if key not in known:
            raise ConfigurationError(setting, "unknown option", _suggest(str(key), known))
        result[key] = check_connection_option(setting, key, value)
    return result


def check_connection_option(setting: str, key: str, value: Any) -> Any:
    """One redis-py connection option's value, checked if the table has bounds for it."""
    spec = BOUNDS.get(key)
    return check_value(setting, spec, value) if spec is not None and spec.scope in ("client", "connection") else value


# -- endpoint URLs -----------------------------------------------------------------------


def _suspicious(url: str, parts: SplitResult | None) -> bool:
    """Whether the URL was probably cut in the wrong place by an unencoded
    character of a password (so no part of it may be quoted)."""
    if parts is None:
        return True
    netloc = parts.netloc
    after = url.split("://", 1)[-1][len(netloc):]
    return "@" in after or "#" in url or netloc.count("@") > 1 or (netloc.startswith(":") and "@" not in netloc)


def _url_error(setting: str, problem: str, fix: str, suspicious: bool) -> ConfigurationError:
    if suspicious:
        return ConfigurationError(
            setting, "the URL is cut in the wrong place, most likely by an unencoded character in its password",
            _PERCENT_ENCODE,
        )
    return ConfigurationError(setting, problem, fix)


def _check_part(setting: str, part: str, value: Any, suspicious: bool) -> Any:
    """The port or database of a URL, against the table; the message names the
    URL setting (where the fix goes) and the part."""
    try:
        return check_value(setting, BOUNDS[part], value, from_text=True, quote=not suspicious)
    except ConfigurationError as exc:
        raise ConfigurationError(setting, f"{part}: {exc.problem}", exc.fix) from None


def check_url(url: str, setting: str, *, our_keys: bool = False) -> dict[str, Any]:
    """Validate an endpoint URL; return its query options typed as our table
    says (redis-py leaves ``?decode_responses=false`` a truthy string).
    ``our_keys``: the URL may still carry our ``name``/``weight`` keys (they
    are skipped here and checked by :meth:`EndpointConfig.from_url`)."""
    if not isinstance(url, str) or "://" not in url:
        hint = f"write redis://host:port/db, rediss://... or unix:///path; {_ENCODE_PASSWORD}"
        raise ConfigurationError(setting, "not a URL", hint)
    try:
        parts: SplitResult | None = urlsplit(url)
    except ValueError:
        parts = None
    suspicious = _suspicious(url, parts)
    if parts is None:
        raise _url_error(setting, "not a valid URL", "write redis://host:port/db, rediss://... or unix:///path", suspicious)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        shown = f"scheme {scheme!r}" if _SCHEME_RE.match(scheme) else "the scheme"
        raise _url_error(setting, f"{shown} is not supported", "use redis://, rediss:// or unix://", suspicious)
    if parts.fragment or "#" in url:
        raise _url_error(setting, "the URL has a '#' fragment", "remove the '#...' part", suspicious=True)
    typed: dict[str, Any] = {}
    path_db: int | None = None
    if scheme == "unix":
        if not parts.path:
            raise _url_error(setting, "unix:// needs a socket path", "write unix:///path/to/redis.sock", suspicious)
    else:
        try:
            port = parts.port
        except ValueError:
            raise _url_error(setting, "the port is not a number from 1 to 65535", f"write redis://host:6379/0; {_ENCODE_PASSWORD}", suspicious) from None
        if port is not None:
            _check_part(setting, "port", port, suspicious)
        db_text = unquote(parts.path).strip("/")
        if db_text:
            if not (db_text.isascii() and db_text.isdigit()):
                raise _url_error(setting, "the path is not a database number", "write redis://host:6379/0 (database 0)", suspicious)
            path_db = _check_part(setting, "db", db_text, suspicious)
    known = connection_option_names()
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        ours = key in known or key in ENGINE_FIELDS or key in _OUR_QUERY_KEYS or key == "health_check_interval"
        if not _OPTION_NAME_RE.match(key) or (suspicious and not ours):  # could be a piece of a password
            raise _url_error(setting, "the query has a key that is not an option name", "write ?option=value&option=value", suspicious)
        where = f"{setting}?.{key}"  # the form the adapters parse
        if key in typed:
            raise ConfigurationError(where, "given twice", "give each option once")
        if key in _OUR_QUERY_KEYS:
            if our_keys:
                continue
            raise ConfigurationError(where, "our own query key reached the connection URL", f"pass {key} as the endpoint's {key}")
        if value == "":
            raise ConfigurationError(where, "has no value", f"write ?{key}=VALUE or remove it")
        spec = BOUNDS.get(key)
        if key in known and spec is not None and spec.scope in ("client", "connection"):
            typed[key] = check_value(where, spec, value, from_text=True, quote=not suspicious)
        elif key in _TEXT_OPTIONS and key in known:
            typed[key] = value
        elif key in known:
            raise ConfigurationError(where, "takes a Python object and cannot be given in a URL", "pass it as a connection option in code")
        elif key in ENGINE_FIELDS or key == "health_check_interval":
            raise ConfigurationError(where, "an engine option, not a connection option", "set it with the engine options, not in an endpoint URL")
        else:
            raise ConfigurationError(where, "unknown option", _suggest(key, known))
    if path_db is not None and typed.get("db", path_db) != path_db:
        raise ConfigurationError(f"{setting}?.db", "the path and ?db= name different databases", "give the database once")
    try:
        redis.connection.parse_url(url)
    except ValueError:  # redis-py's message may quote the URL
        raise _url_error(setting, "redis-py cannot parse this URL", "check it against redis-py's from_url syntax", suspicious) from None
    return typed


def _check_endpoint_strings(pieces: list[str]) -> None:
    """Pieces of a ``;``-separated string that are not URLs: a ``;`` inside a password."""
    for i, piece in enumerate(pieces):
        if "://" not in piece:
            raise ConfigurationError(
                f"endpoints[{i}]", "not a URL (the string is cut at every ';')",
                f"separate complete URLs with ';'; {_ENCODE_PASSWORD} (';' is %3B)",
            )


def _split_endpoints(text: str) -> list[str]:
    pieces = [u for u in (part.strip() for part in text.split(";")) if u]
    _check_endpoint_strings(pieces)
    return pieces


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
    #: The URL's query options, typed and checked (set by ``__post_init__``).
    _query: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"endpoints[{self.name!r}]" if isinstance(self.name, str) and _NAME_RE.match(self.name) else "endpoints[?]"
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ConfigurationError(
                f"{where}.name", "not a valid endpoint name", "use letters, digits and . _ : - (e.g. 'us-east')",
            )
        object.__setattr__(self, "weight", check_value(f"{where}.weight", BOUNDS["weight"], self.weight))
        object.__setattr__(self, "options", check_connection_options(self.options, where))
        if self.health_checks is not None:
            if isinstance(self.health_checks, (str, bytes)) or not isinstance(self.health_checks, Iterable):
                raise ConfigurationError(f"{where}.health_checks", "expected a list of checks", "write a list, e.g. ['geofailover_core.health.PingHealthCheck']")
            object.__setattr__(self, "health_checks", tuple(self.health_checks))
        object.__setattr__(self, "_query", check_url(self.url, f"{where}.url"))

    @classmethod
    def from_url(cls, url: str, *, index: int = 0, **overrides: Any) -> EndpointConfig:
        """Build an endpoint from a URL carrying our ``name``/``weight`` query keys.

        Messages address the endpoint by its name (given, or ``host:port``),
        or by its position when the URL does not parse far enough to name it
        safely (a host taken from a URL cut inside its password could be a
        piece of the password).
        """
        if not isinstance(url, str):
            raise ConfigurationError(f"endpoints[{index}].url", f"expected a URL string, got {type(url).__name__}", "write redis://host:port/db")
        url = url.strip()
        name, weight = overrides.pop("name", None), overrides.pop("weight", None)
        try:
            parts: SplitResult | None = urlsplit(url)
        except ValueError:
            parts = None
        ours: dict[str, str] = {}
        for key, value in parse_qsl(parts.query if parts else "", keep_blank_values=True):
            if key in _OUR_QUERY_KEYS:
                if key in ours:
                    raise ConfigurationError(f"endpoints[{index}].{key}", "given twice in the URL", "give it once")
                ours[key] = value
        for key, given in (("name", name), ("weight", weight)):
            if given is not None and key in ours:
                raise ConfigurationError(f"endpoints[{index}].{key}", "given both in the URL and as a setting", "give it once")
        if name is None and "name" in ours:
            name = ours["name"]
        if name is not None and (not isinstance(name, str) or not _NAME_RE.match(name)):
            raise ConfigurationError(f"endpoints[{index}].name", "not a valid endpoint name", "use letters, digits and . _ : - (e.g. 'us-east')")
        quote_url = parts is not None and not _suspicious(url, parts)
        label = name if name is not None else _default_name(parts, index) if quote_url and parts is not None else None
        setting = f"endpoints[{label!r}]" if label is not None else f"endpoints[{index}]"
        check_url(url, f"{setting}.url", our_keys=True)
        parts = urlsplit(url)  # check_url refused a URL that does not split or whose port does not parse
        name = name if name is not None else _default_name(parts, index) or f"endpoint-{index}"
        if weight is None and "weight" in ours:
            weight = check_value(f"endpoints[{name!r}].weight", BOUNDS["weight"], ours["weight"], from_text=True, quote=quote_url)
        elif weight is None:
            weight = BOUNDS["weight"].default
        rest = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in _OUR_QUERY_KEYS]
        base = url.partition("?")[0]
        clean = f"{base}?{urlencode(rest)}" if rest else base
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
        options = data.pop("options", None)
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise ConfigurationError(f"endpoints[{index}].options", f"expected a dict, got {type(options).__name__}", "write a dict of redis-py connection options")
        options = dict(options)
        known = connection_option_names()
        for key in list(data):
            if not isinstance(key, str) or key not in known:
                raise _unknown(f"endpoints[{index}]", str(key), known | {"name", "url", "weight", "health_checks", "options"})
            if key in options:
                raise ConfigurationError(f"endpoints[{index}].{key}", "given both in the endpoint and in its options", "give it once")
            options[key] = data.pop(key)
        if health_checks is not None and (isinstance(health_checks, (str, bytes)) or not isinstance(health_checks, Iterable)):
            raise ConfigurationError(f"endpoints[{index}].health_checks", "expected a list of checks", "write a list of checks")
        return cls.from_url(
            url, index=index, name=name, weight=weight, options=options,
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
        values += [self._query.get("password"), self._query.get("ssl_password")]
        return tuple(dict.fromkeys(str(v) for v in values if v))

    def connection_params(self, base: Mapping[str, Any]) -> tuple[type[redis.connection.AbstractConnection], dict[str, Any]]:
        """The redis-py connection class and kwargs for this endpoint.

        Precedence, lowest first: ``base`` (global client options and finite
        timeouts), the URL, this endpoint's ``options``. A TLS endpoint
        verifies the server's certificate and host name unless told not to,
        on every redis-py version (redis-py 5 did not check the host name).
        """
        parsed = dict(redis.connection.parse_url(self.url))
        parsed.update(self._query)
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
        if issubclass(conn_class, redis.connection.SSLConnection):
            reqs = kwargs.get("ssl_cert_reqs", "required")
            if reqs is None or reqs == "none" or reqs == ssl.CERT_NONE:
                kwargs["ssl_check_hostname"] = False  # nothing is verified: there is no name to check
            else:
                kwargs.setdefault("ssl_check_hostname", True)
        else:
            for key in list(kwargs):
                if key.startswith("ssl_"):
                    kwargs.pop(key)
        return conn_class, kwargs

    def fingerprint(self) -> tuple[Any, ...]:
        """What identifies this endpoint to an engine: name, URL (address,
        database, credentials), weight and options. Part of the engine options:
        the probes and the control plane reach the endpoint this way."""
        return (self.name, self.url, self.weight, tuple(sorted((k, repr(v)) for k, v in self.options.items())))

    def __repr__(self) -> str:
        return f"EndpointConfig(name={self.name!r}, url={self.masked_url!r}, weight={self.weight!r})"


def _default_name(parts: SplitResult, index: int) -> str | None:
    """``host:port`` (``unix-<index>``); None if the port does not parse."""
    if parts.scheme.lower() == "unix":
        return f"unix-{index}"
    host = (parts.hostname or "localhost").lower()
    try:
        port = parts.port
    except ValueError:
        return None
    return f"{host}:{6379 if port is None else port}"


@dataclass(frozen=True)
class FailoverConfig:
    """A complete, validated configuration of one failover engine.

    ``name`` keys the per-process registry: every client built with the same
    name shares one engine (one monitor thread, one set of breakers).
    ``client_options`` are redis-py connection keyword arguments applied to
    every endpoint. ``health_check_interval`` is the deprecated name of
    ``probe_interval`` here only, where connection options cannot be given
    (they go in ``client_options``); everywhere else it is redis-py's option.
    """

    endpoints: tuple[EndpointConfig, ...]
    name: str = "default"
    health_checks: tuple[Any, ...] = ()
    client_options: Mapping[str, Any] = field(default_factory=dict)
    socket_timeout: float = DEFAULTS["socket_timeout"]
    socket_connect_timeout: float = DEFAULTS["socket_connect_timeout"]
    probe_interval: float = DEFAULTS["probe_interval"]
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
    control_db: int | None = DEFAULTS["control_db"]
    app_label: str = DEFAULTS["app_label"]
    health_check_interval: InitVar[float | None] = None

    def __post_init__(self, health_check_interval: float | None) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ConfigurationError("name", f"{self.name!r} is not a valid configuration name", "use letters, digits and . _ : -")
        if health_check_interval is not None:
            warnings.warn(
                "FailoverConfig(health_check_interval=...) is deprecated: geofailover's probe interval is now "
                "'probe_interval' (health_check_interval is redis-py's connection option everywhere else)",
                DeprecationWarning, stacklevel=4,
            )
            if self.probe_interval != DEFAULTS["probe_interval"]:
                raise ConfigurationError("health_check_interval", "given together with probe_interval", "keep only probe_interval")
            object.__setattr__(self, "probe_interval", health_check_interval)
        if isinstance(self.endpoints, (str, bytes, Mapping)) or not isinstance(self.endpoints, Iterable):
            raise ConfigurationError("endpoints", "expected a list of EndpointConfig", "use FailoverConfig.from_dict for dicts and URLs")
        endpoints = tuple(self.endpoints)
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
        if isinstance(self.health_checks, (str, bytes)) or not isinstance(self.health_checks or (), Iterable):
            raise ConfigurationError("health_checks", "expected a list of checks", "write a list, e.g. ['geofailover_core.health.PingHealthCheck']")
        object.__setattr__(self, "health_checks", tuple(self.health_checks or ()))
        if isinstance(self.client_options, Mapping):
            for key in self.client_options:
                if key in ENGINE_ONLY_FIELDS:
                    raise ConfigurationError(f"client_options.{key}", "an engine option, not a connection option", f"pass {key} as an engine option")
        object.__setattr__(self, "client_options", check_connection_options(self.client_options, ""))
        for spec in _ENGINE_SETTINGS:
            object.__setattr__(self, spec.name, check_value(spec.name, spec, getattr(self, spec.name)))
        base = self.base_connection_options()
        for ep in endpoints:  # a combination no single value shows (TLS options on a plain endpoint are dropped)
            ep.connection_params(base)

    # -- alternative constructors -------------------------------------------------

    @classmethod
    def from_string(cls, urls: str, **options: Any) -> FailoverConfig:
        """``"redis://a:6379/0?name=us&weight=2;rediss://:pw@b:6379/0?name=eu"``."""
        if not isinstance(urls, str):
            raise ConfigurationError("endpoints", f"expected a string, got {type(urls).__name__}", "separate complete URLs with ';'")
        return cls.from_dict({"endpoints": _split_endpoints(urls), **options})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FailoverConfig:
        """Build from a settings dict: ``endpoints`` (list or ``;`` string), engine
        options, and redis-py connection options for every endpoint.

        ``health_check_interval`` is refused at the top level of a dict: it
        used to be geofailover's probe interval and is redis-py's connection
        option, and a dict holds both kinds, so either reading could be the
        wrong one. ``probe_interval`` is ours; redis-py's goes in
        ``client_options`` (or an endpoint's options or URL).
        """
        if not isinstance(data, Mapping):
            raise ConfigurationError("GEOFAILOVER", f"expected a dict, got {type(data).__name__}", "write a dict with an 'endpoints' key")
        data = dict(data)
        raw = data.pop("endpoints", None)
        if raw is None and "url" in data:
            raw = data.pop("url")
        if raw is None:
            raise ConfigurationError("endpoints", "missing", "add 'endpoints': ['redis://host:6379/0?name=us-east&weight=2', ...]")
        if isinstance(raw, str):
            raw = _split_endpoints(raw)
        if not isinstance(raw, (list, tuple)):
            raise ConfigurationError("endpoints", f"expected a list or a ';'-separated string, got {type(raw).__name__}", "list the endpoint URLs")
        endpoints = tuple(EndpointConfig.from_dict(item, index=i) for i, item in enumerate(raw))
        kwargs: dict[str, Any] = {}
        client_options = data.pop("client_options", None)
        if client_options is None:
            client_options = {}
        if not isinstance(client_options, Mapping):
            raise ConfigurationError("client_options", f"expected a dict, got {type(client_options).__name__}", "write a dict of redis-py connection options")
        client_options = dict(client_options)
        if "health_check_interval" in data:
            raise ConfigurationError(
                "health_check_interval", "ambiguous: geofailover's probe interval is now called probe_interval, "
                "and health_check_interval is redis-py's connection health check",
                "write probe_interval for the time between probe rounds, or put redis-py's PING interval in "
                "client_options={'health_check_interval': ...}",
            )
        known = connection_option_names()
        for key, value in data.items():
            if not isinstance(key, str):
                raise ConfigurationError(repr(key), "option names are strings", "write the option's name as a string")
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

    def engine_settings(self) -> dict[str, Any]:
        """The engine options: what every user of one configuration name must agree
        on (connection options are each client's own and are not part of it)."""
        settings: dict[str, Any] = {"endpoints": tuple(ep.fingerprint() for ep in self.endpoints)}
        for name in sorted(ENGINE_ONLY_FIELDS):
            settings[name] = repr(getattr(self, name))
        return settings

    def fingerprint(self) -> tuple[Any, ...]:
        """What must match for two users of one name to share an engine."""
        return tuple(self.engine_settings().items())

    def connection_fingerprint(self) -> tuple[Any, ...]:
        """The global connection options, for users that build their connections
        from the engine's configuration rather than their own."""
        return tuple(sorted((k, repr(v)) for k, v in self.base_connection_options().items()))

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


#: The options a configuration is made of, besides its endpoints and connection options.
ENGINE_FIELDS: frozenset[str] = frozenset(f.name for f in fields(FailoverConfig)) - {"endpoints", "client_options"}
#: Engine defaults of connection options: each client may give its own.
CLIENT_FIELDS: frozenset[str] = frozenset(s.name for s in BOUNDS.values() if s.scope == "client")
#: The options every client of one engine shares.
ENGINE_ONLY_FIELDS: frozenset[str] = ENGINE_FIELDS - CLIENT_FIELDS - {"name"}
_ENGINE_SETTINGS: tuple[Setting, ...] = tuple(BOUNDS[name] for name in DEFAULTS)


def split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a client's keyword arguments into engine options and its own
    connection options (checked). A name redis-py's connections take is a
    connection option, as in ``redis.Redis``: ``socket_timeout`` and
    ``health_check_interval`` belong to this client's connections."""
    engine: dict[str, Any] = {}
    client: dict[str, Any] = {}
    known = connection_option_names()
    for key, value in options.items():
        if key in known:
            client[key] = value
        elif key in ENGINE_FIELDS:
            engine[key] = value
        else:
            raise _unknown("", key, ENGINE_FIELDS | known)
    return engine, check_connection_options(client)
