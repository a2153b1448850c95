"""Health checks: what the monitor asks each endpoint every interval.

A check answers with a :class:`HealthResult` whose status is one of three:
``HEALTHY``, ``UNHEALTHY`` or ``INCONCLUSIVE``. The third exists because "I
could not find out" (a REST API that timed out, a custom check that crashed)
is not evidence that the database is down, and treating it as such turns a
monitoring hiccup into a failover.

Custom checks are either a callable ``check(ctx) -> bool | HealthResult`` or
an object with that ``check`` method (subclass :class:`HealthCheck`). Either
may also be named by a dotted path string, or by a dict
``{"class": "dotted.path", **constructor_kwargs}``, so Django and Flask
settings can configure them without importing anything.

Every check has a *mode*. A ``"health"`` check decides whether the endpoint
may serve at all: its unhealthy verdict evicts the active endpoint. A
``"failback_only"`` check is a *gate*: it decides only whether traffic may
*return* to the endpoint (automatic failback, a pin's return, a manual
``failover_to``), never evicts the endpoint that is serving, and never
blocks a failover away from a dead one. Lag checks are gates by default,
because a member that is a little behind is still far better than no
member at all, but is the wrong place to send traffic back to.
"""

from __future__ import annotations

import difflib
import enum
import importlib
import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import redis

from .commands import rejection
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
    """A check's answer. ``error``, when the check failed on an exception, is
    that exception: the engine chains it to ``NoHealthyEndpointError`` and
    tells a rejection (credentials, ACL, TLS) and a timeout from an outage."""

    status: HealthStatus
    detail: str = ""
    latency: float | None = None
    error: BaseException | None = field(default=None, compare=False, repr=False)

    @classmethod
    def healthy(cls, detail: str = "", latency: float | None = None) -> HealthResult:
        return cls(HealthStatus.HEALTHY, detail, latency)

    @classmethod
    def unhealthy(cls, detail: str = "", latency: float | None = None) -> HealthResult:
        return cls(HealthStatus.UNHEALTHY, detail, latency)

    @classmethod
    def inconclusive(cls, detail: str = "", latency: float | None = None) -> HealthResult:
        return cls(HealthStatus.INCONCLUSIVE, detail, latency)


#: The check decides whether the endpoint may serve; unhealthy evicts it.
HEALTH: Final = "health"
#: The check only gates the *return* of traffic to the endpoint (go-redis' ``FailbackOnly``).
FAILBACK_ONLY: Final = "failback_only"
CHECK_MODES: Final = (HEALTH, FAILBACK_ONLY)


@dataclass(frozen=True)
class ProbeContext:
    """What a check gets: the endpoint, a dedicated probe client and the time budget.

    The probe client is separate from the application's pool (its own single
    connection, the probe timeout as socket timeout, no retries), so a probe
    never queues behind application traffic and vice versa. ``interval`` is
    the monitor's ``probe_interval``: checks that call a rate-limited
    API use it to ask at most once per interval, however many probes and
    confirmation rounds the monitor runs.
    """

    endpoint: EndpointConfig
    client: redis.Redis
    timeout: float
    interval: float = 1.0


@dataclass(frozen=True)
class CheckOutcome:
    """One check's combined result of one round, as shown in ``status()``."""

    name: str
    mode: str
    result: HealthResult


@dataclass(frozen=True)
class EndpointVerdict(HealthResult):
    """An endpoint's round: the health verdict (the :class:`HealthResult`
    fields), the failback gate's verdict (``None`` when the endpoint has no
    ``failback_only`` check) and every check's own outcome.

    A subclass rather than a new type so that everything that handles a
    plain :class:`HealthResult` (the monitor, a round that timed out) keeps
    working: a plain result simply carries no gate verdict.
    """

    gate: HealthResult | None = None
    checks: tuple[CheckOutcome, ...] = ()


