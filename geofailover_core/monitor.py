"""The health monitor: one thread per engine that probes every endpoint each interval.

Probes of one round run concurrently on a small worker pool (at most one
worker per endpoint, created once and reused), so a blackholed region costs
one probe timeout per round, not one per endpoint. The command path can ask
for an immediate round (:meth:`HealthMonitor.confirm`) when a command fails,
which is how a frozen endpoint is failed over from within about one socket
timeout instead of waiting for several consecutive timeouts.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .health import HealthResult

if TYPE_CHECKING:
    from .endpoint import EndpointState
    from .engine import FailoverEngine

logger = logging.getLogger("geofailover")


class HealthMonitor:
    def __init__(self, engine: FailoverEngine) -> None:
        self._engine = engine
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._inflight: dict[str, concurrent.futures.Future[HealthResult]] = {}
        self._stopping = False
        self._wake = False
        self._started_rounds = 0
        self._completed_rounds = 0

    def after_fork(self) -> None:
        """In a forked child the parent's threads do not exist: forget them."""
        self._reset()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def completed_rounds(self) -> int:
        return self._completed_rounds

    def start(self) -> None:
        with self._cond:
            if self.running or self._stopping:
                return
            name = self._engine.name
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=max(1, len(self._engine.config.endpoints)),
                thread_name_prefix=f"geofailover-probe[{name}]",
            )
            self._thread = threading.Thread(target=self._run, name=f"geofailover-monitor[{name}]", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread, executor = self._thread, self._executor
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        with self._cond:
            self._thread = None
            self._executor = None
            self._inflight.clear()

    def request_round(self) -> int:
        """Ask for a round to start now; returns the number of the round that will answer."""
        with self._cond:
            self._wake = True
            self._cond.notify_all()
            # A round already running may have probed before the failure: wait for the next one.
            return self._started_rounds + 1

    def wait_round(self, round_no: int, timeout: float, done: Callable[[], bool] | None = None) -> bool:
        """Wait until round ``round_no`` completed, or ``done()`` turns true
        (checked whenever the monitor notifies, e.g. on a switch)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._completed_rounds < round_no:
                if done is not None and done():
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping or not self.running:
                    return False
                self._cond.wait(remaining)
        return True

    def notify_all(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- the thread --------------------------------------------------------------

    def _run(self) -> None:
        engine = self._engine
        interval = engine.config.health_check_interval
        while True:
            with self._cond:
                if self._stopping:
                    return
                self._wake = False
                self._started_rounds += 1
                round_no = self._started_rounds
            started = time.monotonic()
            try:
                self._round()
                engine._tick()
            except Exception:  # the monitor must outlive any bug in one round
                logger.exception("geofailover[%s]: health round failed", engine.name)
            for hook in list(engine.round_hooks):
                try:
                    hook(engine)
                except Exception:  # a hook must not stop the monitor
                    logger.exception("geofailover[%s]: round hook %r failed", engine.name, hook)
            with self._cond:
                self._completed_rounds = round_no
                self._cond.notify_all()
                deadline = started + interval
                due = engine.next_due()
                if due is not None and due < deadline:
                    deadline = max(due, time.monotonic() + 0.05)
                while not self._stopping and not self._wake:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)

    def _round(self) -> None:
        started = time.monotonic()
        engine = self._engine
        config = engine.config
        executor = self._executor
        if executor is None:
            return
        budget = (
            config.health_check_probes * config.health_check_timeout * 2  # connect + command
            + (config.health_check_probes - 1) * config.health_check_probe_delay
            + 0.25
        )
        futures: dict[EndpointState, concurrent.futures.Future[HealthResult]] = {}
        for ep in engine._states:
            previous = self._inflight.get(ep.name)
            if previous is not None and not previous.done():
                continue  # a check that ignores its timeout: do not pile up more
            try:
                fut = executor.submit(ep.run_checks, config)
            except RuntimeError:  # executor shut down under us (close())
                return
            self._inflight[ep.name] = fut
            futures[ep] = fut
        concurrent.futures.wait(list(futures.values()), timeout=budget)
        for ep in engine._states:
            pending = futures.get(ep)
            if pending is None or not pending.done():
                result = HealthResult.inconclusive(f"check did not finish within {budget:.2f}s")
            else:
                try:
                    result = pending.result()
                except Exception as exc:  # noqa: BLE001 - reported as inconclusive
                    result = HealthResult.inconclusive(f"check failed: {type(exc).__name__}")
            engine._apply_probe(ep, result, started)
