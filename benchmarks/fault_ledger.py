"""What the fault matrix computes from the calls it recorded: timings and an accounting that cannot lie.

Every ``INCR`` surface writes one counter key, which each endpoint holds at its
own offset (``index * OFFSET``: endpoint ``a`` counts from 0, ``b`` from 10^12,
an ``a`` restarted empty from 2 * 10^12). The value an ``INCR`` returns
therefore names the endpoint that applied and acknowledged it, and the ledger
is simply the list of acknowledged values. After the run (servers restarted
from their ``appendfsync always`` AOF where a fault killed them) each
endpoint's counter is read and compared with the ledger:

* an acknowledged value above the endpoint's final counter, or the same value
  acknowledged twice (the counter went back), is a *lost* acknowledged write;
* counter increments nobody acknowledged are writes whose reply never came
  back (the caller saw an error) or writes applied twice. Under
  ``retry_on_failover="read_only"`` a write is never re-sent once it may have
  reached a server, so these can be at most the number of failed calls; any
  excess is a proven duplicate (``dup_min``, a lower bound, exact when no call
  failed).
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any

OFFSET = 10**12

Record = list[Any]  # [start, end, value or None, error type or None]


@dataclass
class Incarnation:
    """One life of one endpoint's data: ``a``, ``b``, or ``a`` after an empty restart (``a#2``)."""

    name: str
    region: str
    index: int

    @property
    def offset(self) -> int:
        return self.index * OFFSET


def region_of(value: int, incarnations: list[Incarnation]) -> str | None:
    index = value // OFFSET
    for inc in incarnations:
        if inc.index == index:
            return inc.region
    return None


def account_incr(records: list[Record], incarnations: list[Incarnation], finals: dict[str, int | None]) -> dict[str, Any]:
    """Compare the acknowledged values with each endpoint's final counter (``finals[name]``)."""
    acked = [int(r[2]) for r in records if r[3] is None and r[2] is not None]
    failed = sum(1 for r in records if r[3] is not None)
    per: dict[str, dict[str, int]] = {}
    known = {inc.index for inc in incarnations}
    stray = [v for v in acked if v // OFFSET not in known]
    lost = len(stray)
    unacked_total = 0
    for inc in incarnations:
        values = [v for v in acked if v // OFFSET == inc.index]
        distinct = set(values)
        final = finals.get(inc.name)
        final_value = inc.offset if final is None else int(final)
        lost_here = (len(values) - len(distinct)) + sum(1 for v in distinct if v > final_value)
        applied = final_value - inc.offset
        unacked = applied - sum(1 for v in distinct if v <= final_value)
        per[inc.name] = {"acked": len(values), "applied": applied, "lost": lost_here, "unacked_applied": unacked}
        lost += lost_here
        unacked_total += unacked
    return {
        "acked": len(acked),
        "failed_calls": failed,
        "lost": lost,
        "stray": len(stray),
        "unacked_applied": unacked_total,
        "dup_min": max(0, unacked_total - failed),
        "per_endpoint": per,
    }


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[k]


def timings(records: list[Record], t_fault: float, t_heal: float, t_end: float) -> dict[str, Any]:
    """Serving again, errors by type, and call latency inside the fault window.

    *Serving again*: the end of the first successful call that started once the
    fault was in effect and ended after the last failed call of the observed
    window, measured from the fault. So a lucky success between two errors
    does not count, and neither does a call that slipped through before the
    fault bit. ``None`` when the window ends on a failure.
    """
    after = [r for r in records if r[1] > t_fault and r[0] <= t_end]
    errors = Counter(str(r[3]) for r in after if r[3] is not None)
    last_fail = max((r[1] for r in after if r[3] is not None), default=None)
    ok_after = [r for r in after if r[3] is None and r[0] >= t_fault and (last_fail is None or r[1] > last_fail)]
    serving = (min(r[1] for r in ok_after) - t_fault) if ok_after else None
    window_end = max(t_heal, t_fault + serving) if serving is not None else t_end
    lat = sorted((r[1] - r[0]) * 1000 for r in records if r[1] >= t_fault and r[0] <= window_end)
    return {
        "serving_s": None if serving is None else round(serving, 4),
        "errors": sum(errors.values()),
        "error_types": dict(errors),
        "calls_in_window": len(lat),
        "p50_ms": round(_percentile(lat, 0.5), 2),
        "p99_ms": round(_percentile(lat, 0.99), 2),
        "max_ms": round(lat[-1], 2) if lat else 0.0,
    }


def traffic_switches(records: list[Record], incarnations: list[Incarnation]) -> list[tuple[float, str, str]]:
    """(time, from region, to region) each time the region that acknowledged the writes changed."""
    out: list[tuple[float, str, str]] = []
    current: str | None = None
    for r in records:
        if r[3] is not None or r[2] is None:
            continue
        region = region_of(int(r[2]), incarnations)
        if region is None:
            continue
        if current is not None and region != current:
            out.append((r[1], current, region))
        current = region
    return out


def summarize(values: list[float | None]) -> dict[str, Any]:
    got = [v for v in values if v is not None]
    return {
        "n": len(values),
        "recovered": len(got),
        "median": statistics.median(got) if got else None,
        "worst": max(got) if got else None,
        "best": min(got) if got else None,
    }
