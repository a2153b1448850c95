"""The ``GeoFailover`` Flask extension.

It holds no failover logic: it reads ``GEOFAILOVER_*`` settings, asks the
core registry for the engine of that configuration, and keeps per-app state
(engine, a ``FailoverRedis`` on its own pool) in
``app.extensions["geofailover"][name]``. Nothing app-specific is stored on
the extension object, so one ``GeoFailover()`` can serve any number of apps
(an app factory called once per test, ``DispatcherMiddleware``...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app

from geofailover_core.client import FailoverRedis
from geofailover_core.config import FailoverConfig
from geofailover_core.engine import FailoverEngine
from geofailover_core.errors import ConfigurationError
from geofailover_core.pool import FailoverBlockingConnectionPool, FailoverConnectionPool, FailoverPoolMixin
from geofailover_core.registry import get_engine

from . import settings, signals

EXTENSION_KEY = "geofailover"


@dataclass(frozen=True)
class GeoFailoverState:
    """What one ``GeoFailover`` instance keeps for one app."""

    name: str
    engine: FailoverEngine
    client: FailoverRedis
    config: FailoverConfig
    pool_options: settings.PoolOptions


def states(app: Flask) -> dict[str, GeoFailoverState]:
    """Every ``GeoFailover`` instance initialised on ``app``, by name, in init order."""
    found = app.extensions.get(EXTENSION_KEY)
    return found if isinstance(found, dict) else {}


def make_pool(engine: FailoverEngine, pool: settings.PoolOptions, **client_options: Any) -> FailoverPoolMixin:
    if pool.blocking_pool:
        return FailoverBlockingConnectionPool(engine, max_connections=pool.max_connections or 50, timeout=pool.pool_timeout, **client_options)
    return FailoverConnectionPool(engine, max_connections=pool.max_connections, **client_options)


def resolve(app: Flask, name: str) -> tuple[FailoverEngine, settings.PoolOptions]:
    """The engine and pool options of instance ``name`` on ``app``: the
    extension's if it is initialised, else built from the same
    ``GEOFAILOVER_*`` keys (the core registry makes that the very engine the
    extension will get when its ``init_app`` runs later)."""
    state = states(app).get(name)
    if state is not None:
        return state.engine, state.pool_options
    config, pool_options = settings.load(app.config, name)
    try:
        return get_engine(config), pool_options
    except ConfigurationError as exc:
        raise settings.rekey_registry_error(exc, name, config.name) from None


class GeoFailover:
    """Client-side geographic Redis failover for a Flask app.

    ``GeoFailover(app)`` or ``geo = GeoFailover()`` + ``geo.init_app(app)``.
    ``GeoFailover(name="sessions")`` is a second, independent instance whose
    settings are ``GEOFAILOVER_SESSIONS_URL``/``_ENDPOINTS``/``_OPTIONS``.
    Inside an app context ``geo.client`` is a ``FailoverRedis`` (a real
    ``redis.Redis``) that follows the active endpoint.
    """

    def __init__(self, app: Flask | None = None, *, name: str = settings.DEFAULT_INSTANCE) -> None:
        self.name = settings.check_instance_name(name)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Validate this instance's settings and attach its engine to ``app``.

        Raises :class:`~geofailover_core.ConfigurationError` naming the key and
        the fix when settings are missing or wrong, so a typo stops the deploy
        instead of surfacing during an outage.
        """
        keys = settings.keys_for(self.name)
        app.config.setdefault(keys.url, None)
        app.config.setdefault(keys.endpoints, None)
        app.config.setdefault(keys.options, {})
        registered = app.extensions.setdefault(EXTENSION_KEY, {})
        if self.name in registered:
            raise RuntimeError(
                f"a GeoFailover instance named {self.name!r} is already initialised on app {app.name!r}; "
                "call init_app once per app, or give the second instance its own name: GeoFailover(name='sessions')"
            )
        config, pool_options = settings.load(app.config, self.name)
        try:
            engine = get_engine(config)
        except ConfigurationError as exc:
            raise settings.rekey_registry_error(exc, self.name, config.name) from None
        client = FailoverRedis(connection_pool=make_pool(engine, pool_options))
        registered[self.name] = GeoFailoverState(self.name, engine, client, config, pool_options)
        signals.relay(app, engine, self.name)
        from .cli import geofailover_command

        if geofailover_command.name not in app.cli.commands:
            app.cli.add_command(geofailover_command)

    # -- access ------------------------------------------------------------------

    def _state(self, app: Flask | None) -> GeoFailoverState:
        target = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
        state = states(target).get(self.name)
        if state is None:
            raise RuntimeError(
                f"GeoFailover(name={self.name!r}) is not initialised on app {target.name!r}; call geo.init_app(app) in your app factory"
            )
        return state

    @property
    def client(self) -> FailoverRedis:
        """The current app's ``FailoverRedis`` (needs an app context)."""
        return self._state(None).client

    @property
    def engine(self) -> FailoverEngine:
        """The current app's failover engine: ``active``, ``status()``, ``failover_to()``, ``pin()``, ``on()``..."""
        return self._state(None).engine

    def get_client(self, app: Flask | None = None) -> FailoverRedis:
        """``app``'s client, usable outside an app context (e.g. for ``SESSION_REDIS``)."""
        return self._state(app).client

    def get_engine(self, app: Flask | None = None) -> FailoverEngine:
        return self._state(app).engine

    def make_client(self, app: Flask | None = None, **redis_options: Any) -> FailoverRedis:
        """A new ``FailoverRedis`` on the same engine with other redis-py
        connection options, e.g. ``decode_responses=True`` for your own code
        while Flask-Session and Flask-Caching need bytes. Engine options
        (timeouts of the health monitor, failback...) are per configuration
        and belong in ``GEOFAILOVER_OPTIONS``."""
        state = self._state(app)
        client_options = settings.connection_options(redis_options, "make_client", settings.keys_for(self.name))
        return FailoverRedis(connection_pool=make_pool(state.engine, state.pool_options, **client_options))

    def status(self, app: Flask | None = None) -> dict[str, Any]:
        """The engine's JSON-serialisable status (masked URLs, no secrets)."""
        return self._state(app).engine.status()

    def __repr__(self) -> str:
        return f"<GeoFailover name={self.name!r}>"
