"""The stall watch: notices a command stuck on the active endpoint.

A frozen or blackholed region does not refuse anything: a command sent
there simply never gets its reply, and the caller would wait out its whole
socket timeout. The pools stamp every connection they lend with the time it
was lent; this watch (one daemon thread per engine) asks the health monitor
for a probe round as soon as a command has been outstanding for
``threshold``. If the probe fails, the engine fails over and the pools wake
the stuck sockets, so their reads are re-sent on the new region well before
the socket timeout. A slow command on a healthy region only costs one extra
PING.

It costs nothing while nothing is in flight: it looks every ``threshold / 2``
only while commands are lent out, and otherwise sleeps until a pool lends
one (``arm()``, one attribute read per command on the hot path).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("geofailover")

#: Longest sleep of an idle watch; only a safety net, ``arm()`` wakes it.
IDLE_WAIT = 5.0


class StallWatch:
    """Calls ``alarm()`` when ``oldest()`` (the start of the longest-running
    command, or None) is older than ``threshold``; at most once per ``spacing``."""

    def __init__(self, name: str, threshold: float, spacing: float, oldest: Callable[[], float | None], alarm: Callable[[], object]) -> None:
        self.name = name
        self.threshold = threshold
        self.spacing = spacing
        self._oldest = oldest
        self._alarm = alarm
        self.after_fork()

    def after_fork(self) -> None:
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_alarm = 0.0
        #: Read by the pools at every checkout: False means "the watch sleeps, wake it".
        self.armed = True

    def arm(self) -> None:
        """A command was lent a connection while the watch slept: look again."""
        self.armed = True
        self._wake.set()

    def start(self) -> None:
        if self.threshold <= 0 or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)

    def _run(self) -> None:
        period = self.threshold / 2
        while not self._stop.is_set():
            # Disarm *before* looking: a command lent out after the look finds
            # the watch disarmed and wakes it; one lent before is seen by the look.
            self.armed = False
            try:
                oldest = self._oldest()
            except Exception:  # the watch must outlive any bug in one look
                logger.exception("%s: stall check failed", self.name)
                oldest = None
            if oldest is None:
                self._wake.wait(IDLE_WAIT)
                self._wake.clear()
                continue
            now = time.monotonic()
            if now - oldest > self.threshold and now - self._last_alarm > self.spacing:
                self._last_alarm = now
                logger.debug("%s: a command has waited %.0f ms for its reply: probing now", self.name, (now - oldest) * 1000)
                self._alarm()
            self._stop.wait(period)


__all__ = ["StallWatch"]
