"""A Celery result backend that follows the geofailover engine: ``geofailover://``.

Celery's ``RedisBackend`` on a :class:`~geofailover_core.FailoverRedis`,
plus what results need across a switch (``docs/celery.md``): a result stored
before it is still found after it, and a waiting ``AsyncResult.get()``
follows to the new endpoint.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import Any

import redis
from celery import states  # type: ignore[import-untyped]
from celery.backends.redis import RedisBackend, ResultConsumer  # type: ignore[import-untyped]

from geofailover_core.client import FailoverRedis
from geofailover_core.config import connection_option_names
from geofailover_core.endpoint import EndpointState
from geofailover_core.engine import FailoverEngine
from geofailover_core.errors import ConfigurationError
from geofailover_core.masking import mask_text
from geofailover_core.pool import FailoverConnectionPool

from . import signals
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
        self._geo_next_refetch = time.monotonic() + self.backend.geo.options["result_refetch_interval"]
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
        interval = self.backend.geo.options["result_refetch_interval"]
        if not interval or not self.subscribed_to or time.monotonic() < self._geo_next_refetch:
            return
        self._geo_next_refetch = time.monotonic() + interval
        with self.reconnect_on_error(), self._locked():
            for meta in self.backend.mget(list(self.subscribed_to), everywhere=True):
                if meta:
                    self.on_state_change(self._decode_result(meta), None)

    def _geo_follow(self) -> None:
        """After a switch, Celery's reconnect (catch-up MGET, then re-subscribe); by generation,
        not on error: a failback leaves the old endpoint alive, its subscription silent forever."""
        engine = self.backend.geofailover
        if self._pubsub is None or engine.generation == self._geo_generation:
            return
        logger.info("geofailover[%s]: result consumer re-subscribing on %s after a switch",
                    engine.name, engine.active or "no endpoint")
        self._ensure(self._reconnect_pubsub, ())


class GeoFailoverBackend(RedisBackend):  # type: ignore[misc]
    """``result_backend = "geofailover://..."`` (see the module docstring)."""

    ResultConsumer = GeoResultConsumer

    geo: Resolved
    _geo_switch_seen = (0, -math.inf)  # (generation, monotonic time this backend first saw it)
    _geo_stood_in = False  # another endpoint carries the stand-in mark (at the last look)
    _geo_next_look = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not hasattr(self, "geo"):  # Celery calls _params_from_url only when there is a URL
            raise ConfigurationError(
                "result_backend", "the geofailover backend was selected without a geofailover:// URL",
                "write result_backend = 'geofailover://host:port/db?name=...;...' or 'geofailover://NAME'",
            )

    def _params_from_url(self, url: str, defaults: dict[str, Any]) -> dict[str, Any]:
        """Celery's URL seam: resolve the engine; keep only connection options for the pool."""
        conf = self.app.conf
        self.geo = resolve(url, (conf.get("result_backend_transport_options") or {}).get("geofailover"), "backend")
        signals.bridge(self.geo.engine)
        known = connection_option_names() - _ENDPOINT_KEYS
        params = {key: value for key, value in defaults.items() if key in known and value is not None}
        for setting, default in _CELERY_DEFAULTS.items():
            if conf.get(setting) == default:
                params.pop(setting.removeprefix("redis_"), None)
        if not params.get("retry_on_timeout"):
            params.pop("retry_on_timeout", None)
        return params

    @property
    def geofailover(self) -> FailoverEngine:
        """The failover engine of the result backend."""
        return self.geo.engine

    def _get_pool(self, **params: Any) -> FailoverConnectionPool:
        return FailoverConnectionPool(self.geo.engine, max_connections=self.max_connections or None, **params)

    def _get_client(self) -> type[FailoverRedis]:
        return FailoverRedis

    def as_uri(self, include_password: bool = False) -> str:
        """Every endpoint with its name and weight, passwords masked (banner, log lines)."""
        return self.geo.as_uri(include_password=include_password)

    @property
    def _geo_mark(self) -> bytes:
        return self.get_key_for_task("~geofailover:stood-in")  # type: ignore[no-any-return]

    def _set(self, key: str, value: Any, *args: Any, **kwargs: Any) -> None:
        """Celery's write; while the active endpoint stands in for a preferred one, it is marked so
        that readers anywhere look there (:meth:`_geo_elsewhere`) for as long as results live."""
        super()._set(key, value, *args, **kwargs)
        engine = self.geo.engine
        if self.geo.options["fallback_reads"] and engine.active != engine.ranked()[0].name:
            self.client.set(self._geo_mark, 1, ex=self.expires)

    def _geo_elsewhere(self) -> bool:
        """Could a switch have left a result on another endpoint? Only then does a read that misses
        ask them: the active endpoint is not the preferred one, this process saw a switch in the
        last ``fallback_window``, or another endpoint stood in (its mark is looked for every 5 s)."""
        engine = self.geo.engine
        active, generation = engine.routing
        now = time.monotonic()
        if generation != self._geo_switch_seen[0]:
            self._geo_switch_seen = (generation, now)
        if active is not engine.ranked()[0] or now - self._geo_switch_seen[1] < self.geo.options["fallback_window"]:
            return True
        if now >= self._geo_next_look:
            self._geo_next_look = now + 5.0
            self._geo_stood_in = any(self._geo_marked(ep) for ep in engine.eligible_endpoints(exclude=engine.active))
        return self._geo_stood_in

    def _geo_marked(self, ep: EndpointState) -> bool:
        with contextlib.suppress(redis.RedisError, OSError):  # not known: looked for again at the next look
            return bool(ep.probe_client(self.geo.engine.config).exists(self._geo_mark))
        return False

    def get(self, key: Any) -> Any:
        return self.mget([key])[0]

    def mget(self, keys: Any, everywhere: bool = False) -> list[Any]:
        """Celery's read; a task that is not final here is looked for on the other endpoints when
        :meth:`_geo_elsewhere` (or ``everywhere``, the waiting consumer's periodic re-read) says so."""
        keys = list(keys)
        values = list(self.client.mget(keys))
        if not keys or not self.geo.options["fallback_reads"] or not (everywhere or self._geo_elsewhere()):
            return values
        wanted = [i for i, value in enumerate(values) if not self._geo_final(value)]
        if not wanted:
            return values
        engine = self.geo.engine
        for ep in engine.eligible_endpoints(exclude=engine.active):
            try:
                found = ep.direct_client(engine.config).mget([keys[i] for i in wanted])
            except Exception as exc:  # noqa: BLE001 - a fallback read is best effort
                logger.debug("geofailover[%s]: fallback read on %s failed: %s", engine.name, ep.name, mask_text(repr(exc)))
                continue
            for i, value in zip(wanted, found, strict=True):
                if value is not None and (values[i] is None or self._geo_final(value)):
                    values[i] = value
            wanted = [i for i in wanted if not self._geo_final(values[i])]
            if not wanted:
                break
        return values

    def _geo_final(self, value: Any) -> bool:
        """Whether a stored task meta is in a final state (SUCCESS, FAILURE, REVOKED)."""
        try:
            meta = None if value is None else self.decode_result(value)
        except Exception:  # noqa: BLE001 - not a task meta (a group or chord key): take it as found
            return True
        return isinstance(meta, dict) and meta.get("status") in states.READY_STATES
