"""Replication lag of self-managed Redis: is this replica caught up with its primary?

Why: after a region comes back as a replica of the region that served
meanwhile, it answers PING long before it has the writes it missed. Sending
traffic back to it then serves stale data. This check measures the lag the
two ways that mean something:

* **bytes**, from ``INFO replication``: the primary's ``master_repl_offset``
  minus the replica's ``slave_repl_offset``, both read in the same probe
  (the replica first, so the figure errs towards "behind");
* **seconds**, with a heartbeat key (``heartbeat=True``): the probe writes
  the primary's own ``TIME`` to a key on the primary and reads it on the
  replica. If the fresh value shows up within the wait, the replica is
  current; otherwise its staleness is the primary's clock minus the newest
  heartbeat it holds. No clock of this machine is involved. (Why not
  ``master_last_io_seconds_ago``: on an idle primary it legitimately grows to
  ``repl-ping-replica-period``, 10 s by default, so it is no lag signal.)

A link that is down or a full sync in progress is unhealthy at once. When
the endpoint turns out to be a primary (e.g. after a promotion), there is
nothing to lag behind and it is healthy, unless ``min_replicas`` asks that
this many of *its* replicas be online and within the thresholds (from the
primary's view: offsets and ``lag`` from ``REPLCONF ACK``, once a second).

Like every lag check it is a failback gate by default (mode
``failback_only``): it decides whether traffic may return to the endpoint
and never evicts the endpoint that serves.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
import redis.connection

from ..connection import direct_client, probe_params
from ..errors import ConfigurationError
from ..health import FAILBACK_ONLY, HealthResult, ProbeContext, validate_mode
from ..masking import mask_url

if TYPE_CHECKING:
    from ..config import EndpointConfig, FailoverConfig

__all__ = ["ReplicationLagHealthCheck"]

_CLS = "ReplicationLagHealthCheck"
_POLL = 0.005  # heartbeat re-read period inside one probe's budget


def _setting(name: str) -> str:
    return f"{_CLS}.{name}"


@dataclass
class _Member:
    endpoint: EndpointConfig
    config: FailoverConfig
    heartbeat_key: str
    primary: EndpointConfig | None  # None: ask the replica where its primary is
    lock: threading.Lock = field(default_factory=threading.Lock)
    clients: dict[tuple[str, int] | None, redis.Redis] = field(default_factory=dict)


class _Unreachable(Exception):
    pass


class ReplicationLagHealthCheck:
    """Lag of a replica endpoint behind its primary, in bytes and/or seconds.

    Parameters:

    * ``max_lag_bytes``: most replication bytes the replica may be behind.
    * ``max_lag_seconds``: most seconds of staleness; needs ``heartbeat=True``.
    * ``heartbeat`` (False): write ``heartbeat_key`` on the primary every
      probe (a ~20-byte string with a TTL) and read it on the replica.
    * ``heartbeat_key``: default ``{control_key_prefix}:{name}:heartbeat:{endpoint}``.
    * ``primary``: where the primary is: the name of another endpoint of the
      same configuration, or a ``redis://`` URL. Default: the
      ``master_host``/``master_port`` the replica reports, reached with this
      endpoint's connection options (wrong when the replica reaches its
      primary through an address the application cannot use).
    * ``min_replicas`` (0): on an endpoint that is a primary, how many of its
      replicas must be online and within the thresholds.
    * ``mode``: ``"failback_only"`` (default) or ``"health"``.
    """

    def __init__(
        self,
        *,
        max_lag_bytes: int | None = None,
        max_lag_seconds: float | None = None,
        heartbeat: bool = False,
        heartbeat_key: str | None = None,
        primary: str | None = None,
        min_replicas: int = 0,
        mode: str = FAILBACK_ONLY,
        name: str | None = None,
    ) -> None:
        if max_lag_bytes is not None and (isinstance(max_lag_bytes, bool) or not isinstance(max_lag_bytes, int) or max_lag_bytes < 0):
            raise ConfigurationError(_setting("max_lag_bytes"), f"{max_lag_bytes!r} is not a byte count", "give an integer >= 0")
        if max_lag_seconds is not None and (
            isinstance(max_lag_seconds, bool) or not isinstance(max_lag_seconds, (int, float)) or not 0 < max_lag_seconds < math.inf
        ):
            raise ConfigurationError(_setting("max_lag_seconds"), f"{max_lag_seconds!r} is not a positive number", "give seconds, e.g. 1.0")
        if max_lag_bytes is None and max_lag_seconds is None:
            raise ConfigurationError(_setting("max_lag_bytes"), "no threshold", "give max_lag_bytes, max_lag_seconds (with heartbeat=True), or both")
        if not isinstance(heartbeat, bool):
            raise ConfigurationError(_setting("heartbeat"), f"expected True or False, got {heartbeat!r}", "write True or False")
        if max_lag_seconds is not None and not heartbeat:
            raise ConfigurationError(
                _setting("max_lag_seconds"), "needs a heartbeat to measure seconds",
                "set heartbeat=True (writes a small key with a TTL on the primary); master_last_io_seconds_ago is no lag signal on an idle primary",
            )
        if heartbeat_key is not None and (not isinstance(heartbeat_key, str) or not heartbeat_key):
            raise ConfigurationError(_setting("heartbeat_key"), f"{heartbeat_key!r} is not a key name", "give a non-empty string")
        if isinstance(min_replicas, bool) or not isinstance(min_replicas, int) or min_replicas < 0:
            raise ConfigurationError(_setting("min_replicas"), f"{min_replicas!r} is not a count", "give an integer >= 0")
        if primary is not None and (not isinstance(primary, str) or not primary):
            raise ConfigurationError(_setting("primary"), f"{primary!r} is not an endpoint name or URL", "give an endpoint name or redis://host:port")
        self.max_lag_bytes = max_lag_bytes
        self.max_lag_seconds = float(max_lag_seconds) if max_lag_seconds is not None else None
        self.heartbeat = heartbeat
        self.heartbeat_key = heartbeat_key
        self.primary = primary
        self.min_replicas = min_replicas
        self.mode = validate_mode(mode, _setting("mode"))
        self.name: str = name or "replication-lag"
        self._members: dict[str, _Member] = {}
        self._members_lock = threading.Lock()

    # -- configuration ------------------------------------------------------------

    def prepare(self, endpoint: EndpointConfig, config: FailoverConfig) -> None:
        """Resolve ``primary`` against the configuration, at construction."""
        from ..config import EndpointConfig

        primary: EndpointConfig | None = None
        if self.primary is not None:
            names = [ep.name for ep in config.endpoints]
            if self.primary == endpoint.name:
                raise ConfigurationError(_setting("primary"), f"endpoint {endpoint.name!r} cannot be its own primary", "name the endpoint it replicates from")
            if self.primary in names:
                primary = config.endpoint(self.primary)
            elif "://" in self.primary:
                try:
                    primary = EndpointConfig(name="primary", url=self.primary)
                except ConfigurationError as exc:
                    raise ConfigurationError(_setting("primary"), exc.problem, exc.fix) from None
            else:
                raise ConfigurationError(
                    _setting("primary"), f"{self.primary!r} is neither an endpoint name nor a URL",
                    f"use one of {', '.join(repr(n) for n in names)} or redis://host:port",
                )
        key = self.heartbeat_key or f"{config.control_key_prefix}:{config.name}:heartbeat:{endpoint.name}"
        with self._members_lock:
            old = self._members.get(endpoint.name)
            if old is not None:
                self._close_member(old)
            self._members[endpoint.name] = _Member(endpoint, config, key, primary)

    def _member(self, ctx: ProbeContext) -> _Member:
        member = self._members.get(ctx.endpoint.name)
        if member is None:
            raise RuntimeError(f"{_CLS} was not prepared for endpoint {ctx.endpoint.name!r} (configure it through FailoverConfig)")
        return member

    def _client(self, member: _Member, ctx: ProbeContext, info: dict[str, Any]) -> redis.Redis:
        """The connection to the primary (cached per address), with the probe's
        timeouts and no retries."""
        if member.primary is not None:
            address: tuple[str, int] | None = None
            source = member.primary
        else:
            host, port = info.get("master_host"), info.get("master_port")
            if not host or not port:
                raise _Unreachable("the replica does not report its primary")
            address = (str(host), int(port))
            source = member.endpoint
        client = member.clients.get(address)
        if client is None:
            conn_class, kwargs = probe_params(member.config, source)
            if address is not None:
                if issubclass(conn_class, redis.connection.UnixDomainSocketConnection):
                    conn_class = redis.connection.Connection
                    kwargs.pop("path", None)
                kwargs["host"], kwargs["port"] = address
            kwargs.update(socket_timeout=ctx.timeout, socket_connect_timeout=ctx.timeout)
            client = member.clients[address] = direct_client(conn_class, kwargs, max_connections=2)
        return client

    # -- the probe ------------------------------------------------------------------

    def check(self, ctx: ProbeContext) -> HealthResult:
        member = self._member(ctx)
        started = time.monotonic()
        with member.lock:
            try:
                info = ctx.client.info("replication")
            except (redis.exceptions.RedisError, OSError) as exc:
                return HealthResult.inconclusive(f"INFO replication failed: {type(exc).__name__}")
            role = info.get("role")
            if role == "master":
                return self._as_primary(info, started)
            if role not in ("slave", "replica"):
                return HealthResult.inconclusive(f"unexpected role {role!r}")
            if info.get("master_link_status") != "up":
                since = info.get("master_link_down_since_seconds")
                return HealthResult.unhealthy(f"replication link down{f' for {since} s' if since not in (None, -1) else ''}")
            if info.get("master_sync_in_progress"):
                return HealthResult.unhealthy("initial sync from the primary in progress")
            try:
                primary = self._client(member, ctx, info)
                facts, problems = self._measure(ctx, member, info, primary, started)
            except _Unreachable as exc:
                return HealthResult.inconclusive(f"cannot measure lag: {exc}")
            except redis.exceptions.ResponseError as exc:
                return HealthResult.inconclusive(f"cannot measure lag: the primary answered {type(exc).__name__}: {str(exc)[:120]}")
            except (redis.exceptions.RedisError, OSError) as exc:
                return HealthResult.inconclusive(f"cannot reach the primary to measure lag: {type(exc).__name__}")
            latency = time.monotonic() - started
            if problems:
                return HealthResult.unhealthy("; ".join(problems), latency)
            return HealthResult.healthy(f"caught up: {', '.join(facts)}", latency)

    def _measure(
        self, ctx: ProbeContext, member: _Member, info: dict[str, Any], primary: redis.Redis, started: float,
    ) -> tuple[list[str], list[str]]:
        facts: list[str] = []
        problems: list[str] = []
        if self.max_lag_bytes is not None:
            replica_offset = int(info.get("slave_repl_offset", -1))
            primary_offset = int(primary.info("replication").get("master_repl_offset", 0))
            lag = max(0, primary_offset - replica_offset)
            if lag > self.max_lag_bytes:
                problems.append(f"{lag} bytes behind the primary (max {self.max_lag_bytes})")
            else:
                facts.append(f"{lag} bytes behind")
        if self.heartbeat:
            staleness = self._heartbeat(ctx, member, primary, started)
            limit = self.max_lag_seconds
            if staleness is None:
                problems.append("no heartbeat from the primary visible on the replica")
            elif limit is not None and staleness > limit:
                problems.append(f"{staleness:.3f} s stale (max {limit:g} s)")
            else:
                facts.append(f"{staleness:.3f} s stale")
        return facts, problems

    def _heartbeat(self, ctx: ProbeContext, member: _Member, primary: redis.Redis, started: float) -> float | None:
        """Staleness in seconds on the primary's clock, None when the replica holds no heartbeat.

        If the fresh heartbeat shows up on the replica while we wait, the
        staleness is how long that took. If not, the replica is at least the
        wait behind and at most the age of the newest heartbeat it holds; the
        upper bound is reported, because a gate must not open on a guess.
        """
        ttl_ms = int(max(60.0, 10 * ctx.interval) * 1000)
        stamp = self._primary_time(primary)
        primary.set(member.heartbeat_key, f"{stamp:.6f}", px=ttl_ms)
        budget = max(0.0, started + ctx.timeout - time.monotonic())
        wait = min(self.max_lag_seconds or budget, budget)
        waited_from = time.monotonic()
        while True:
            seen = self._read_heartbeat(ctx, member)
            if seen is not None and seen >= stamp:
                return time.monotonic() - waited_from
            if time.monotonic() - waited_from >= wait:
                break
            time.sleep(_POLL)  # bounded by this probe's own budget
        if seen is None:
            return None
        waited = time.monotonic() - waited_from
        return max(waited, self._primary_time(primary) - seen)

    @staticmethod
    def _primary_time(primary: redis.Redis) -> float:
        seconds, micros = primary.time()
        return int(seconds) + int(micros) / 1e6

    @staticmethod
    def _read_heartbeat(ctx: ProbeContext, member: _Member) -> float | None:
        raw = ctx.client.get(member.heartbeat_key)
        if raw is None:
            return None
        try:
            return float(raw.decode() if isinstance(raw, bytes) else raw)
        except ValueError:
            return None

    def _as_primary(self, info: dict[str, Any], started: float) -> HealthResult:
        latency = time.monotonic() - started
        if self.min_replicas == 0:
            return HealthResult.healthy("endpoint is a primary: nothing to lag behind", latency)
        offset = int(info.get("master_repl_offset", 0))
        good = 0
        seen = []
        for key, value in info.items():
            if not (key.startswith("slave") and key[5:].isdigit() and isinstance(value, dict)):
                continue
            lag_bytes = max(0, offset - int(value.get("offset", 0)))
            lag_s = int(value.get("lag", 0))
            seen.append(f"{value.get('ip')}:{value.get('port')} {value.get('state')} {lag_bytes} B/{lag_s} s")
            ok = value.get("state") == "online"
            ok = ok and (self.max_lag_bytes is None or lag_bytes <= self.max_lag_bytes)
            ok = ok and (self.max_lag_seconds is None or lag_s <= max(1.0, self.max_lag_seconds))
            good += ok
        detail = f"{good} of {len(seen)} replicas within thresholds (need {self.min_replicas})" + (f": {'; '.join(seen)}" if seen else "")
        if good >= self.min_replicas:
            return HealthResult.healthy(detail, latency)
        return HealthResult.unhealthy(detail, latency)

    # -- lifecycle --------------------------------------------------------------------

    @staticmethod
    def _close_member(member: _Member) -> None:
        clients, member.clients = member.clients, {}
        for client in clients.values():
            client.connection_pool.disconnect()

    def close(self) -> None:
        """Close the connections to primaries (they are re-opened on the next probe)."""
        with self._members_lock:
            for member in self._members.values():
                self._close_member(member)

    def after_fork(self) -> None:
        """The parent's sockets and locks must not be used by a forked child."""
        self._members_lock = threading.Lock()
        for member in self._members.values():
            member.lock = threading.Lock()
            member.clients = {}

    @property
    def secrets(self) -> tuple[str, ...]:
        """The password of a ``primary`` URL, so that the engine masks it."""
        if self.primary is None or "://" not in self.primary:
            return ()
        try:
            password = redis.connection.parse_url(self.primary).get("password")
        except ValueError:
            return ()
        return (str(password),) if password else ()

    def __repr__(self) -> str:
        primary = mask_url(self.primary) if self.primary and "://" in self.primary else self.primary
        return (
            f"{_CLS}(max_lag_bytes={self.max_lag_bytes!r}, max_lag_seconds={self.max_lag_seconds!r}, "
            f"heartbeat={self.heartbeat!r}, primary={primary!r}, mode={self.mode!r})"
        )
