"""Reading ``GEOFAILOVER_*`` keys from ``app.config``.

The extension and the Flask-Caching backend both read them here, so both get
the *same* engine from the core registry whichever of ``geo.init_app(app)``
and ``cache.init_app(app)`` runs first. Parsing, validating and naming the key
the user wrote in errors is :mod:`geofailover_core.adapters`'; what is Flask's:
the keys of a named instance, ``_URL`` (a string) *or* ``_ENDPOINTS`` (a
list), and the pool options of the extension's client.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import click

from geofailover_core import adapters
from geofailover_core.engine import FailoverEngine
from geofailover_core.errors import ConfigurationError

DEFAULT_INSTANCE = "default"
_INSTANCE_RE = re.compile(r"^[a-z][a-z0-9_]*$")

# The size of the extension client's pool (FailoverRedis's keyword arguments).
# Not engine options: every client of one engine may size its pool differently.
POOL_OPTIONS: dict[str, tuple[Any, adapters.Validator]] = {
    "max_connections": (None, partial(adapters.check_count, optional=True)),
    "blocking_pool": (False, adapters.check_bool),
    "pool_timeout": (20.0, partial(adapters.check_seconds, example="20")),
}


class SettingsError(ConfigurationError, click.ClickException):
    """A ``ConfigurationError`` that the ``flask`` command line shows as its
    message and exit code 2: it is raised while Flask loads the app, before
    any command runs, where anything else prints a traceback first."""

    exit_code = 2

    def __init__(self, exc: ConfigurationError) -> None:
        ConfigurationError.__init__(self, exc.setting, exc.problem, exc.fix)
        click.ClickException.__init__(self, str(exc))


@contextmanager
def reported() -> Iterator[None]:
    """Raise the settings mistakes of the block as :class:`SettingsError`."""
    try:
        yield
    except ConfigurationError as exc:
        raise SettingsError(exc) from None


@dataclass(frozen=True)
class Keys:
    """The ``app.config`` keys of one named instance."""

    url: str
    endpoints: str
    options: str


def keys_for(name: str) -> Keys:
    """``default`` reads ``GEOFAILOVER_URL``; ``sessions`` reads ``GEOFAILOVER_SESSIONS_URL``.
    Hence instance names are what maps one-to-one onto an upper-case key."""
    if not isinstance(name, str) or not _INSTANCE_RE.match(name):
        raise ConfigurationError(
            "GeoFailover(name=...)", f"{name!r} is not a valid instance name",
            "use lower-case letters, digits and '_', starting with a letter (e.g. 'sessions'); "
            "its settings are then GEOFAILOVER_SESSIONS_URL, ..._ENDPOINTS, ..._OPTIONS",
        )
    prefix = "GEOFAILOVER_" if name == DEFAULT_INSTANCE else f"GEOFAILOVER_{name.upper()}_"
    return Keys(url=f"{prefix}URL", endpoints=f"{prefix}ENDPOINTS", options=f"{prefix}OPTIONS")


def load(app_config: Mapping[str, Any], name: str) -> tuple[FailoverEngine, dict[str, Any]]:
    """The engine of instance ``name`` and its client's pool options.

    The engine name (which keys the registry and the fleet's control-plane
    records) defaults to the instance name, so a web process and ``flask
    geofailover ...`` in another process agree on it.
    """
    keys = keys_for(name)
    url, endpoints = app_config.get(keys.url), app_config.get(keys.endpoints)
    if url is not None and endpoints is not None:
        raise ConfigurationError(f"{keys.url} / {keys.endpoints}", "both are set", f"set only one: {keys.url} (a ';'-separated string) or {keys.endpoints} (a list)")
    if url is None and endpoints is None:
        raise ConfigurationError(
            keys.url, "missing", f"set app.config[{keys.url!r}] = 'redis://us.example:6379/0?name=us-east&weight=2;redis://eu.example:6379/0?name=eu-west' "
            f"(or FLASK_{keys.url} with app.config.from_prefixed_env()), or {keys.endpoints} = [{{'name': 'us-east', 'url': ...}}, ...]",
        )
    if url is not None and not isinstance(url, str):
        raise ConfigurationError(keys.url, f"expected a string, got {type(url).__name__}", f"write URLs separated by ';', or use {keys.endpoints} for a list")
    if isinstance(endpoints, str):
        raise ConfigurationError(keys.endpoints, "a string, expected a list", f"put a ';'-separated string in {keys.url}, or write a list here")
    names = adapters.SettingNames(endpoints=keys.url if url is not None else keys.endpoints, options=keys.options)
    options = adapters.options_dict(app_config.get(keys.options), keys.options)
    pool = adapters.pop_options(options, POOL_OPTIONS, names.option)
    config = adapters.load_config(url if url is not None else endpoints, options, names, defaults={"name": name})
    return adapters.engine_for(config, names), pool
