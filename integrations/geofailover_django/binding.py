"""Per-process state of one geofailover cache alias.

Django builds a cache backend, and so a django-redis client, per thread (and
per async context). What must exist once per alias per process lives here:

* the engine, looked up in the core registry (one per configuration name per
  process), so every thread's backend shares one monitor and one set of
  breakers;
* the bridge from engine events to :mod:`geofailover_django.signals`, set up
  the first time the alias is used, not in ``AppConfig.ready()``, so it works
  even when the app is not installed;
* the "ignored errors" bookkeeping, so ``IGNORE_EXCEPTIONS`` logs once per
  outage instead of once per cache call.

A binding never decides anything about failover: that is the engine's job.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from geofailover_core import registry
from geofailover_core.engine import FailoverEngine
from geofailover_core.events import GeoEvent
from geofailover_core.masking import mask_text

from .conf import CacheSettings

logger = logging.getLogger("geofailover.django")

_lock = threading.Lock()
_bindings: dict[str, CacheBinding] = {}
# Django builds a backend per thread, and under ASGI per request context: the
# settings of an alias are parsed once, not every time (bounded; keyed by the
# settings' repr, so changed settings are parsed again).
_memo: dict[tuple[Any, ...], CacheBinding] = {}
_MEMO_SIZE = 64


class CacheBinding:
    """The engine, signal bridge and outage log of one alias in this process."""

    def __init__(self, settings: CacheSettings, sender: type[Any]) -> None:
        self.settings = settings
        self.alias = settings.alias
        self.sender = sender
        self._lock = threading.Lock()
        self._engine: FailoverEngine | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._secrets = tuple(s for ep in settings.config.endpoints for s in ep.secrets)
        self.ignoring = False  # read without the lock on the hot path
        self.ignored = 0
        # True while a management command uses the engine only to look at the
        # fleet: its probe results are this process's view, not a switch of
        # serving traffic, so they must not fire the project's receivers.
        self.observer = False

    @property
    def label(self) -> str:
        return self.alias if self.alias is not None else self.settings.engine_name

    def engine(self) -> FailoverEngine:
        """The live engine of this alias; a closed one is replaced (tests, shutdown hooks)."""
        engine = self._engine
        if engine is not None and not engine.closed:
            return engine
        with self._lock:
            engine = self._engine
            if engine is None or engine.closed:
                engine = registry.get_engine(self.settings.config)
                if self._unsubscribe is not None:
                    self._unsubscribe()
                self._unsubscribe = engine.on("*", self._relay)
                self._engine = engine
            return engine

    def detach(self) -> None:
        """Stop relaying events (the alias was reconfigured)."""
        with self._lock:
            if self._unsubscribe is not None:
                self._unsubscribe()
            self._unsubscribe = None
            self._engine = None

    # -- signals ----------------------------------------------------------------------

    def _relay(self, event: GeoEvent) -> None:
        """Runs on the engine's event thread: send the matching Django signal robustly."""
        from . import signals

        signal = signals.BY_KIND.get(event.kind)
        if signal is None or self.observer:
            return
        try:
            results = signal.send_robust(sender=self.sender, alias=self.alias, event=event)
        finally:
            _close_db_connections()
        for receiver, result in results:
            if isinstance(result, BaseException):
                logger.error(
                    "geofailover cache %r: receiver %s of signal %s raised %s; the other receivers still ran",
                    self.label, _describe(receiver), event.kind, type(result).__name__,
                    exc_info=(type(result), result, result.__traceback__),
                )

    # -- IGNORE_EXCEPTIONS bookkeeping --------------------------------------------------

    def note_ignored(self, exc: BaseException | None) -> None:
        """An error is about to be swallowed by IGNORE_EXCEPTIONS: log the first of an outage."""
        with self._lock:
            self.ignored += 1
            if self.ignoring:
                return
            self.ignoring = True
        what = mask_text(f"{type(exc).__name__}: {exc}", self._secrets) if exc is not None else "unknown error"
        logger.warning(
            "geofailover cache %r: Redis command failed (%s); IGNORE_EXCEPTIONS is on, so cache calls return "
            "their defaults until a command succeeds again (logged once per outage)",
            self.label, what,
        )

    def note_success(self) -> None:
        """A cache call succeeded: end the outage, if one was being logged."""
        with self._lock:
            if not self.ignoring:
                return
            self.ignoring = False
            count, self.ignored = self.ignored, 0
        logger.info("geofailover cache %r: Redis commands succeed again after %d ignored error(s)", self.label, count)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<CacheBinding alias={self.alias!r} engine={self.settings.engine_name!r}>"


def _describe(receiver: Any) -> str:
    module = getattr(receiver, "__module__", None) or ""
    name = getattr(receiver, "__qualname__", None) or type(receiver).__name__
    return f"{module}.{name}" if module else str(name)


def _close_db_connections() -> None:
    """Receivers run on the event thread, which no request cycle ever closes:
    drop database connections they opened, as Django does after a request."""
    try:
        from django.db import close_old_connections

        close_old_connections()
    except Exception:  # no database configured, or it is down: not our concern here
        logger.debug("close_old_connections failed after a geofailover signal", exc_info=True)


def binding_for(settings: CacheSettings, sender: type[Any]) -> CacheBinding:
    """The binding of ``settings.alias`` in this process (replaced when the settings changed)."""
    key = settings.alias if settings.alias is not None else f"\0{settings.engine_name}"
    fingerprint = settings.fingerprint()
    with _lock:
        current = _bindings.get(key)
        if current is not None and current.settings.fingerprint() == fingerprint and current.sender is sender:
            return current
        binding = CacheBinding(settings, sender)
        _bindings[key] = binding
    if current is not None:
        current.detach()
    return binding


def lookup(key: tuple[Any, ...]) -> CacheBinding | None:
    """A binding memoised under ``key`` by :func:`remember`, if still current."""
    binding = _memo.get(key)
    if binding is None:
        return None
    current = _bindings.get(binding.alias if binding.alias is not None else f"\0{binding.settings.engine_name}")
    return binding if current is binding else None


def remember(key: tuple[Any, ...], binding: CacheBinding) -> None:
    with _lock:
        if len(_memo) >= _MEMO_SIZE:
            _memo.clear()
        _memo[key] = binding


def bindings() -> list[CacheBinding]:
    with _lock:
        return list(_bindings.values())


def reset() -> None:
    """Forget every binding (tests)."""
    with _lock:
        old = list(_bindings.values())
        _bindings.clear()
        _memo.clear()
    for binding in old:
        binding.detach()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    for binding in list(_bindings.values()):
        binding._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
