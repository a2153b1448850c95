"""The health monitor: one thread per engine that probes every endpoint each interval.

Probes of one round run concurrently, one daemon worker thread per endpoint
(created once and reused), so a blackholed region costs one probe timeout
per round, not one per endpoint; and a custom check that hangs holds only
its own worker, never ``close()`` or the interpreter's exit. The command path can ask
for an immediate round (:meth:`HealthMonitor.confirm`) when a command fails,
which is how a frozen endpoint is failed over from within about one socket
timeout instead of waiting for several consecutive timeouts.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from .config import FailoverConfig
from .endpoint import EndpointState
from .health import HealthResult

logger = logging.getLogger("geofailover")


class _ProbeWorker:
    """A daemon thread running one endpoint's checks, one round at a time."""

    def __init__(self, name: str, done: Callable[[], None]) -> None:
        self._queue: queue.SimpleQueue[tuple[concurrent.futures.Future[HealthResult], Callable[[], HealthResult]] | None] = queue.SimpleQueue()
        self._done = done
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], HealthResult]) -> concurrent.futures.Future[HealthResult]:
        future: concurrent.futures.Future[HealthResult] = concurrent.futures.Future()
        self._queue.put((future, fn))
        return future

    def stop(self) -> None:
        self._queue.put(None)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # noqa: BLE001 - reported as inconclusive by the round
                    future.set_exception(exc)
            self._done()

#: Seconds the first probe round waits after start unless a round is asked for.
FIRST_ROUND_DELAY = 0.05

#: ``(endpoint, verdict, monotonic start of the round)``: one endpoint's verdict of a round.
ApplyProbe = Callable[[EndpointState, HealthResult, float], None]


class HealthMonitor:
    """Probes ``endpoints`` each interval and hands the verdicts to its owner.

    It knows nothing of failover: its owner (the engine) passes in what to do
    with each verdict (``apply``), what to do when a round ends
    (``end_round``: decide, then run round hooks) and when the next decision
    falls due without new evidence (``next_due``).
    """

    def __init__(
        self,
        name: str,
        config: FailoverConfig,
        endpoints: Sequence[EndpointState],
        *,
        apply: ApplyProbe,
        end_round: Callable[[], None],
        next_due: Callable[[], float | None],
    ) -> None:
        self.name = name
        self.config = config
        self._endpoints = tuple(endpoints)
        self._apply = apply
        self._end_round = end_round
        self._next_due = next_due
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._workers: dict[str, _ProbeWorker] = {}
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
            if self.running:
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name=f"geofailover-monitor[{self.name}]", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the monitor. The round in progress ends at once (its waits watch
        ``_stopping``); a check still running is left to its daemon worker,
        which exits after it: a hung custom check never holds ``close()``."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._cond:
            for worker in self._workers.values():
                worker.stop()
            self._thread = None
            self._workers = {}
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
        interval = self.config.probe_interval
        with self._cond:
            # The first round waits a moment (or until someone asks for a round):
            # the application's first command, which started the monitor, goes
            # first instead of queueing behind probe connections for the GIL.
            deadline = time.monotonic() + min(FIRST_ROUND_DELAY, interval)
            while not self._stopping and not self._wake and (remaining := deadline - time.monotonic()) > 0:
                self._cond.wait(remaining)
            if self._stopping:
                return
            self._workers = {ep.name: _ProbeWorker(f"geofailover-probe[{self.name}:{ep.name}]", self.notify_all) for ep in self._endpoints}
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
            except Exception:  # the monitor must outlive any bug in one round
                logger.exception("geofailover[%s]: health round failed", self.name)
            try:
                self._end_round()
            except Exception:
                logger.exception("geofailover[%s]: end of health round failed", self.name)
            with self._cond:
                self._completed_rounds = round_no
                self._cond.notify_all()
                deadline = started + interval
                due = self._next_due()
                if due is not None and due < deadline:
                    deadline = max(due, time.monotonic() + 0.05)
                while not self._stopping and not self._wake:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)

    def _round(self) -> None:
        started = time.monotonic()
        config = self.config
        workers = self._workers
        if not workers:
            return
        budget = (
            config.health_check_probes * config.health_check_timeout * 2  # connect + command
            + (config.health_check_probes - 1) * config.health_check_probe_delay
            + 0.25
        )
        futures: dict[EndpointState, concurrent.futures.Future[HealthResult]] = {}
        for ep in self._endpoints:
            previous = self._inflight.get(ep.name)
            if previous is not None and not previous.done():
                continue  # a check that ignores its timeout: do not pile up more
            fut = workers[ep.name].submit(lambda ep=ep: ep.run_checks(config))  # type: ignore[misc]
            self._inflight[ep.name] = fut
            futures[ep] = fut
        deadline = started + budget
        with self._cond:
            while not self._stopping and not all(f.done() for f in futures.values()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            if self._stopping:
                return
        for ep in self._endpoints:
            pending = futures.get(ep)
            if pending is None or not pending.done():
                result = HealthResult.inconclusive(f"check did not finish within {budget:.2f}s")
            else:
                try:
                    result = pending.result()
                except Exception as exc:  # noqa: BLE001 - reported as inconclusive
                    result = HealthResult.inconclusive(f"check failed: {type(exc).__name__}")
            self._apply(ep, result, started)
