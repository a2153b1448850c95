"""Runtime state of one endpoint: breaker, health verdict, probe client, counters."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pybreaker
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .commands import Failure, classify
from .config import EndpointConfig, FailoverConfig
from .events import Reason
from .health import (
    HealthCheck,
    HealthResult,
    HealthStatus,
    PingHealthCheck,
    ProbeContext,
    combine_checks,
    combine_probes,
    normalize_result,
    resolve_check,
)
from .masking import mask_text


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
    _probe_client: redis.Redis | None = None

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

    def eligible(self) -> bool:
        return self.health is not HealthStatus.UNHEALTHY and self.breaker.current_state == pybreaker.STATE_CLOSED

    def healthy_for(self, seconds: float, now: float) -> bool:
        return self.health is HealthStatus.HEALTHY and self.healthy_since is not None and now - self.healthy_since >= seconds

    def mask(self, text: str) -> str:
        return mask_text(text, self.secrets)

    # -- probing (runs on a probe worker thread) ---------------------------------

    def probe_client(self, config: FailoverConfig) -> redis.Redis:
        client = self._probe_client
        if client is None:
            from .pool import quiet_connection_defaults

            conn_class, kwargs = self.config.connection_params({**quiet_connection_defaults(), **config.base_connection_options()})
            kwargs.update(
                socket_timeout=config.health_check_timeout,
                socket_connect_timeout=config.health_check_timeout,
                retry=Retry(NoBackoff(), 0),
                decode_responses=False,
            )
            kwargs.pop("health_check_interval", None)
            pool = redis.ConnectionPool(connection_class=conn_class, max_connections=4, **kwargs)
            client = self._probe_client = redis.Redis(connection_pool=pool)
        return client

    def run_checks(self, config: FailoverConfig) -> HealthResult:
        """One round of every check of this endpoint, each probed ``health_check_probes`` times."""
        ctx = ProbeContext(self.config, self.probe_client(config), config.health_check_timeout)
        results: list[tuple[str, HealthResult]] = []
        for check in self.checks:
            probes: list[HealthResult] = []
            for i in range(config.health_check_probes):
                if i:
                    time.sleep(config.health_check_probe_delay)
                try:
                    probes.append(normalize_result(check.check(ctx)))
                except Exception as exc:  # noqa: BLE001 - a crashing custom check is not evidence
                    probes.append(HealthResult.inconclusive(f"check raised {type(exc).__name__}: {exc}"))
            results.append((getattr(check, "name", "check"), combine_probes(probes, config.health_check_policy)))
        verdict = combine_checks(results)
        return HealthResult(verdict.status, self.mask(verdict.detail), verdict.latency)

    def close_probe_client(self) -> None:
        client, self._probe_client = self._probe_client, None
        if client is not None:
            client.connection_pool.disconnect()

    def after_fork(self) -> None:
        # A lock held by another thread at fork() time would stay held forever in the child.
        self.breaker._lock = threading.RLock()
        self._probe_client = None

    def snapshot(self, active: bool) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.config.masked_url,
            "weight": self.weight,
            "active": active,
            "health": str(self.health),
            "health_detail": self.health_detail,
            "breaker": self.breaker_state,
            "latency_ms": None if self.latency is None else round(self.latency * 1000, 3),
            "last_probe_at": self.last_probe_at,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "counters": dict(self.counters),
        }


def build_endpoint_states(config: FailoverConfig, listener: pybreaker.CircuitBreakerListener) -> list[EndpointState]:
    global_checks = tuple(resolve_check(c) for c in config.health_checks) or (PingHealthCheck(),)
    states = []
    for index, ep in enumerate(config.endpoints):
        checks = global_checks
        if ep.health_checks is not None:
            checks = tuple(resolve_check(c, f"endpoints[{ep.name!r}].health_checks") for c in ep.health_checks) or (PingHealthCheck(),)
        breaker = pybreaker.CircuitBreaker(
            fail_max=config.failure_threshold,
            reset_timeout=config.breaker_reset_timeout,
            exclude=[_not_a_fault],
            listeners=[listener],
            name=ep.name,
        )
        states.append(EndpointState(config=ep, index=index, breaker=breaker, checks=checks, secrets=ep.secrets))
    return states
