"""The failover engine: which endpoint is active, and when that changes.

One engine per configuration name per process (see :mod:`.registry`). It
combines two signals about each endpoint, its pybreaker circuit breaker (fed
by errors on the command path) and the health monitor's verdict, and keeps
the highest-weight eligible endpoint active:

* failover happens the moment the active endpoint is judged down;
* failback happens when a higher-weight endpoint has been healthy
  *continuously* for ``failback_grace_period``;
* an operator can switch (``failover_to``), hold a choice (``pin``) and
  return to automatic behaviour (``failback``/``unpin``).

Switching bumps a *generation*; connection pools compare connections'
generations to drop sockets to the previous endpoint without ever closing
a socket another thread is using.

This module is the engine's whole public surface: clients, pools, the
control plane, the CLI and the framework adapters use the methods below and
nothing with a leading underscore. The engine imports nothing that imports
it; layers above attach to it through round hooks, close hooks and the
``control`` slot.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import pybreaker
import redis.exceptions

from .commands import Failure, classify, rejection, timed_out
from .config import FailoverConfig
from .endpoint import EndpointState, best_endpoint, build_endpoint_states
from .errors import AllEndpointsTimedOutError, NoHealthyEndpointError, UnhealthyEndpointError, UnknownEndpointError
from .events import (
    AllDownEvent,
    Callback,
    EventBus,
    FailbackEvent,
    FailoverEvent,
    GeoEvent,
    HealthChangedEvent,
    Reason,
    RecoveredEvent,
)
from .health import HealthResult, HealthStatus
from .masking import mask_text
from .monitor import HealthMonitor
from .stall import StallWatch
from .stamps import failed_generation

_TRANSPORT_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)

#: A command waiting longer than this for its reply asks for a probe at once (seconds).
STALL_THRESHOLD = 0.05

logger = logging.getLogger("geofailover")

RoundHook = Callable[["FailoverEngine"], None]


class SwitchListener(Protocol):
    """Something holding sockets that must follow a switch (a pool, a pub/sub).

    ``on_switch`` runs while the engine lock is held, so it only marks and
    wakes (no I/O); work that needs the network goes to :meth:`FailoverEngine.submit`.
    ``on_close`` runs when the engine closes."""

    def on_switch(self, generation: int) -> None: ...

    def on_close(self) -> None: ...


class ControlAttachment(Protocol):
    """What the engine needs of the control plane that attaches to it from above."""

    observer: bool

    def close(self) -> None: ...


@dataclass(frozen=True)
class _Hold:
    """An operator's choice of endpoint: a manual failover or a pin."""

    endpoint: str
    pinned: bool
    until: float | None  # wall clock expiry for pins
    reason: str | None
    since: float


