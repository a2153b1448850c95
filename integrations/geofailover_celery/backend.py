"""A Celery result backend that follows the geofailover engine: ``geofailover://``.

It is Celery's :class:`~celery.backends.redis.RedisBackend` on a
:class:`~geofailover_core.FailoverRedis` client, plus what results need
across a switch:

* **Writes** (``SETEX`` + ``PUBLISH``) go to the active endpoint; a write
  that fails because the endpoint died is retried on the new one by the core
  (and by Celery's ``ensure()`` retry policy).
* **Reads** fall back: when the active endpoint has no result for a task, or
  only a non-final state (``STARTED``, ``RETRY``), the other healthy
  endpoints are asked too and a final state wins. A result stored before a
  switch is therefore still found after it, as long as its endpoint is up.
* **Waiting** (``AsyncResult.get()``): the result consumer notices a new
  engine generation on its next poll (at most about one second, Celery's cap
  on a pub/sub wait) and runs Celery's own reconnect: re-fetch the pending
  tasks' states (with the fallback above), then re-subscribe on the new
  endpoint. Results published while it moved are found by that re-fetch.
  While it waits it also re-reads the pending results every
  ``result_refetch_interval`` (1 s): processes switch at slightly different
  moments, and a worker still on the old endpoint publishes its result
  where nobody listens any more.

Chords keep their counters (``.j``/``.t``/``.s`` keys) on the endpoint that
was active when each header task finished: a chord whose header tasks finish
on both sides of a switch never fires its callback unless the endpoints
replicate (Active-Active). Groups work: their members are plain results.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import states  # type: ignore[import-untyped]
from celery.backends.redis import RedisBackend, ResultConsumer  # type: ignore[import-untyped]

from geofailover_core.client import FailoverRedis
from geofailover_core.config import connection_option_names
from geofailover_core.engine import FailoverEngine
from geofailover_core.errors import ConfigurationError
from geofailover_core.masking import mask_text
from geofailover_core.pool import FailoverConnectionPool

from . import signals
from .endpoints import endpoint_client, other_endpoints
from .settings import Resolved, resolve

logger = logging.getLogger("geofailover.celery")

# Celery's defaults for these settings are unsuitable under failover (a
# frozen region would cost 120 s per call); they apply only when changed.
_CELERY_DEFAULTS = {"redis_socket_timeout": 120.0, "redis_socket_connect_timeout": None}
# connparams Celery builds that the failover pool must not receive: the
# endpoint addresses and credentials come from the engine's configuration.
_ENDPOINT_KEYS = frozenset({"host", "port", "db", "password", "username", "path", "connection_class", "max_connections", "ssl"})


class GeoResultConsumer(ResultConsumer):  # type: ignore[misc]
    """Celery's redis result consumer, re-synchronised after every switch."""

    backend: GeoFailoverBackend
    _geo_generation = -1
    _geo_next_refetch = 0.0

    def start(self, initial_task_id: str, **kwargs: Any) -> Any:
        self._geo_generation = self.backend.geofailover.generation
        self._geo_next_refetch = time.monotonic() + self.backend._geo.options["result_refetch_interval"]
        return super().start(initial_task_id, **kwargs)

    def _reconnect_pubsub(self) -> None:
        self._geo_generation = self.backend.geofailover.generation
        super()._reconnect_pubsub()

    def drain_events(self, timeout: float | None = None) -> Any:
        self._geo_follow()
        self._geo_refetch()
        return super().drain_events(timeout)

    def _geo_refetch(self) -> None:
        """Re-read the pending results (with fallback reads) every ``result_refetch_interval``."""
        interval = self.backend._geo.options["result_refetch_interval"]
        if not interval or not self.subscribed_to or time.monotonic() < self._geo_next_refetch:
            return
        self._geo_next_refetch = time.monotonic() + interval
        with self.reconnect_on_error(), self._locked():
            keys = list(self.subscribed_to)
            for meta in self.backend.mget(keys):
                if meta:
                    self.on_state_change(self._decode_result(meta), None)

    def _geo_follow(self) -> None:
        """After a switch: Celery's reconnect (catch-up MGET, then re-subscribe).

        Checked by generation rather than by error, because a failback leaves
        the old endpoint alive: the subscription there stays silent forever.
        """
        if self._pubsub is None:
            return
        engine = self.backend.geofailover
        if engine.generation == self._geo_generation:
            return
        logger.info("geofailover[%s]: result consumer re-subscribing on %s after a switch", engine.name, engine.active)
        self._ensure(self._reconnect_pubsub, ())


