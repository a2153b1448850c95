"""Events ("custom actions") and the thread that delivers them.

User callbacks run on one dispatcher thread per engine, never on the thread
that executed a Redis command and never while an engine lock is held: a slow
pager call or a buggy receiver must not stall application traffic or the
failover itself. An exception in a callback is logged and swallowed, and the
remaining callbacks still run.
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

logger = logging.getLogger("geofailover")


class Reason(enum.StrEnum):
    """Why traffic moved. Values match redis-py's OTel vocabulary where it has one."""

    HEALTH_CHECK = "health_check"
    CIRCUIT_BREAKER = "circuit_breaker"
    FAILBACK = "failback"
    MANUAL = "manual"
    PIN = "pin"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class GeoEvent:
    """Base of all events. ``from_endpoint``/``to_endpoint`` are endpoint names."""

    kind: ClassVar[str] = "event"
    config: str
    from_endpoint: str | None = None
    to_endpoint: str | None = None
    reason: str | None = None
    detail: str = ""
    timestamp: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True)
class FailoverEvent(GeoEvent):
    """Traffic moved away from ``from_endpoint`` (down, or manual switch)."""

    kind: ClassVar[str] = "failover"


@dataclass(frozen=True)
class FailbackEvent(GeoEvent):
    """Traffic returned to a higher-priority endpoint."""

    kind: ClassVar[str] = "failback"


@dataclass(frozen=True)
class HealthChangedEvent(GeoEvent):
    """An endpoint's health verdict changed. ``endpoint`` is its name."""

    kind: ClassVar[str] = "health_changed"
    endpoint: str = ""
    old: str = ""
    new: str = ""


@dataclass(frozen=True)
class AllDownEvent(GeoEvent):
    """No endpoint can serve: commands fail fast with NoHealthyEndpointError."""

    kind: ClassVar[str] = "all_down"


@dataclass(frozen=True)
class RecoveredEvent(GeoEvent):
    """An endpoint serves again after every endpoint was down."""

    kind: ClassVar[str] = "recovered"


EVENT_TYPES: dict[str, type[GeoEvent]] = {
    cls.kind: cls for cls in (FailoverEvent, FailbackEvent, HealthChangedEvent, AllDownEvent, RecoveredEvent)
}

Callback = Callable[[GeoEvent], object]
_STOP = object()


class EventBus:
    """Subscriptions plus a lazily started dispatcher thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._subscribers: dict[str, list[Callback]] = {kind: [] for kind in EVENT_TYPES}
        # An observer process (a CLI) delivers nothing: its switches describe
        # its own probes, not traffic, and must not page anyone.
        self.muted = False
        self._after_fork()

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pending = 0
        self._idle = threading.Condition(self._lock)

    def on(self, kind: str, callback: Callback) -> Callable[[], None]:
        """Subscribe ``callback`` to ``kind`` (or ``"*"`` for every kind); returns an unsubscribe function."""
        kinds = list(EVENT_TYPES) if kind == "*" else [kind]
        for k in kinds:
            if k not in EVENT_TYPES:
                raise ValueError(f"unknown event {kind!r}; use one of {', '.join(EVENT_TYPES)} or '*'")
        with self._lock:
            for k in kinds:
                self._subscribers[k] = [*self._subscribers[k], callback]

        def unsubscribe() -> None:
            with self._lock:
                for k in kinds:
                    self._subscribers[k] = [cb for cb in self._subscribers[k] if cb is not callback]

        return unsubscribe

    def emit(self, event: GeoEvent) -> None:
        if self.muted:
            return
        with self._lock:
            if not self._subscribers[event.kind]:
                return
            self._pending += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=f"geofailover-events[{self.name}]", daemon=True)
                self._thread.start()
        self._queue.put(event)

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is _STOP:
                return
            callbacks = self._subscribers[event.kind]
            for callback in callbacks:
                try:
                    callback(event)
                except Exception:
                    logger.exception("geofailover[%s]: %s callback %r raised; ignored", self.name, event.kind, callback)
            with self._lock:
                self._pending -= 1
                self._idle.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every emitted event has been delivered (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self, timeout: float = 2.0) -> None:
        self.flush(timeout)
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._queue.put(_STOP)
            if thread is not threading.current_thread():
                thread.join(timeout)
