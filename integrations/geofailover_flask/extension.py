"""The ``GeoFailover`` Flask extension: ``GEOFAILOVER_*`` settings in, the
engine from the core registry, per-app state in ``app.extensions``
(:mod:`.state`), events out as blinker signals, and ``flask geofailover``."""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app

from geofailover_core.adapters import client_connection_options
from geofailover_core.client import FailoverRedis
from geofailover_core.engine import FailoverEngine

from . import settings, signals
from .cli import geofailover_command
from .state import EXTENSION_KEY, GeoFailoverState, client_for, states


class GeoFailover:
    """Client-side geographic Redis failover for a Flask app.

    ``GeoFailover(app)`` or ``geo = GeoFailover()`` + ``geo.init_app(app)``.
    ``GeoFailover(name="sessions")`` is a second, independent instance whose
    settings are ``GEOFAILOVER_SESSIONS_URL``/``_ENDPOINTS``/``_OPTIONS``.
    Inside an app context ``geo.client`` is a ``FailoverRedis`` (a real
    ``redis.Redis``) that follows the active endpoint.
    """

    def __init__(self, app: Flask | None = None, *, name: str = settings.DEFAULT_INSTANCE) -> None:
        settings.keys_for(name)  # a bad name fails here, not at init_app
        self.name = name
        if app is not None:
            self.init_app(app)

    @settings.reported()
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
        engine, pool_options = settings.load(app.config, self.name)
        registered[self.name] = GeoFailoverState(self.name, engine, client_for(engine, pool_options), engine.config, pool_options)
        signals.relay(app, engine, self.name)
        if geofailover_command.name not in app.cli.commands:
            app.cli.add_command(geofailover_command)

    # -- access ------------------------------------------------------------------

    def _state(self, app: Flask | None = None) -> GeoFailoverState:
        target = app if app is not None else current_app
        state = states(target).get(self.name)
        if state is None:
            raise RuntimeError(
                f"GeoFailover(name={self.name!r}) is not initialised on app {target.name!r}; call geo.init_app(app) in your app factory"
            )
        return state

    @property
    def client(self) -> FailoverRedis:
        """The current app's ``FailoverRedis`` (needs an app context)."""
        return self._state().client

    @property
    def engine(self) -> FailoverEngine:
        """The current app's failover engine: ``active``, ``status()``, ``failover_to()``, ``pin()``, ``on()``..."""
        return self._state().engine

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
        options = client_connection_options(redis_options, "make_client", settings.keys_for(self.name).options)
        return client_for(state.engine, state.pool_options, **options)

    def status(self, app: Flask | None = None) -> dict[str, Any]:
        """The engine's JSON-serialisable status (masked URLs, no secrets)."""
        return self._state(app).engine.status()

    def __repr__(self) -> str:
        return f"<GeoFailover name={self.name!r}>"
