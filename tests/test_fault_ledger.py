"""The fault matrix's accounting (benchmarks/fault_ledger.py) on hand-made ledgers.

The matrix itself runs in CI (``benchmarks/fault_matrix.py --ci``); these
check that its arithmetic cannot hide a lost or doubled write.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from fault_ledger import OFFSET, Incarnation, account_incr, timings, traffic_switches

A, B = Incarnation("a", "a", 0), Incarnation("b", "b", 1)


def ok(t: float, value: int) -> list[object]:
    return [t, t + 0.001, value, None]


def failed(t: float, error: str = "TimeoutError") -> list[object]:
    return [t, t + 0.5, None, error]


def test_every_acknowledged_write_found_on_its_endpoint() -> None:
    records = [ok(0, 1), ok(1, 2), ok(2, OFFSET + 1), ok(3, OFFSET + 2)]
    acc = account_incr(records, [A, B], {"a": 2, "b": OFFSET + 2})
    assert acc["lost"] == 0 and acc["unacked_applied"] == 0 and acc["dup_min"] == 0
    assert acc["per_endpoint"]["a"]["acked"] == 2 and acc["per_endpoint"]["b"]["acked"] == 2


def test_a_counter_behind_its_acknowledgements_is_a_loss() -> None:
    records = [ok(0, 1), ok(1, 2), ok(2, 3)]
    assert account_incr(records, [A, B], {"a": 2, "b": OFFSET})["lost"] == 1


def test_a_value_acknowledged_twice_is_a_loss() -> None:
    # The endpoint lost write 2 and handed out 2 again: the final counter alone would look fine.
    records = [ok(0, 1), ok(1, 2), ok(2, 2), ok(3, 3)]
    assert account_incr(records, [A, B], {"a": 3, "b": OFFSET})["lost"] == 1


def test_unacknowledged_increments_beyond_the_failed_calls_are_duplicates() -> None:
    # One call failed (its write may have landed on a); a's counter shows two writes nobody acknowledged.
    records = [ok(0, 1), failed(1), ok(2, OFFSET + 1)]
    acc = account_incr(records, [A, B], {"a": 3, "b": OFFSET + 1})
    assert acc["lost"] == 0 and acc["unacked_applied"] == 2 and acc["dup_min"] == 1


def test_a_value_from_no_known_endpoint_is_a_loss() -> None:
    assert account_incr([ok(0, 5 * OFFSET + 1)], [A, B], {"a": 0, "b": OFFSET})["stray"] == 1


def test_serving_again_counts_from_the_last_failure_and_ignores_calls_before_the_fault() -> None:
    records = [ok(9.999, 1), failed(10.1), ok(10.7, 2), failed(11.0), ok(11.6, OFFSET + 1), ok(12.0, OFFSET + 2)]
    t = timings(records, t_fault=10.0, t_heal=13.0, t_end=14.0)
    assert t["serving_s"] == round(11.601 - 10.0, 4)
    assert t["errors"] == 2 and t["error_types"] == {"TimeoutError": 2}


def test_switches_are_read_from_the_values() -> None:
    records = [ok(0, 1), ok(1, OFFSET + 1), ok(2, OFFSET + 2), ok(3, 2)]
    assert [(frm, to) for _t, frm, to in traffic_switches(records, [A, B])] == [("a", "b"), ("b", "a")]