@runtime_checkable
class HealthCheck(Protocol):
    """Protocol of a health check object. ``name`` appears in status and logs.

    Optional members the engine uses when present: ``mode`` (``"health"``,
    the default, or ``"failback_only"``), ``prepare(endpoint, config)``
    (validate against the endpoint and engine settings at construction, so a
    mistake is a :class:`ConfigurationError` at startup rather than an
    outage-time surprise), ``secrets`` (strings to mask wherever text leaves
    the engine), ``close()`` and ``after_fork()``.
    """

    name: str

    def check(self, ctx: ProbeContext) -> HealthResult | bool: ...


class PingHealthCheck:
    """The default: PING answered with PONG within the probe timeout."""

    name = "ping"

    def check(self, ctx: ProbeContext) -> HealthResult:
        started = time.monotonic()
        try:
            ok = ctx.client.ping()
        except (redis.exceptions.RedisError, OSError) as exc:
            # A ResponseError (LOADING, MASTERDOWN...) means the server answers but cannot serve.
            text = str(exc) if type(exc) is redis.exceptions.ResponseError else f"{type(exc).__name__}: {exc}"
            problem = rejection(exc)
            detail = f"{problem} (PING: {text})" if problem else f"PING: {text}"
            return HealthResult(HealthStatus.UNHEALTHY, detail, time.monotonic() - started, error=exc)
        latency = time.monotonic() - started
        if ok:
            return HealthResult.healthy("PONG", latency)
        return HealthResult.unhealthy("PING did not return PONG", latency)


class CallableHealthCheck:
    """Adapts a plain function to the :class:`HealthCheck` protocol."""

    def __init__(self, func: Callable[[ProbeContext], HealthResult | bool], name: str | None = None, mode: str = HEALTH) -> None:
        self.func = func
        self.name: str = name or str(getattr(func, "__name__", "custom"))
        self.mode: str = validate_mode(mode, "CallableHealthCheck.mode")

    def check(self, ctx: ProbeContext) -> HealthResult | bool:
        return self.func(ctx)

    def __repr__(self) -> str:
        return f"CallableHealthCheck({self.name})"


def validate_mode(mode: object, setting: str) -> str:
    """Return ``mode`` if it is a check mode, else raise naming ``setting``."""
    if mode not in CHECK_MODES:
        raise ConfigurationError(setting, f"{mode!r} is not a check mode", f"use one of {', '.join(repr(m) for m in CHECK_MODES)}")
    return str(mode)


def check_mode(check: HealthCheck, setting: str = "health_checks") -> str:
    """The mode of ``check``: its ``mode`` attribute, ``"health"`` when it has none."""
    return validate_mode(getattr(check, "mode", HEALTH), f"{setting}.mode")


def _import(path: str, setting: str) -> Any:
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ConfigurationError(setting, f"{path!r} is not a dotted path", "write 'package.module.CheckClass' or 'ping'")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(setting, f"cannot import {path!r} ({exc})", "check the dotted path") from None


