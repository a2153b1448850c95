"""Runtime state of one endpoint: breaker, health verdict, failback gate, probe client, counters."""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pybreaker
import redis

from .commands import Failure, classify
from .config import EndpointConfig, FailoverConfig
from .connection import direct_client, endpoint_params, probe_params
from .errors import ConfigurationError
from .events import Reason
from .health import (
    FAILBACK_ONLY,
    HEALTH,
    CheckOutcome,
    EndpointVerdict,
    HealthCheck,
    HealthResult,
    HealthStatus,
    PingHealthCheck,
    ProbeContext,
    check_mode,
    combine_checks,
    combine_probes,
    normalize_result,
    resolve_check,
)
from .masking import mask_text

logger = logging.getLogger("geofailover")


def _not_a_fault(exc: BaseException) -> bool:
    return classify(exc) is Failure.IGNORE


@dataclass(eq=False)
class EndpointState:
    """Everything the engine knows about one endpoint.

    Mutated only under the engine's lock, except the breaker (which has its
    own lock and is never called while the engine lock is held).
    """

    config: EndpointConfig
    index: int
    breaker: pybreaker.CircuitBreaker
    # Builds a breaker on this endpoint's breaker storage (state, counters and
    # opened_at live there), so a forked child gets fresh locks, same state.
    breaker_factory: Callable[[], pybreaker.CircuitBreaker]
    checks: tuple[HealthCheck, ...]
    secrets: tuple[str, ...]
    health: HealthStatus = HealthStatus.UNKNOWN
    health_detail: str = ""
    healthy_since: float | None = None  # monotonic; start of the current healthy streak
    down_reason: Reason | None = None
    last_probe_at: float | None = None  # wall clock
    latency: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    counters: Counter[str] = field(default_factory=Counter)
    # The failback gate: verdict of the failback_only checks. None when the
    # endpoint has none; UNKNOWN (closed) until their first answer.
    gate: HealthStatus | None = None
    gate_detail: str = ""
    gate_since: float | None = None  # wall clock of the last change
    check_outcomes: tuple[CheckOutcome, ...] = ()
    # The exception of the last failure (probe or command), chained to
    # NoHealthyEndpointError; and, when it says the endpoint refuses *us*
    # (credentials, ACL, TLS trust), what to tell the operator.
    last_exception: BaseException | None = None
    rejection: str | None = None
    _probe_client: redis.Redis | None = None
    _direct_client: redis.Redis | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def weight(self) -> float:
        return self.config.weight

    @property
    def rank(self) -> tuple[float, int]:
        """Sort key: higher weight first, then configuration order."""
        return (-self.config.weight, self.index)

    @property
    def breaker_state(self) -> str:
        return str(self.breaker.current_state)

    @property
    def breaker_closed(self) -> bool:
        return bool(self.breaker.current_state == pybreaker.STATE_CLOSED)

    def eligible(self) -> bool:
        """May traffic go here at all? Not known to be down, breaker closed."""
        return self.health is not HealthStatus.UNHEALTHY and self.breaker_closed

    def answering(self) -> bool:
        """Did the last probe get a positive answer (and no command errors since)?
        Stricter than :meth:`eligible`: for work that moves data or costs a
        timeout per unreachable endpoint, where "not known to be down" is not enough."""
        return self.health is HealthStatus.HEALTHY and self.breaker_closed

    def healthy_for(self, seconds: float, now: float) -> bool:
        return self.health is HealthStatus.HEALTHY and self.healthy_since is not None and now - self.healthy_since >= seconds

    def gate_open(self) -> bool:
        """May traffic *return* here? Only on a positive answer of every gate:
        "could not find out" (inconclusive, or no answer yet) keeps it closed,
        because staying on a working endpoint is always safe, while returning
        to a stale one serves stale data."""
        return self.gate is None or self.gate is HealthStatus.HEALTHY

    @property
    def gate_checks(self) -> tuple[HealthCheck, ...]:
        return tuple(c for c in self.checks if check_mode(c) == FAILBACK_ONLY)

    def record_gate(self, result: HealthResult) -> str | None:
        """Apply a round's gate verdict (caller holds the engine lock); returns
        a line to log when the gate opened or closed."""
        gate = result.gate if isinstance(result, EndpointVerdict) else None
        if isinstance(result, EndpointVerdict):
            self.check_outcomes = result.checks
        if gate is None or self.gate is None:
            return None  # a round that timed out says nothing about the gate
        old_open = self.gate_open()
        old = self.gate
        self.gate = gate.status
        self.gate_detail = gate.detail
        if self.gate is not old:
            self.gate_since = time.time()
            self.counters[f"gate_{self.gate}"] += 1
        if self.gate_open() != old_open:
            state = "open: traffic may return" if self.gate_open() else "closed: traffic will not return until it opens"
            return f"failback gate of {self.name} {state} ({gate.detail})"
        return None

    def mask(self, text: str) -> str:
        return mask_text(text, self.secrets)

    # -- probing (runs on a probe worker thread) ---------------------------------

    def probe_client(self, config: FailoverConfig) -> redis.Redis:
        """This endpoint's client for probes and control records: probe timeouts, bytes replies."""
        client = self._probe_client
        if client is None:
            client = self._probe_client = direct_client(*probe_params(config, self.config), max_connections=4)
        return client

    def direct_client(self, config: FailoverConfig) -> redis.Redis:
        """A client pinned to this endpoint with the engine's own connection
        options (normal timeouts, bytes replies), for work that must reach this
        endpoint whatever is active: draining it, reading a result left on it."""
        client = self._direct_client
        if client is None:
            conn_class, kwargs = endpoint_params(config, self.config)
            kwargs["decode_responses"] = False
            client = self._direct_client = direct_client(conn_class, kwargs, max_connections=8)
        return client

    def run_checks(self, config: FailoverConfig) -> HealthResult:
        """One round of every check of this endpoint, each probed
        ``health_check_probes`` times: health checks first (they decide
        failover, so a slow gate must not delay them), then the gates."""
        ctx = ProbeContext(self.config, self.probe_client(config), config.health_check_timeout, config.probe_interval)
        outcomes: list[CheckOutcome] = []
        for check in sorted(self.checks, key=lambda c: check_mode(c) != HEALTH):
            probes: list[HealthResult] = []
            for i in range(config.health_check_probes):
                if i:
                    time.sleep(config.health_check_probe_delay)
                try:
                    probes.append(normalize_result(check.check(ctx)))
                except Exception as exc:  # noqa: BLE001 - a crashing custom check is not evidence
                    probes.append(HealthResult.inconclusive(f"check raised {type(exc).__name__}: {exc}"))
            result = combine_probes(probes, config.health_check_policy)
            masked = HealthResult(result.status, self.mask(result.detail), result.latency, error=result.error)
            outcomes.append(CheckOutcome(getattr(check, "name", "check"), check_mode(check), masked))
        policy = config.health_check_combine
        verdict = combine_checks([(o.name, o.result) for o in outcomes if o.mode == HEALTH], policy)
        gates = [(o.name, o.result) for o in outcomes if o.mode == FAILBACK_ONLY]
        return EndpointVerdict(
            verdict.status, verdict.detail, verdict.latency, verdict.error,
            gate=combine_checks(gates, policy) if gates else None,
            checks=tuple(outcomes),
        )

    def close_probe_client(self) -> None:
        for client in (self._probe_client, self._direct_client):
            if client is not None:
                client.connection_pool.disconnect()
        self._probe_client = self._direct_client = None
        for check in self.checks:
            close = getattr(check, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:  # closing must reach every check
                    logger.exception("geofailover: closing health check %r of %s failed", getattr(check, "name", check), self.name)

    def after_fork(self) -> None:
        # A lock held by another thread at fork() time would stay held forever in
        # the child: a new breaker (new lock) on the same storage keeps the state.
        self.breaker = self.breaker_factory()
        self._probe_client = None
        self._direct_client = None
        for check in self.checks:
            hook = getattr(check, "after_fork", None)
            if callable(hook):
                hook()

    def snapshot(self, active: bool) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.config.masked_url,
            "weight": self.weight,
            "active": active,
            "health": str(self.health),
            "health_detail": self.health_detail,
            "breaker": self.breaker_state,
            "breaker_failures": self.breaker.fail_counter,  # consecutive, towards failure_threshold
            "latency_ms": None if self.latency is None else round(self.latency * 1000, 3),
            "last_probe_at": self.last_probe_at,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "rejection": self.rejection,
            "failback_gate": None
            if self.gate is None
            else {"open": self.gate_open(), "status": str(self.gate), "detail": self.gate_detail, "since": self.gate_since},
            "checks": [
                {
                    "name": o.name,
                    "mode": o.mode,
                    "status": str(o.result.status),
                    "detail": o.result.detail,
                    "latency_ms": None if o.result.latency is None else round(o.result.latency * 1000, 3),
                }
                for o in self.check_outcomes
            ],
            "counters": dict(self.counters),
        }


