"""Fleet control plane: operator overrides and process heartbeats.

Why it exists: ``manage.py geofailover failover``, ``flask geofailover failover``
and ``geofailover failover`` each run in a new process, while the traffic is in
dozens of web and worker processes. So an operator action is written as an
*override record* to every reachable endpoint, and every process reads it each
interval and applies it locally through the engine's manual API
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

Cost per process and health-check interval: one pipelined round trip to the
active endpoint (TIME, GET override, HSET heartbeat, PEXPIRE) and one to every
other healthy endpoint (TIME, GET override), on the monitor's existing probe
connections. The I/O runs on a control thread woken after each monitor round,
so a slow endpoint never delays failure detection or a command waiting for a
probe verdict.

Clock skew. Nothing here compares a record with the reader's own clock alone:

* ordering: a new override is stamped with the endpoints' clock (``TIME``), and
  later than every record stored or applied by a live process (+ 1 ms), so an
  operator whose clock is off still supersedes what is stored;
* pin and ``--for`` expiry: the store script stamps each copy with the
  endpoint's own clock (``stored_at``), and readers measure a record's age on
  that same clock (``TIME``), so every process lapses it at the same moment
  whatever its own clock says;
* heartbeat age: each heartbeat carries its writer's offset to the endpoint's
  clock, so readers compute ages (and liveness) on the endpoint's clock and
  ``status`` can flag a host whose clock is off.

Trust. Whoever can write the keys can store anything there, and every process
reads the record each interval, so records are untrusted input: size-capped
(a reason of 500 characters, a record of 8 KiB read with ``GETRANGE``, a
heartbeat of 16 KiB), validated field by field (finite, bounded, at most
:data:`~.records.MAX_CLOCK_SKEW` ahead of the endpoint's clock), and a record
that fails is ignored with a warning, shown by ``status`` and replaced by the
next action (``override clear`` replaces whatever is there). The Redis ACL on
``{prefix}:*`` is the trust boundary (docs/operations.md).

Modules: :mod:`.records` (the stored JSON records), :mod:`.plane` (the
per-engine thread that reads and writes them), :mod:`.fleet` (operator
actions and fleet status), :mod:`.report` (the health report of ``check``).
"""

from __future__ import annotations

from .fleet import fleet_status, request
from .plane import ControlPlane, attach_control_plane, plane_of
from .records import (
    ACTIONS,
    Action,
    ActionResult,
    FleetEntry,
    Heartbeat,
    Override,
    default_who,
    format_duration,
    heartbeat_ttl,
)
from .report import check

__all__ = [
    "ACTIONS",
    "Action",
    "ActionResult",
    "ControlPlane",
    "FleetEntry",
    "Heartbeat",
    "Override",
    "attach_control_plane",
    "check",
    "default_who",
    "fleet_status",
    "format_duration",
    "heartbeat_ttl",
    "plane_of",
    "request",
]