def _construct(factory: Any, kwargs: dict[str, Any], setting: str) -> Any:
    """Call a check class (or factory) with settings, turning a wrong keyword
    into a :class:`ConfigurationError` that names it and suggests the right one."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        signature = None
    if signature is not None and not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        known = [n for n, p in signature.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        for key in kwargs:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"accepted: {', '.join(known) or 'no settings'}"
                raise ConfigurationError(f"{setting}.{key}", "unknown option", hint)
    try:
        return factory(**kwargs)
    except ConfigurationError as exc:
        # Re-anchor the check's own setting name at the place it was configured.
        inner = exc.setting.rpartition(".")[2] if "." in exc.setting else exc.setting
        raise ConfigurationError(f"{setting}.{inner}", exc.problem, exc.fix) from None
    except TypeError as exc:
        name = getattr(factory, "__name__", repr(factory))
        raise ConfigurationError(setting, f"cannot construct {name}: {exc}", "check the settings against the check's documentation") from None


def resolve_check(spec: Any, setting: str = "health_checks") -> HealthCheck:
    """Turn a check given in configuration into a check object.

    Accepts an object with ``check``, a class (instantiated without
    arguments), a callable, the string ``"ping"``, a dotted path to any of
    those, or a dict ``{"class": "dotted.path", "mode": ..., "name": ...,
    **kwargs}``: the class (or factory) is called with ``kwargs``; ``mode``
    and ``name`` go to the constructor when it takes them and are set on the
    result otherwise, so plain functions can be gates too.
    """
    mode: Any = None
    name: Any = None
    if isinstance(spec, Mapping):
        options = dict(spec)
        target = options.pop("class", None)
        if target is None:
            raise ConfigurationError(f"{setting}.class", "missing", "add 'class': 'package.module.CheckClass'")
        if isinstance(target, str):
            target = _import(target, f"{setting}.class")
        params: Mapping[str, inspect.Parameter]
        try:
            params = inspect.signature(target).parameters
        except (TypeError, ValueError):
            params = {}
        for key in ("mode", "name"):
            if key in options and key not in params:
                if key == "mode":
                    mode = validate_mode(options.pop(key), f"{setting}.mode")
                else:
                    name = str(options.pop(key))
        # A class is constructed; so is a factory given settings. A plain
        # function with at most mode/name is the check itself.
        spec = _construct(target, options, setting) if isinstance(target, type) or options else target
    if isinstance(spec, str):
        if spec == "ping":
            return PingHealthCheck()
        spec = _import(spec, setting)
    if isinstance(spec, type):
        spec = _construct(spec, {}, setting)
    check: HealthCheck
    if hasattr(spec, "check") and callable(spec.check):
        check = spec
        if not getattr(check, "name", None):
            try:
                check.name = type(check).__name__
            except AttributeError:
                pass
    elif callable(spec):
        check = CallableHealthCheck(spec)
    else:
        raise ConfigurationError(setting, f"{spec!r} is not a health check", "give a callable, a HealthCheck object or a dotted path")
    for attr, value in (("mode", mode), ("name", name)):
        if value is not None:
            try:
                setattr(check, attr, value)
            except AttributeError:
                raise ConfigurationError(f"{setting}.{attr}", f"cannot be set on {type(check).__name__}", "remove it") from None
    check_mode(check, setting)
    return check


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
    return HealthResult(HealthStatus.UNHEALTHY, bad[-1].detail, bad[-1].latency, error=bad[-1].error)


def combine_checks(results: Sequence[tuple[str, HealthResult]], policy: str = "all") -> HealthResult:
    """Combine several checks' results of one endpoint by ``policy``
    (``health_check_combine``: all/any/majority).

    Inconclusive checks are neither evidence for nor against: the verdict is
    healthy when the conclusive answers already meet the policy, unhealthy
    when the policy could not be met even if every inconclusive check had
    passed, and inconclusive otherwise. With ``all`` that means one unhealthy
    check makes the endpoint unhealthy, and one inconclusive check (the rest
    healthy) makes it inconclusive.
    """
    if not results:
        return HealthResult.inconclusive("no check ran")
    total = len(results)
    good = [(n, r) for n, r in results if r.status is HealthStatus.HEALTHY]
    bad = [(n, r) for n, r in results if r.status is HealthStatus.UNHEALTHY]
    unsure = [(n, r) for n, r in results if r.status not in (HealthStatus.HEALTHY, HealthStatus.UNHEALTHY)]

    def needed(count: int) -> bool:
        if policy == "any":
            return count >= 1
        if policy == "majority":
            return count * 2 > total
        return count == total

    def label(name: str, r: HealthResult) -> str:
        return f"{name}: {r.detail}" if total > 1 else r.detail

    if needed(len(good)):
        latency = next((r.latency for _, r in good if r.latency is not None), None)
        detail = results[0][1].detail if total == 1 else f"{len(good)}/{total} checks passed"
        return HealthResult.healthy(detail, latency)
    if not needed(len(good) + len(unsure)):
        return HealthResult(HealthStatus.UNHEALTHY, "; ".join(label(n, x) for n, x in bad), bad[0][1].latency, error=bad[0][1].error)
    return HealthResult(HealthStatus.INCONCLUSIVE, "; ".join(label(n, x) for n, x in unsure), unsure[0][1].latency)