def best_endpoint(ranked: Sequence[EndpointState], active: EndpointState | None) -> EndpointState | None:
    """The highest-ranked eligible endpoint traffic may go to now: ``active``
    itself or one whose failback gate is open. When every eligible endpoint
    is gated (a failover away from a dead endpoint), the highest-ranked
    eligible one anyway: a lag gate never leaves the application without a
    region, it only decides which region traffic returns to."""
    eligible = [ep for ep in ranked if ep.eligible()]
    return next((ep for ep in eligible if ep is active or ep.gate_open()), eligible[0] if eligible else None)


def _resolve_checks(specs: Sequence[object], setting: str, endpoint: EndpointConfig, config: FailoverConfig) -> tuple[HealthCheck, ...]:
    checks: list[HealthCheck] = []
    for i, spec in enumerate(specs):
        where = f"{setting}[{i}]"
        check = resolve_check(spec, where)
        prepare = getattr(check, "prepare", None)
        if callable(prepare):
            try:
                prepare(endpoint, config)
            except ConfigurationError as exc:
                inner = exc.setting.rpartition(".")[2]
                raise ConfigurationError(f"{where}.{inner}", exc.problem, exc.fix) from None
        checks.append(check)
    if not any(check_mode(c) == HEALTH for c in checks):
        # A gate says whether traffic may return, never whether the endpoint
        # answers at all: without a health check, PING keeps deciding that.
        checks.insert(0, PingHealthCheck())
    return tuple(checks)