class GeoFailoverBackend(RedisBackend):  # type: ignore[misc]
    """``result_backend = "geofailover://..."`` (see the module docstring)."""

    ResultConsumer = GeoResultConsumer

    _geo: Resolved

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not hasattr(self, "_geo"):  # Celery calls _params_from_url only when there is a URL
            raise ConfigurationError(
                "result_backend", "the geofailover backend was selected without a geofailover:// URL",
                "write result_backend = 'geofailover://host:port/db?name=...;...' or 'geofailover://NAME'",
            )

    def _params_from_url(self, url: str, defaults: dict[str, Any]) -> dict[str, Any]:
        """Celery's URL seam: resolve the engine; keep only connection options for the pool."""
        conf = self.app.conf
        self._geo = resolve(url, (conf.get("result_backend_transport_options") or {}).get("geofailover"), "backend")
        signals.bridge(self._geo.engine)
        params: dict[str, Any] = {}
        for key, value in defaults.items():
            if key in _ENDPOINT_KEYS or value is None:
                continue
            params[key] = value
        for setting, default in _CELERY_DEFAULTS.items():
            key = setting.removeprefix("redis_")
            if conf.get(setting) == default:
                params.pop(key, None)
        if not params.get("retry_on_timeout"):
            params.pop("retry_on_timeout", None)
        if self.max_connections:
            params["max_connections"] = self.max_connections
        return params

    @property
    def geofailover(self) -> FailoverEngine:
        """The failover engine of the result backend."""
        return self._geo.engine

    def _get_pool(self, **params: Any) -> FailoverConnectionPool:
        known = connection_option_names()
        max_connections = params.pop("max_connections", None)
        options = {k: v for k, v in params.items() if k in known}
        return FailoverConnectionPool(self._geo.engine, max_connections=max_connections, **options)

    def _get_client(self) -> type[FailoverRedis]:
        return FailoverRedis

    def as_uri(self, include_password: bool = False) -> str:
        """Every endpoint with its name and weight, passwords masked (banner, log lines)."""
        return self._geo.as_uri(include_password=include_password)

    # -- reads that look beyond the active endpoint ----------------------------------------

    def get(self, key: Any) -> Any:
        return self.mget([key])[0]

    def mget(self, keys: Any) -> list[Any]:
        keys = list(keys)
        values = list(self.client.mget(keys))
        if not keys or not self._geo.options["fallback_reads"]:
            return values
        wanted = [i for i, value in enumerate(values) if not self._geo_final(value)]
        if not wanted:
            return values
        engine = self._geo.engine
        for name in other_endpoints(engine, engine.active, require_healthy=False):
            try:
                found = endpoint_client(engine, name).mget([keys[i] for i in wanted])
            except Exception as exc:  # noqa: BLE001 - a fallback read is best effort
                logger.debug("geofailover[%s]: fallback read on %s failed: %s", engine.name, name, mask_text(repr(exc)))
                continue
            still = []
            for i, value in zip(wanted, found, strict=True):
                if value is None:
                    still.append(i)
                elif values[i] is None or self._geo_final(value):
                    values[i] = value
                    if not self._geo_final(value):
                        still.append(i)
                else:
                    still.append(i)
            wanted = still
            if not wanted:
                break
        return values

    def _geo_final(self, value: Any) -> bool:
        """Whether a stored task meta is in a final state (SUCCESS, FAILURE, REVOKED)."""
        if value is None:
            return False
        try:
            meta = self.decode_result(value)
        except Exception:  # noqa: BLE001 - not a task meta (a group or chord key): take it as found
            return True
        return isinstance(meta, dict) and meta.get("status") in states.READY_STATES
