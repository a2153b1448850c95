"""Fleet control plane: operator overrides and process heartbeats (SPEC STUB).

THIS MODULE IS A SPECIFICATION STUB: the public names and signatures below are
the contract that the CLI (`geofailover_core.cli`) and the Django, Flask and
Celery adapters code against. The implementation replaces every
``NotImplementedError`` without changing the signatures.

Why it exists: ``manage.py geofailover failover``, ``flask geofailover failover``
and ``geofailover failover`` each run in a new process, while the traffic is in
dozens of web and worker processes. So an operator action is written as an
*override record* to every reachable endpoint, and every process's monitor
reads it each interval and applies it locally through the engine's manual API
(``failover_to``/``pin``/``unpin``/``failback``). Each process also publishes a
small *heartbeat* with a TTL so ``status`` can list the fleet.

Keys (prefix = ``config.control_key_prefix``, name = ``config.name``):
    ``{prefix}:{name}:override``           the override record (JSON string)
    ``{prefix}:{name}:fleet``              a hash: field ``host:pid`` -> heartbeat JSON
                                             (one HSET per interval; expired entries are
                                             pruned by readers using the record's ``at`` +
                                             ``ttl``, so listing needs no SCAN of the keyspace)
Conflicting copies of the override on different endpoints resolve by ``at``
(latest wins). Disabled entirely with ``control_plane=False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .engine import FailoverEngine

Action = Literal["failover", "failback", "pin", "unpin"]


@dataclass(frozen=True)
class Override:
    """An operator's instruction to the fleet."""

    id: str  # uuid4 hex; a process applies each id once
    action: Action
    endpoint: str | None  # target for failover/pin
    until: float | None  # wall-clock expiry of a pin (None: until unpin)
    reason: str | None
    who: str  # "user@host" of the operator
    at: float  # wall-clock time written; latest wins
    force: bool = False

    def to_json(self) -> str:
        raise NotImplementedError

    @classmethod
    def from_json(cls, text: str | bytes) -> Override:
        raise NotImplementedError


@dataclass(frozen=True)
class Heartbeat:
    """What one process reports about itself each interval."""

    host: str
    pid: int
    config: str
    app: str  # config.app_label
    active: str | None
    since: float  # wall clock: active endpoint since
    pinned: str | None
    hold: dict[str, Any] | None  # engine.status()["hold"]
    version: str  # geofailover version
    last_failover: dict[str, Any] | None  # engine.status()["last_event"]
    at: float  # wall clock of this heartbeat
    ttl: float  # seconds this heartbeat stays valid (3 x health_check_interval, >= 3 s)

    @property
    def key(self) -> str:
        return f"{self.host}:{self.pid}"

    def to_json(self) -> str:
        raise NotImplementedError

    @classmethod
    def from_json(cls, text: str | bytes) -> Heartbeat:
        raise NotImplementedError


@dataclass(frozen=True)
class ActionResult:
    """Outcome of a fleet-wide action, for the CLI's report and exit code."""

    override: Override
    written_to: list[str]  # endpoint names that stored the record
    failed: dict[str, str]  # endpoint name -> masked error
    moved: list[Heartbeat]  # processes whose heartbeat shows the requested state
    stragglers: list[Heartbeat]  # live processes that did not move before the deadline
    ok: bool  # written somewhere and no stragglers


class ControlPlane:
    """Per-engine control plane. Created by the engine when ``config.control_plane``;
    ``sync()`` is called by the monitor thread at the end of every round."""

    def __init__(self, engine: FailoverEngine) -> None:
        self.engine = engine

    def sync(self) -> None:
        """Read the override (apply it if newer and not yet applied), write our heartbeat."""
        raise NotImplementedError

    def publish(self, override: Override) -> tuple[list[str], dict[str, str]]:
        """Write ``override`` to every reachable endpoint; (written, failed)."""
        raise NotImplementedError

    def read_override(self) -> Override | None:
        """Latest override across reachable endpoints (by ``at``), or None."""
        raise NotImplementedError

    def fleet(self) -> list[Heartbeat]:
        """Live heartbeats (not expired) merged across reachable endpoints, newest per process."""
        raise NotImplementedError


def request(
    engine: FailoverEngine,
    action: Action,
    endpoint: str | None = None,
    *,
    duration: float | None = None,
    reason: str | None = None,
    force: bool = False,
    wait: float = 10.0,
) -> ActionResult:
    """Validate (unknown endpoint -> UnknownEndpointError; unhealthy target without
    force -> UnhealthyEndpointError, checked by probing once), publish the override,
    apply it in this process too, then wait up to ``wait`` seconds until every live
    heartbeat shows the requested state; report stragglers."""
    raise NotImplementedError


def fleet_status(engine: FailoverEngine) -> dict[str, Any]:
    """``engine.status()`` plus ``"fleet"`` (list of heartbeat dicts with ``age``),
    ``"override"`` (the record in force or None) and ``"disagreements"`` (processes
    whose active endpoint differs from the majority). JSON-serialisable, no secrets."""
    raise NotImplementedError


def check(engine: FailoverEngine) -> tuple[int, dict[str, Any]]:
    """Run every health check once. Exit code 0 = every endpoint healthy,
    1 = degraded (some unhealthy, one serves), 2 = none healthy; plus the report."""
    raise NotImplementedError
