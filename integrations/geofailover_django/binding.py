"""Per-process state of one geofailover cache alias.

Django builds a cache backend (and a django-redis client) per thread and per
async context. What must exist once per alias per process lives here: the
settings, parsed once; the engine, shared by every thread's backend; the
bridge from engine events to :mod:`geofailover_django.signals`, set up on
first use rather than in ``AppConfig.ready()`` so that it works without the
app installed; and the ``IGNORE_EXCEPTIONS`` outage log (once per outage, not
once per cache call). No failover decision is taken here.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Hashable
from typing import Any

import django.db

from geofailover_core.adapters import SettingNames, engine_for
from geofailover_core.asyncio.loops import LoopClients
from geofailover_core.engine import FailoverEngine
from geofailover_core.events import GeoEvent
from geofailover_core.forking import after_fork_in_child
from geofailover_core.masking import mask_text

from . import signals
from .conf import CacheSettings, require, where

logger = logging.getLogger("geofailover.django")

_lock = threading.Lock()  # guards the bindings, their engines and their outage counts
#: By alias; a backend built by hand (no alias) by the settings it was built from.
_bindings: dict[Hashable, CacheBinding] = {}


class CacheBinding:
    """The settings, engine, signal bridge and outage log of one alias in this process."""

    def __init__(self, settings: CacheSettings, sender: type[Any], source: Hashable) -> None:
        self.settings = settings
        self.alias = settings.alias
        self.label = self.alias if self.alias is not None else settings.config.name  # for log lines
        self.sender = sender
        self.source = source  # the settings as written: a change makes a new binding
        self._engine: FailoverEngine | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._secrets = tuple(s for ep in settings.config.endpoints for s in ep.secrets)
        self.ignoring = False  # read without the lock on the hot path
        self.ignored = 0
        self.loops = LoopClients(self.engine, **settings.pool_kwargs)

    def engine(self) -> FailoverEngine:
        """The live engine of this alias; a closed one is replaced (tests, shutdown hooks)."""
        engine = self._engine
        if engine is not None and not engine.closed:
            return engine
        with _lock:
            if self._engine is None or self._engine.closed:
                engine = engine_for(self.settings.config, SettingNames(where(self.alias), f"{where(self.alias)}['OPTIONS']['GEOFAILOVER']"))
                if self._unsubscribe is not None:
                    self._unsubscribe()
                self._unsubscribe = engine.on("*", self._relay)
                self._engine = engine
            return self._engine

    def detach(self) -> None:
        """Stop relaying events (the alias was reconfigured)."""
        with _lock:
            if self._unsubscribe is not None:
                self._unsubscribe()
            self._unsubscribe = self._engine = None

    def _relay(self, event: GeoEvent) -> None:
        """On the engine's event thread: send the matching signal. ``send_robust``
        logs a raising receiver (``django.dispatch``) and still runs the others."""
        signal = signals.BY_KIND.get(event.kind)
        if signal is None:
            return
        try:
            signal.send_robust(sender=self.sender, alias=self.alias, event=event)
        finally:
            # No request cycle ever ends on this thread: close the database
            # connections receivers opened, as Django does after a request.
            try:
                django.db.close_old_connections()
            except Exception:  # no database configured, or it is down: not our concern here
                logger.debug("close_old_connections failed after a geofailover signal", exc_info=True)

    # -- IGNORE_EXCEPTIONS bookkeeping --------------------------------------------------

    def note_ignored(self, exc: BaseException | None) -> None:
        """An error is about to be swallowed by IGNORE_EXCEPTIONS: log the first of an outage."""
        with _lock:
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

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """django-redis's ``omit_exception`` calls its cache's ``logger.exception()``
        once per swallowed error, in its except block: this is that logger."""
        exc = sys.exc_info()[1]
        self.note_ignored(exc.__cause__ or exc if exc is not None else None)

    def note_success(self) -> None:
        """A cache call succeeded: end the outage, if one was being logged."""
        with _lock:
            if not self.ignoring:
                return
            self.ignoring = False
            count, self.ignored = self.ignored, 0
        logger.info("geofailover cache %r: Redis commands succeed again after %d ignored error(s)", self.label, count)


def binding_for(sender: type[Any], alias: str | None, location: Any, params: Any) -> CacheBinding:
    """The binding of a backend built from these settings (raises ImproperlyConfigured).

    The settings are parsed when they are new for the alias (its first use, or
    after they changed); a replaced binding stops relaying events.
    """
    source = (sender, alias, repr(location), repr(params))
    key = alias if alias is not None else source
    current = _bindings.get(key)
    if current is not None and current.source == source:
        return current
    binding = CacheBinding(require(alias, location, params), sender, source)
    with _lock:
        current = _bindings.get(key)
        if current is not None and current.source == source:  # another thread was first
            return current
        _bindings[key] = binding
    if current is not None:
        current.detach()
    return binding


def bindings() -> list[CacheBinding]:
    with _lock:
        return list(_bindings.values())


def reset() -> None:
    """Forget every binding (tests)."""
    with _lock:
        old = list(_bindings.values())
        _bindings.clear()
    for binding in old:
        binding.detach()


@after_fork_in_child
def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