def validate_checks(config: FailoverConfig) -> None:
    """Resolve and validate every endpoint's health checks, as building an
    engine would, without starting anything: for ``manage.py check`` and the
    like. Raises :class:`ConfigurationError` naming the setting and the fix."""
    for ep in config.endpoints:
        if ep.health_checks is not None:
            checks = _resolve_checks(ep.health_checks, f"endpoints[{ep.name!r}].health_checks", ep, config)
        else:
            checks = _resolve_checks(config.health_checks, "health_checks", ep, config)
        for check in checks:
            close = getattr(check, "close", None)
            if callable(close):
                close()


def _new_breaker(
    config: FailoverConfig, name: str, listener: pybreaker.CircuitBreakerListener, storage: pybreaker.CircuitBreakerStorage | None = None,
) -> pybreaker.CircuitBreaker:
    return pybreaker.CircuitBreaker(
        fail_max=config.failure_threshold,
        reset_timeout=config.breaker_reset_timeout,
        exclude=[_not_a_fault],
        listeners=[listener],
        state_storage=storage or pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED),
        name=name,
    )


def build_endpoint_states(config: FailoverConfig, listener: pybreaker.CircuitBreakerListener) -> list[EndpointState]:
    states = []
    for index, ep in enumerate(config.endpoints):
        if ep.health_checks is not None:
            checks = _resolve_checks(ep.health_checks, f"endpoints[{ep.name!r}].health_checks", ep, config)
        else:
            checks = _resolve_checks(config.health_checks, "health_checks", ep, config)
        storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
        factory = functools.partial(_new_breaker, config, ep.name, listener, storage)
        secrets = tuple(dict.fromkeys((*ep.secrets, *(str(s) for c in checks for s in getattr(c, "secrets", ()) if s))))
        state = EndpointState(config=ep, index=index, breaker=factory(), breaker_factory=factory, checks=checks, secrets=secrets)
        if state.gate_checks:
            state.gate = HealthStatus.UNKNOWN
        states.append(state)
    return states
