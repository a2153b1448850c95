"""Health checks: what the monitor asks each endpoint every interval.

A check answers with a :class:`HealthResult` whose status is one of three:
``HEALTHY``, ``UNHEALTHY`` or ``INCONCLUSIVE``. The third exists because "I
could not find out" (a REST API that timed out, a custom check that crashed)
is not evidence that the database is down, and treating it as such turns a
monitoring hiccup into a failover.

Custom checks are either a callable ``check(ctx) -> bool | HealthResult`` or
an object with that ``check`` method (subclass :class:`HealthCheck`). Either
may also be named by a dotted path string, so Django and Flask settings can
refer to them.
"""

from __future__ import annotations

import enum
import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import redis

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .config import EndpointConfig


class HealthStatus(enum.StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    INCONCLUSIVE = "inconclusive"
    UNKNOWN = "unknown"  # never probed yet: eligible, optimistically

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class HealthResult:
    status: HealthStatus
    detail: str = ""
    latency: float | None = None

    @classmethod
    def healthy(cls, detail: str = "", latency: float | None = None) -> HealthResult:
        return cls(HealthStatus.HEALTHY, detail, latency)

    @classmethod
    def unhealthy(cls, detail: str = "", latency: float | None = None) -> HealthResult:
        return cls(HealthStatus.UNHEALTHY, detail, latency)

    @classmethod
    def inconclusive(cls, detail: str = "", latency: float | None = None) -> HealthResult:
        return cls(HealthStatus.INCONCLUSIVE, detail, latency)


@dataclass(frozen=True)
class ProbeContext:
    """What a check gets: the endpoint, a dedicated probe client and the time budget.

    The probe client is separate from the application's pool (its own single
    connection, the probe timeout as socket timeout, no retries), so a probe
    never queues behind application traffic and vice versa.
    """

    endpoint: EndpointConfig
    client: redis.Redis
    timeout: float


@runtime_checkable
class HealthCheck(Protocol):
    """Protocol of a health check object. ``name`` appears in status and logs."""

    name: str

    def check(self, ctx: ProbeContext) -> HealthResult | bool: ...


class PingHealthCheck:
    """The default: PING answered with PONG within the probe timeout."""

    name = "ping"

    def check(self, ctx: ProbeContext) -> HealthResult:
        started = time.monotonic()
        try:
            ok = ctx.client.ping()
        except redis.exceptions.ResponseError as exc:
            # LOADING, MASTERDOWN, NOAUTH...: the server answers but cannot serve.
            return HealthResult.unhealthy(f"PING: {exc}", time.monotonic() - started)
        except (redis.exceptions.RedisError, OSError) as exc:
            return HealthResult.unhealthy(f"PING: {type(exc).__name__}: {exc}", time.monotonic() - started)
        latency = time.monotonic() - started
        if ok:
            return HealthResult.healthy("PONG", latency)
        return HealthResult.unhealthy("PING did not return PONG", latency)


class CallableHealthCheck:
    """Adapts a plain function to the :class:`HealthCheck` protocol."""

    def __init__(self, func: Callable[[ProbeContext], HealthResult | bool], name: str | None = None) -> None:
        self.func = func
        self.name: str = name or str(getattr(func, "__name__", "custom"))

    def check(self, ctx: ProbeContext) -> HealthResult | bool:
        return self.func(ctx)

    def __repr__(self) -> str:
        return f"CallableHealthCheck({self.name})"


def resolve_check(spec: Any, setting: str = "health_checks") -> HealthCheck:
    """Turn a check given in configuration into a check object.

    Accepts an object with ``check``, a class (instantiated without
    arguments), a callable, the string ``"ping"`` or a dotted path to any of those.
    """
    if isinstance(spec, str):
        if spec == "ping":
            return PingHealthCheck()
        module_name, _, attr = spec.rpartition(".")
        if not module_name:
            raise ConfigurationError(setting, f"{spec!r} is not a dotted path", "write 'package.module.CheckClass' or 'ping'")
        try:
            spec = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigurationError(setting, f"cannot import {spec!r} ({exc})", "check the dotted path") from None
    if isinstance(spec, type):
        try:
            spec = spec()
        except TypeError as exc:
            raise ConfigurationError(setting, f"cannot instantiate {spec.__name__}: {exc}", "pass an instance instead of the class") from None
    if hasattr(spec, "check") and callable(spec.check):
        if not getattr(spec, "name", None):
            try:
                spec.name = type(spec).__name__
            except AttributeError:
                pass
        return spec  # type: ignore[no-any-return]
    if callable(spec):
        return CallableHealthCheck(spec)
    raise ConfigurationError(setting, f"{spec!r} is not a health check", "give a callable, a HealthCheck object or a dotted path")


def normalize_result(value: HealthResult | bool | None) -> HealthResult:
    if isinstance(value, HealthResult):
        return value
    if value is True:
        return HealthResult.healthy()
    if value is False:
        return HealthResult.unhealthy("check returned False")
    return HealthResult.inconclusive(f"check returned {value!r}")


def combine_probes(results: Sequence[HealthResult], policy: str) -> HealthResult:
    """Combine the probes of one round of one check by ``policy`` (all/any/majority).

    Inconclusive probes count neither way: if no probe was conclusive, the
    round is inconclusive.
    """
    conclusive = [r for r in results if r.status in (HealthStatus.HEALTHY, HealthStatus.UNHEALTHY)]
    if not conclusive:
        return results[-1] if results else HealthResult.inconclusive("no probe ran")
    good = [r for r in conclusive if r.status is HealthStatus.HEALTHY]
    bad = [r for r in conclusive if r.status is HealthStatus.UNHEALTHY]
    if policy == "all":
        ok = not bad
    elif policy == "any":
        ok = bool(good)
    else:
        ok = len(good) * 2 > len(conclusive)
    latencies = [r.latency for r in good if r.latency is not None]
    if ok:
        return HealthResult.healthy(good[-1].detail, min(latencies) if latencies else None)
    return HealthResult(HealthStatus.UNHEALTHY, bad[-1].detail, bad[-1].latency)


def combine_checks(results: Sequence[tuple[str, HealthResult]]) -> HealthResult:
    """Every check must pass: one unhealthy check makes the endpoint unhealthy;
    otherwise one inconclusive check makes the verdict inconclusive."""
    for name, r in results:
        if r.status is HealthStatus.UNHEALTHY:
            return HealthResult(r.status, f"{name}: {r.detail}" if len(results) > 1 else r.detail, r.latency)
    for name, r in results:
        if r.status is HealthStatus.INCONCLUSIVE:
            return HealthResult(r.status, f"{name}: {r.detail}" if len(results) > 1 else r.detail, r.latency)
    latency = next((r.latency for _, r in results if r.latency is not None), None)
    return HealthResult.healthy(results[0][1].detail if len(results) == 1 else "all checks passed", latency)