class _TaskQueue:
    """One lazily started daemon thread running tasks in order (see ``submit``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.after_fork()

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, task: Callable[[], object]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        self._queue.put(task)

    def _run(self) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            try:
                task()
            except Exception:  # a failed task must not stop the next ones
                logger.exception("%s: task %r failed", self.name, task)

    def close(self, timeout: float = 2.0) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            if thread is not threading.current_thread():
                thread.join(timeout)


def _none(generation: int) -> None:
    return None


def _raise(exc: BaseException) -> None:
    raise exc


def _noop() -> None:
    return None


class _BreakerListener(pybreaker.CircuitBreakerListener):
    def __init__(self, engine: FailoverEngine) -> None:
        self._engine = weakref.ref(engine)

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        engine = self._engine()
        if engine is not None and cb.name is not None:
            engine._on_breaker_change(cb.name, getattr(old_state, "name", None), new_state.name)


class FailoverEngine:
    """Framework-agnostic failover state machine for one configuration.

    Build engines through :func:`geofailover_core.registry.get_engine` (shared
    per name) or :func:`~geofailover_core.registry.build_engine` (private, e.g.
    a CLI's); both attach the control plane when the configuration asks for it.
    """

    def __init__(self, config: FailoverConfig) -> None:
        self.config = config
        self.name = config.name
        self._states = tuple(build_endpoint_states(config, _BreakerListener(self)))
        self._by_name = {ep.name: ep for ep in self._states}
        self._ranked = tuple(sorted(self._states, key=lambda ep: ep.rank))
        self._lock = threading.RLock()
        self._start_lock = threading.Lock()
        self._active: EndpointState | None = self._ranked[0]  # optimistic: no blocking first probe
        self._generation = 0
        # What the command path reads without a lock: (active endpoint, generation),
        # one tuple so a reader never pairs an endpoint with another switch's generation.
        # Published last in a switch: whoever sees it finds the switch's events queued.
        self._routing: tuple[EndpointState | None, int] = (self._active, 0)
        #: Bumped by every switch; a connection made under an older generation
        #: talks to an endpoint that is no longer (or no longer surely) active.
        #: A plain attribute, read lock-free on every command; only the engine writes it.
        self.generation = 0
        #: A command failed since the last success: the next success resets the
        #: breaker's count (read on every command; only the engine writes it).
        self.suspect = False
        self._hold: _Hold | None = None
        self._active_since = time.time()
        self._last_event: dict[str, Any] | None = None
        self._closed = False
        self._started = False
        self._observer = False
        self._listeners: weakref.WeakSet[Any] = weakref.WeakSet()
        self._tasks = _TaskQueue(f"geofailover-switch[{self.name}]")
        self._round_hooks: list[RoundHook] = []
        self._close_hooks: list[Callable[[FailoverEngine], None]] = []
        self._secrets = tuple(s for ep in self._states for s in ep.secrets)
        self.events = EventBus(self.name)
        self.monitor = HealthMonitor(
            self.name, config, self._states, apply=self._apply_probe, end_round=self._end_round, next_due=self.next_due,
        )
        #: The control plane attached by :mod:`geofailover_core.control`, if any.
        self.control: ControlAttachment | None = None
        #: Whether the last switch left an endpoint that failed (rather than an
        #: operator's or a failback's move): pools then wake commands in flight there.
        self.last_switch_failed = False
        self.stall_watch = StallWatch(
            f"geofailover-stall[{self.name}]", STALL_THRESHOLD, config.health_check_timeout,
            oldest=self._oldest_outstanding, alarm=self._on_stall,
        )
        self._stall_probes = 0

    # -- read side ---------------------------------------------------------------

    @property
    def active(self) -> str | None:
        """Name of the endpoint serving traffic, or ``None`` when all are down.

        Whoever sees a switch here can also flush its events and find its log
        line: a switch queues both before it publishes the new endpoint."""
        ep = self._routing[0]
        return ep.name if ep is not None else None

    @property
    def routing(self) -> tuple[EndpointState | None, int]:
        """``(active endpoint or None, generation)``, read atomically without a lock."""
        return self._routing

    @property
    def endpoint_names(self) -> list[str]:
        return [ep.name for ep in self._states]

    def states(self) -> tuple[EndpointState, ...]:
        """Every endpoint's runtime state, in configuration order."""
        return self._states

    def ranked(self) -> tuple[EndpointState, ...]:
        """Every endpoint's runtime state, highest priority first."""
        return self._ranked

    def endpoint(self, name: str) -> EndpointState:
        """One endpoint's runtime state; :class:`UnknownEndpointError` names the configured ones."""
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownEndpointError(
                f"geofailover[{self.name}]: no endpoint named {name!r}; configured: {', '.join(self._by_name)}"
            ) from None

    def active_endpoint(self) -> EndpointState | None:
        return self._routing[0]

    def eligible_endpoints(self, *, exclude: str | None = None, answering: bool = False) -> list[EndpointState]:
        """Endpoints traffic could go to now, highest priority first.

        ``answering=True`` asks for a positive verdict of the last probe (work
        that moves data, or that would cost a timeout per dead endpoint);
        otherwise anything not known to be down."""
        return [
            ep for ep in self._ranked
            if ep.name != exclude and (ep.answering() if answering else ep.eligible())
        ]

    def best_endpoint(self) -> EndpointState | None:
        """The highest-priority eligible endpoint: where a failback goes now."""
        return next((ep for ep in self._ranked if ep.eligible()), None)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def started(self) -> bool:
        """Has this process used the engine (monitor started)? A process that
        only looks at the fleet, such as a CLI, never starts serving on it."""
        return self._started and self.monitor.running

    def route(self) -> tuple[EndpointState, int]:
        """The active endpoint and generation, for a pool about to connect."""
        if not self._started:
            self.start()
        ep, generation = self._routing
        if ep is None:
            if self._closed:
                raise NoHealthyEndpointError(f"geofailover[{self.name}]: engine is closed")
            raise self.all_down_error()
        return ep, generation

    def all_down_error(self) -> NoHealthyEndpointError:
        """The error for "no endpoint can serve", naming each endpoint's state,
        chained to the real error of the highest-priority one (the exception a
        wrong password or an untrusted certificate raised, not just "down")."""
        causes = [ep.last_exception for ep in self._ranked if ep.last_exception is not None]
        rejected = [ep for ep in self._states if ep.rejection]
        summary = ", ".join(f"{ep.name}: {ep.rejection or f'{ep.health}/{ep.breaker_state}'}" for ep in self._states)
        advice = (
            "; a configuration problem, not an outage: check the password, ACL user and TLS settings of "
            + ", ".join(ep.name for ep in rejected)
            if rejected else "; failing fast until one recovers"
        )
        all_timeouts = len(causes) == len(self._states) and all(timed_out(c) for c in causes)
        cls = AllEndpointsTimedOutError if all_timeouts else NoHealthyEndpointError
        error = cls(f"geofailover[{self.name}]: no healthy endpoint ({summary}){advice}")
        error.__cause__ = causes[0] if causes else None
        return error

    def route_checked(self, check: Callable[[EndpointState], object]) -> EndpointState:
        """The active endpoint, after ``check(endpoint)`` succeeded on it.

        For a connection that will stay pinned to one endpoint (a broker
        channel): when the check fails, the failure is reported, the engine
        confirms with a probe, and the check is retried on the endpoint it
        moved to, so nothing pins itself to an endpoint that just died.
        """
        last: BaseException | None = None
        for _ in range(len(self._states) + 1):
            ep, generation = self.route()
            try:
                check(ep)
                return ep
            except Exception as exc:
                last = exc
                self.report_failure(generation, exc, "PING")
                if not self.confirm(generation):
                    raise
                logger.warning(
                    "geofailover[%s]: endpoint %s failed while connecting (%s); the engine moved to %s, connecting there",
                    self.name, ep.name, mask_text(f"{type(exc).__name__}: {exc}", self._secrets), self.active or "no endpoint",
                )
        raise NoHealthyEndpointError(f"geofailover[{self.name}]: endpoint kept changing while connecting") from last

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Start the monitor (done lazily on first use, and again in a forked child)."""
        # Not the engine lock: pools call this while holding their own lock, and a
        # switch holds the engine lock while it takes the pools' locks.
        with self._start_lock:
            if self._started or self._closed:
                return
            self._started = True
        self.monitor.start()
        self.stall_watch.start()

    def suspend(self) -> None:
        """Stop probing until the next use restarts it (a CLI command that looked
        at the fleet from inside an application's process leaves no monitor behind)."""
        with self._start_lock:
            if not self._started:
                return
            self._started = False
        self.monitor.stop()
        self.stall_watch.stop()

    def close(self) -> None:
        """Stop the monitor and event threads and close every socket this engine owns."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._active = None
            self._generation += 1
            generation = self._generation
            self._routing = (None, generation)
            self.generation = generation
        self.monitor.stop()
        self.stall_watch.stop()
        for hook in reversed(self._close_hooks):  # the control plane removes our heartbeat while probe clients exist
            try:
                hook(self)
            except Exception:
                logger.exception("geofailover[%s]: close hook %r failed", self.name, hook)
        for ep in self._states:
            ep.close_probe_client()
        for listener in list(self._listeners):
            try:
                listener.on_switch(generation)
                listener.on_close()
            except Exception:
                logger.exception("geofailover[%s]: closing %r failed", self.name, listener)
        self._tasks.close()
        self.events.close()

    def after_fork_in_child(self) -> None:
        """Forget the parent's threads and locks (called by the registry's fork hook)."""
        self._lock = threading.RLock()
        self._start_lock = threading.Lock()
        self._started = False
        self.monitor.after_fork()
        self.stall_watch.after_fork()
        self.events._after_fork()
        self._tasks.after_fork()
        for ep in self._states:
            ep.after_fork()

    def add_switch_listener(self, listener: SwitchListener) -> None:
        """Have ``listener.on_switch(generation)`` called at every switch and
        ``listener.on_close()`` at close (held weakly: it goes with its owner)."""
        self._listeners.add(listener)

    def _on_stall(self) -> None:
        self._stall_probes += 1
        self.monitor.request_round()

    def _oldest_outstanding(self) -> float | None:
        generation = self.generation
        times = [t for listener in list(self._listeners) if (t := getattr(listener, "oldest_outstanding", _none)(generation)) is not None]
        return min(times) if times else None

    def submit(self, task: Callable[[], object]) -> None:
        """Run ``task()`` soon on the engine's switch worker thread: network work
        a switch causes (re-subscribing a pub/sub) must not run under the engine
        lock, nor delay the monitor or the thread that noticed the failure."""
        if not self._closed:
            self._tasks.submit(task)

    def add_round_hook(self, hook: RoundHook) -> Callable[[], None]:
        """Run ``hook(engine)`` on the monitor thread after every probe round; returns a remover."""
        self._round_hooks.append(hook)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._round_hooks.remove(hook)

        return remove

    @property
    def round_hooks(self) -> tuple[RoundHook, ...]:
        return tuple(self._round_hooks)

    def add_close_hook(self, hook: Callable[[FailoverEngine], None]) -> None:
        """Run ``hook(engine)`` when the engine closes (hooks run last-added first)."""
        self._close_hooks.append(hook)

    # -- observer mode -------------------------------------------------------------

    @property
    def observer(self) -> bool:
        """An observer engine lives in a process that only looks at the fleet (a
        CLI or management command): it probes for its own report, but fires no
        events or signals, sends no heartbeat and follows no override."""
        return self._observer

    @observer.setter
    def observer(self, value: bool) -> None:
        self._observer = bool(value)
        self.events.muted = self._observer
        if self.control is not None:
            self.control.observer = self._observer

    # -- events --------------------------------------------------------------------

    def on(self, kind: str, callback: Callback) -> Callable[[], None]:
        """Run ``callback(event)`` on every ``kind`` event (failover, failback,
        health_changed, all_down, recovered, or ``"*"``). Returns an unsubscribe function."""
        return self.events.on(kind, callback)

    # -- command path --------------------------------------------------------------

    def report_failure(self, generation: int, exc: BaseException, command: str | None = None) -> Failure:
        """Feed an error seen on the command path to the active endpoint's breaker.

        Errors from a connection of an older generation are not held against
        the current endpoint: the switch already happened.
        """
        kind = classify(exc, command)
        generation = failed_generation(exc, generation)
        if kind is Failure.IGNORE or generation != self._routing[1]:
            return kind
        text = mask_text(f"{type(exc).__name__}: {exc}", self._secrets)  # outside the lock: string work
        with self._lock:
            ep = self._active
            if ep is None or generation != self._generation:  # switched meanwhile: not about ep
                return kind
            ep.counters["command_failures"] += 1
            ep.last_error = text
            ep.last_error_at = time.time()
            ep.last_exception = exc
            ep.rejection = rejection(exc)
            self.suspect = True
        if kind is Failure.CONCLUSIVE:
            ep.breaker.open()
        else:
            try:
                ep.breaker.call(_raise, exc)
            except BaseException:  # noqa: BLE001 - the breaker re-raises what we fed it
                pass
        if ep.breaker.current_state != pybreaker.STATE_CLOSED:
            self._evaluate(detail=ep.last_error or "circuit breaker opened")
            self.monitor.request_round()
        return kind

    def record_success(self, generation: int) -> None:
        """Reset the active breaker's consecutive-failure count after an error streak."""
        ep, current = self._routing
        if ep is None or generation != current:
            return
        self.suspect = False
        if ep.breaker.fail_counter:
            try:
                ep.breaker.call(_noop)
            except pybreaker.CircuitBreakerError:
                pass

    def confirm(self, generation: int) -> bool:
        """After a failed command: probe now and wait (bounded) for the verdict.

        Returns True when traffic moved off ``generation`` meanwhile, so the
        caller can retry on the new endpoint instead of surfacing the error.
        """
        if generation != self._routing[1]:
            return True
        if not self.monitor.running:
            return False
        round_no = self.monitor.request_round()
        # A round already in progress may switch before the requested one ends.
        self.monitor.wait_round(round_no, self.config.confirm_timeout, lambda: generation != self._routing[1])
        return generation != self._routing[1]

    def recover(self, generation: int, exc: BaseException, command: str | None = None) -> bool:
        """A command sent under ``generation`` failed with ``exc``: feed the breaker,
        confirm with a probe, and say whether traffic has moved to an endpoint
        that can take the command again (the retry policy decides whether it may)."""
        if isinstance(exc, NoHealthyEndpointError):
            return False
        failed = failed_generation(exc, generation)
        if failed != self.generation and isinstance(exc, _TRANSPORT_ERRORS):
            # The socket belonged to an endpoint traffic already left (a switch
            # woke it, or it was made just before one): whatever it says is
            # not about the active endpoint, and the command may go there.
            return self.active is not None
        if self.report_failure(generation, exc, command) is Failure.IGNORE:
            return False
        return self.confirm(failed) and self.active is not None

    # -- signals -------------------------------------------------------------------

    def _on_breaker_change(self, name: str, old: str | None, new: str) -> None:
        # Called by pybreaker *before* its storage records the new state, so
        # only bookkeeping here; whoever drove the breaker re-evaluates after.
        ep = self._by_name.get(name)
        if ep is None:
            return
        with self._lock:
            ep.counters[f"breaker_{new.replace('-', '_')}"] += 1
            if new == pybreaker.STATE_OPEN:
                ep.healthy_since = None
                ep.down_reason = Reason.CIRCUIT_BREAKER
        if new == pybreaker.STATE_OPEN:
            logger.info("geofailover[%s]: circuit breaker of %s opened (%s)", self.name, name, ep.last_error or "failures")

    def _apply_probe(self, ep: EndpointState, result: HealthResult, started: float) -> None:
        """Record one round's verdict for ``ep`` (called by the monitor thread)."""
        if result.status is HealthStatus.HEALTHY and ep.breaker.current_state != pybreaker.STATE_CLOSED:
            try:  # the probe is the breaker's trial call once reset_timeout has passed
                ep.breaker.call(_noop)
            except pybreaker.CircuitBreakerError:
                pass
        events: list[GeoEvent] = []
        with self._lock:
            gate_change = ep.record_gate(result)
            ep.counters["probes"] += 1
            ep.last_probe_at = time.time()
            if result.latency is not None:
                ep.latency = result.latency
            old = ep.health
            if result.status is HealthStatus.INCONCLUSIVE:
                ep.counters["probes_inconclusive"] += 1
                ep.health_detail = result.detail
                if old is HealthStatus.UNKNOWN:
                    ep.health = HealthStatus.INCONCLUSIVE
            else:
                ep.health = result.status
                ep.health_detail = result.detail
                ep.last_exception = result.error
                ep.rejection = rejection(result.error) if result.error is not None else None
                if result.status is HealthStatus.HEALTHY:
                    if ep.healthy_since is None:
                        ep.healthy_since = started
                else:
                    ep.counters["probes_failed"] += 1
                    ep.healthy_since = None
                    ep.down_reason = Reason.HEALTH_CHECK
                    ep.last_error = result.detail
                    ep.last_error_at = time.time()
            if ep.health is not old:
                event = HealthChangedEvent(
                    config=self.name, endpoint=ep.name, old=str(old), new=str(ep.health), detail=result.detail,
                )
                self._emit(event)  # queued under the lock: visible state and events agree
                events.append(event)
        if gate_change:
            logger.info("geofailover[%s]: %s", self.name, gate_change)
        for changed in events:
            level = logging.WARNING if changed.new == "unhealthy" else logging.INFO  # type: ignore[attr-defined]
            logger.log(level, "geofailover[%s]: %s is %s (%s)", self.name, ep.name, ep.health, result.detail)

    def _end_round(self) -> None:
        """End of a monitor round: re-evaluate (failback, pin expiry, recovery), then the hooks."""
        try:
            self._evaluate()
        finally:
            for hook in list(self._round_hooks):
                try:
                    hook(self)
                except Exception:  # a hook must not stop the monitor
                    logger.exception("geofailover[%s]: round hook %r failed", self.name, hook)

    def next_due(self) -> float | None:
        """Monotonic time of the next decision that is due without new evidence
        (a failback whose grace period ends, a pin that expires), so the
        monitor wakes for it instead of waiting out a whole interval."""
        with self._lock:
            due: list[float] = []
            active = self._active
            if self.config.auto_failback and self._hold is None and active is not None:
                for ep in self._ranked:
                    if ep.rank >= active.rank:
                        break
                    if ep.health is HealthStatus.HEALTHY and ep.healthy_since is not None and ep.eligible() and ep.gate_open():
                        due.append(ep.healthy_since + self.config.failback_grace_period)
            hold = self._hold
            if hold is not None and hold.until is not None:
                due.append(time.monotonic() + max(0.0, hold.until - time.time()))
            return min(due) if due else None

    # -- decisions -----------------------------------------------------------------

    def _choose(self, now: float) -> tuple[EndpointState | None, Reason, str]:
        """Pick the endpoint that should serve. Caller holds the lock."""
        active = self._active
        grace = self.config.failback_grace_period
        hold = self._hold
        if hold is not None and hold.pinned and hold.until is not None and time.time() >= hold.until:
            self._hold = hold = None
            logger.info("geofailover[%s]: pin expired; automatic failover/failback resumes", self.name)
            return best_endpoint(self._ranked, active), Reason.PIN, "pin expired"
        if hold is not None:
            target = self._by_name[hold.endpoint]
            if target.eligible():
                if target is active:
                    return active, Reason.MANUAL, ""
                if hold.pinned and (active is None or (target.healthy_for(grace, now) and target.gate_open()) or not active.eligible()):
                    return target, Reason.PIN, f"pinned endpoint {target.name} recovered"
            elif not hold.pinned:
                # The operator's endpoint failed: automatic behaviour resumes.
                self._hold = hold = None
        eligible = [ep for ep in self._ranked if ep.eligible()]
        if active is not None and active.eligible():
            if self.config.auto_failback and hold is None:
                for ep in eligible:
                    if ep.rank >= active.rank:
                        break
                    if ep.healthy_for(grace, now) and ep.gate_open():
                        return ep, Reason.FAILBACK, f"{ep.name} healthy for {grace:g}s"
            return active, Reason.HEALTH_CHECK, ""
        if active is not None:
            reason = active.down_reason or Reason.HEALTH_CHECK
            detail = active.last_error or active.health_detail
        else:
            reason, detail = Reason.HEALTH_CHECK, "recovered"
        if hold is not None and hold.pinned:
            detail = f"pinned endpoint {hold.endpoint} is down, pin stays in force: {detail}"
        return best_endpoint(eligible, None), reason, detail

    def _evaluate(self, detail: str = "") -> None:
        with self._lock:
            if self._closed:
                return
            target, reason, why = self._choose(time.monotonic())
            if target is self._active:
                return
            self._switch(target, reason, why or detail)
        self._after_switch()

    def _switch(self, target: EndpointState | None, reason: Reason, detail: str) -> int:
        """Move traffic to ``target``. Caller holds the lock; every detail text
        was masked when it was recorded (no string work here)."""
        old = self._active
        events = self._switch_events(old, target, reason, detail)
        self.last_switch_failed = target is None or reason in (Reason.HEALTH_CHECK, Reason.CIRCUIT_BREAKER)
        self._active = target
        self._generation += 1
        generation = self._generation
        self._active_since = time.time()
        if old is not None:
            old.counters["switched_away"] += 1
        if target is not None:
            target.counters["switched_to"] += 1
        for event in events:
            self._log(event)  # rare, and then the log line is never behind the visible state
            self._emit(event)
        # Visible now: whoever sees the new generation finds the events queued.
        self._routing = (target, generation)
        self.generation = generation
        # Then idle sockets to the old endpoint go, and parked blocking commands
        # wake: after the route, so a woken command's socket is seen as stale
        # when it is released (never pooled again) and its retry connects to
        # the new endpoint. A command that still finds a stale socket fails with
        # an error stamped with that socket's generation, never blamed on the new endpoint.
        self._purge_pools(generation)
        return generation

    def _switch_events(self, old: EndpointState | None, new: EndpointState | None, reason: Reason, detail: str) -> list[GeoEvent]:
        if new is None:
            return [AllDownEvent(config=self.name, from_endpoint=old.name if old else None, reason=str(reason), detail=detail)]
        if old is None:
            return [RecoveredEvent(config=self.name, to_endpoint=new.name, reason=str(reason), detail=detail)]
        if reason in (Reason.HEALTH_CHECK, Reason.CIRCUIT_BREAKER):
            cls: type[GeoEvent] = FailoverEvent  # the old endpoint failed, whatever the ranks
        elif reason is Reason.FAILBACK:
            cls = FailbackEvent
        else:  # an operator's move: towards higher priority is a failback
            cls = FailbackEvent if new.rank < old.rank else FailoverEvent
        return [cls(config=self.name, from_endpoint=old.name, to_endpoint=new.name, reason=str(reason), detail=detail)]

    def _purge_pools(self, generation: int) -> None:
        for listener in list(self._listeners):
            try:
                listener.on_switch(generation)
            except Exception:
                logger.exception("geofailover[%s]: switch listener %r failed", self.name, listener)

    def _after_switch(self) -> None:
        self.monitor.notify_all()  # wake callers waiting in confirm()

    def _log(self, event: GeoEvent) -> None:
        why = f" ({event.detail})" if event.detail else ""
        if isinstance(event, FailoverEvent):
            logger.warning("geofailover[%s]: failover %s -> %s, reason %s%s", self.name, event.from_endpoint, event.to_endpoint, event.reason, why)
        elif isinstance(event, FailbackEvent):
            logger.info("geofailover[%s]: failback %s -> %s, reason %s%s", self.name, event.from_endpoint, event.to_endpoint, event.reason, why)
        elif isinstance(event, AllDownEvent):
            logger.error("geofailover[%s]: all endpoints down, last active %s; commands fail fast%s", self.name, event.from_endpoint, why)
        elif isinstance(event, RecoveredEvent):
            logger.warning("geofailover[%s]: recovered, %s serves again", self.name, event.to_endpoint)

    def _emit(self, event: GeoEvent) -> None:
        if event.kind != "health_changed":
            self._last_event = event.as_dict()
        self.events.emit(event)

    # -- manual control --------------------------------------------------------------

    def failover_to(self, name: str, force: bool = False, reason: str | None = None) -> None:
        """Send traffic to ``name`` now and keep it there until it fails or
        :meth:`failback` is called (automatic failback does not undo it)."""
        self._hold_endpoint(name, pinned=False, duration=None, force=force, reason=reason)

    def pin(self, name: str, duration: float | None = None, force: bool = False, reason: str | None = None) -> None:
        """Like :meth:`failover_to`, but sticky: if ``name`` fails, traffic fails
        over and comes back to it when it recovers; ends at :meth:`unpin` or after ``duration`` seconds."""
        if duration is not None and not 0 < duration < float("inf"):  # NaN too: a pin that never expires
            raise ValueError("pin duration must be positive and finite (seconds) or None")
        self._hold_endpoint(name, pinned=True, duration=duration, force=force, reason=reason)

    def _hold_endpoint(self, name: str, *, pinned: bool, duration: float | None, force: bool, reason: str | None) -> None:
        target = self.endpoint(name)
        if not target.eligible():
            if not force:
                raise UnhealthyEndpointError(
                    f"geofailover[{self.name}]: {name} is {target.health} (breaker {target.breaker_state}); "
                    "pass force=True to switch anyway"
                )
            target.breaker.close()
        if not force and target is not self._active and not target.gate_open():
            raise UnhealthyEndpointError(
                f"geofailover[{self.name}]: {name} is not ready for traffic to return "
                f"(failback gate {target.gate}: {target.gate_detail or 'no answer yet'}); pass force=True to switch anyway"
            )
        if reason is not None:
            reason = mask_text(reason, self._secrets)  # outside the lock: string work
        why = reason or ("pinned by operator" if pinned else "manual failover")
        with self._lock:
            if force and target.health is HealthStatus.UNHEALTHY:
                target.health = HealthStatus.UNKNOWN
            self._hold = _Hold(name, pinned, time.time() + duration if duration else None, reason, time.time())
            if self._active is target:
                return
            self._switch(target, Reason.PIN if pinned else Reason.MANUAL, why)
        self._after_switch()

    def unpin(self) -> None:
        """End a pin or manual hold; automatic rules (including failback after grace) resume."""
        with self._lock:
            self._hold = None
        self._evaluate()

    def failback(self) -> None:
        """Return to the highest-weight eligible endpoint now, ending any hold."""
        with self._lock:
            self._hold = None
            old = self._active
            target = best_endpoint(self._ranked, old)
            if target is None or target is old:
                return
            self._switch(target, Reason.MANUAL, "manual failback")
        self._after_switch()

    def check_now(self, timeout: float | None = None) -> bool:
        """Run one probe round now and wait for it (CLI ``check``, tests)."""
        if not self._started:
            self.start()
        round_no = self.monitor.request_round()
        budget = timeout if timeout is not None else self.config.health_check_timeout * self.config.health_check_probes * 2 + 1.0
        return self.monitor.wait_round(round_no, budget)

    # -- status --------------------------------------------------------------------------

    def hold(self) -> dict[str, Any] | None:
        """The operator's hold in force (manual failover or pin), as in :meth:`status`."""
        hold = self._hold
        if hold is None:
            return None
        return {"endpoint": hold.endpoint, "pinned": hold.pinned, "until": hold.until, "reason": hold.reason, "since": hold.since}

    def status(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot. Contains no secrets."""
        with self._lock:
            active = self._active
            return {
                "name": self.name,
                "pid": os.getpid(),
                "active": active.name if active else None,
                "active_since": self._active_since,
                "all_down": active is None and not self._closed,
                "generation": self._generation,
                "monitor_running": self.monitor.running,
                "stall_probes": self._stall_probes,  # probe rounds asked for by a command waiting for its reply
                "hold": self.hold(),
                "last_event": self._last_event,
                "endpoints": [ep.snapshot(ep is active) for ep in self._states],
            }

    def __repr__(self) -> str:
        return f"<FailoverEngine name={self.name!r} active={self.active!r} endpoints={self.endpoint_names!r}>"


@contextlib.contextmanager
def observing(engines: list[FailoverEngine]) -> Iterator[list[FailoverEngine]]:
    """Make the engines that have not served traffic in this process observers
    for the duration (a CLI run inside an application's process, e.g.
    ``call_command``, leaves a serving engine as it is). Yields the observers."""
    observers = [e for e in engines if not e.started and not e.observer]
    for engine in observers:
        engine.observer = True
    try:
        yield observers
    finally:
        for engine in observers:
            engine.suspend()  # the command started it only to look: the application's first use starts it again
            engine.events.flush(2.0)
            engine.observer = False


__all__ = ["ControlAttachment", "FailoverEngine", "RoundHook", "SwitchListener", "observing"]
