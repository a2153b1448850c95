"""Properties of the control plane under arbitrary records (hypothesis).

Whatever is stored as the override record or as a heartbeat entry, arbitrary
JSON or not JSON at all: parsing either yields a record within every bound or
a ValueError with the reason; and on real servers no stored record makes a
serving process hang or spin (its monitor's rounds are counted against a
reference engine's, not timed), crashes ``status`` / ``fleet_status`` /
``render_status``, or blocks an operator: after ``override clear`` or
``failback --force`` the next action reaches the fleet.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geofailover_core import FailoverConfig, FailoverEngine, FailoverRedis, cli, registry
from geofailover_core.control import ControlPlane, Heartbeat, fleet_status, request
from geofailover_core.control.records import (
    ACTIONS,
    MAX_CLOCK_SKEW,
    MAX_DURATION,
    MAX_NOTE,
    MAX_REASON,
    MAX_TEXT,
    TARGETED,
    format_duration,
    parse_copy,
)
from geofailover_core.terminal import Style
from geofailover_core.testing import RedisServer, wait_until

from .conftest import CONTROL_DB, FAST, url_list

ME = f"{socket.gethostname()}:{os.getpid()}"
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
INTERVAL = 0.3

json_scalars = (
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80) | st.floats() | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8,
)
hostile = st.sampled_from([math.nan, math.inf, -math.inf, 1e18, -1.0, 0, 2**64, "", "b c", "a\nb", "x" * (MAX_REASON + 1), None, True, [], {}])


def printable(low: int, high: int) -> st.SearchStrategy[str]:
    """One line of printable text around a length cap."""
    return st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, blacklist_categories=("Cc",)), min_size=low, max_size=high)


def clock(spread: float) -> st.SearchStrategy[float]:
    """A time near now, drawn when the example runs."""
    return st.floats(-spread, spread).map(lambda d: time.time() + d)


def near_miss(draw: st.DrawFn, valid: dict[str, Any], edges: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    """``valid`` with one field (sometimes none, sometimes a second) replaced by a value
    near its bounds, a hostile one or arbitrary JSON, or left out: so that each bound
    is reached on its own, with every other field valid."""
    keys = sorted(valid)
    broken = {draw(st.sampled_from(keys))} if draw(st.integers(0, 5)) else set()
    if draw(st.integers(0, 3)) == 0:
        broken.add(draw(st.sampled_from(keys)))
    data = dict(valid)
    for key in broken:
        choice = draw(st.integers(0, 9))
        if choice == 0:
            del data[key]
        elif choice < 7 and key in edges:
            data[key] = draw(edges[key])
        else:
            data[key] = draw(st.one_of(hostile, json_values))
    return data


@st.composite
def override_dicts(draw: st.DrawFn) -> dict[str, Any]:
    at = draw(clock(MAX_CLOCK_SKEW / 2))
    action = draw(st.sampled_from(ACTIONS))
    targeted = action in TARGETED
    valid = {
        "v": 1,
        "id": uuid.uuid4().hex,
        "action": action,
        "endpoint": draw(st.sampled_from(["a", "b", "zz"])) if targeted else None,
        "until": at + draw(st.floats(0.001, MAX_DURATION)) if targeted and draw(st.booleans()) else None,
        "reason": draw(st.sampled_from(["maintenance", None, "r" * MAX_REASON])),
        "who": "alice@ops1",
        "at": at,
        "force": draw(st.booleans()),
        "stored_at": draw(st.one_of(st.none(), clock(MAX_CLOCK_SKEW / 2))),
    }
    edges = {
        "at": clock(3 * MAX_CLOCK_SKEW),
        "until": st.floats(-10, 2 * MAX_DURATION).map(lambda d: at + d),
        "stored_at": clock(3 * MAX_CLOCK_SKEW),
        "reason": st.one_of(printable(MAX_REASON - 1, MAX_REASON + 1), st.text(max_size=20)),
        "who": st.one_of(printable(MAX_TEXT - 1, MAX_TEXT + 1), st.text(max_size=20)),
        "id": st.text(max_size=70),
        "endpoint": st.text(max_size=210),
        "action": st.text(max_size=10),
    }
    return near_miss(draw, valid, edges)


def encode(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


near_misses = override_dicts().map(encode)
override_records = st.one_of(  # mostly near misses: each reaches one bound with the rest valid
    near_misses, near_misses, near_misses, near_misses, near_misses, near_misses,
    json_values.map(encode),
    st.binary(max_size=200),
    override_dicts().map(lambda d: encode(d | {"padding": "p" * 9000})),
)


@st.composite
def heartbeat_dicts(draw: st.DrawFn) -> dict[str, Any]:
    now = time.time()
    valid = {
        "host": "peer-host",
        "pid": 4242,
        "config": "props",
        "app": "web",
        "active": draw(st.sampled_from(["a", "b", None])),
        "since": now - 5,
        "pinned": None,
        "hold": draw(st.sampled_from([None, {"endpoint": "b", "pinned": True, "until": now + 60, "reason": "r", "since": now}])),
        "version": "0.1.0",
        "last_failover": draw(st.sampled_from([None, {"kind": "failover", "from_endpoint": "a", "to_endpoint": "b", "detail": "",
                                                       "timestamp": now}])),
        "at": draw(clock(1.0)),
        "ttl": 60.0,
        "clock_offset": 0.0,
        "override": draw(st.sampled_from([None, uuid.uuid4().hex])),
        "override_at": draw(st.sampled_from([None, now])),
        "note": draw(st.sampled_from([None, "n" * 1000])),
        "view": draw(st.sampled_from([None, {"a": ["healthy", "closed"], "b": ["unhealthy", "open"]}])),
    }
    edges = {
        "at": clock(3 * MAX_CLOCK_SKEW),
        "pid": st.integers(-2, 2**33),
        "ttl": st.floats(-1, 1e6),
        "hold": st.fixed_dictionaries({"endpoint": json_values, "pinned": json_values, "until": json_values, "since": json_values}),
        "last_failover": st.fixed_dictionaries({"kind": json_values, "timestamp": json_values}),
        "view": st.dictionaries(st.text(max_size=5), json_values, max_size=3),
        "note": st.one_of(printable(MAX_NOTE - 1, MAX_NOTE + 1), st.text(max_size=20)),
        "host": st.one_of(printable(MAX_TEXT - 1, MAX_TEXT + 1), st.text(max_size=20)),
        "override_at": clock(1e12),
    }
    return near_miss(draw, valid, edges)


near_beats = heartbeat_dicts().map(encode)
heartbeat_entries = st.one_of(near_beats, near_beats, near_beats, near_beats, json_values.map(encode), st.binary(max_size=200))


# -- parsing: pure ---------------------------------------------------------------------------------------


@settings(max_examples=1000, deadline=None, database=None)
@given(raw=override_records)
def test_a_stored_record_parses_within_every_bound_or_is_rejected_with_a_reason(raw: bytes) -> None:
    now = time.time()
    try:
        override, stored_at = parse_copy(raw, now)
    except ValueError as exc:
        assert str(exc).startswith("malformed override record")
        return
    assert override.action in ACTIONS and math.isfinite(override.at) and override.at <= now + MAX_CLOCK_SKEW
    assert (override.endpoint is not None) == (override.action in TARGETED)
    if override.until is not None:
        assert override.duration is not None and 0 < override.duration <= MAX_DURATION
    assert override.reason is None or (len(override.reason) <= MAX_REASON and not CONTROL.search(override.reason))
    assert len(override.who) <= MAX_TEXT and not CONTROL.search(override.who)
    assert stored_at is None or math.isfinite(stored_at)
    assert format_duration(override.duration) and override.describe()
    assert parse_copy(override.to_json(), now)[0] == override


@settings(max_examples=1000, deadline=None, database=None)
@given(raw=heartbeat_entries)
def test_a_heartbeat_parses_within_every_bound_or_is_rejected_with_a_reason(raw: bytes) -> None:
    try:
        hb = Heartbeat.from_json(raw)
    except ValueError as exc:
        assert str(exc).startswith("malformed heartbeat")
        return
    numbers = [hb.at, hb.since, hb.ttl, hb.clock_offset, *(v for v in (hb.hold or {}).values() if isinstance(v, float))]
    assert all(math.isfinite(n) for n in numbers) and 0 < hb.ttl and 0 < hb.pid < 2**31
    texts = [hb.host, hb.config, hb.app, hb.version, hb.note or "", *(s for s in (hb.hold or {}).values() if isinstance(s, str))]
    assert all(len(t) <= MAX_NOTE and not CONTROL.search(t) for t in texts) and len(hb.host) <= MAX_TEXT
    assert Heartbeat.from_json(hb.to_json()) == hb


# -- on real servers --------------------------------------------------------------------------------------


@pytest.fixture
def fleet_of_one(two: list[RedisServer]) -> Iterator[tuple[list[RedisServer], FailoverEngine, FailoverEngine, FailoverEngine]]:
    """A serving process, a reference engine to count rounds against, and an operator."""
    client = FailoverRedis.from_url(url_list(two), name="props", **{**FAST, "probe_interval": INTERVAL})
    config = FailoverConfig.from_string(url_list(two), name="props", **{**FAST, "probe_interval": INTERVAL})
    reference = registry.build_engine(
        FailoverConfig.from_string(url_list(two), name="reference", **{**FAST, "probe_interval": INTERVAL}), observer=True,
    )
    operator = registry.build_engine(config, observer=True)
    try:
        client.ping()
        reference.check_now()
        wait_until(lambda: any(h.key == ME for h in plane(client.geofailover).fleet()), timeout=5)
        yield two, client.geofailover, reference, operator
    finally:
        operator.close()
        reference.close()
        client.geofailover.close()
        client.close()


def plane(engine: FailoverEngine) -> ControlPlane:
    assert isinstance(engine.control, ControlPlane)
    return engine.control


@settings(max_examples=12, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(record=override_records, beat=heartbeat_entries, field=st.binary(min_size=1, max_size=12), on_both=st.booleans(),
       way_out=st.sampled_from(["override clear", "failback --force"]))
def test_no_stored_record_hangs_spins_crashes_or_blocks_the_fleet(
    fleet_of_one: tuple[list[RedisServer], FailoverEngine, FailoverEngine, FailoverEngine],
    record: bytes, beat: bytes, field: bytes, on_both: bool, way_out: str,
) -> None:
    servers, engine, reference, operator = fleet_of_one
    key, fleet_key = plane(engine).override_key, plane(engine).fleet_key
    for server in servers if on_both else servers[:1]:
        server.client(db=CONTROL_DB).set(key, record)
    servers[0].client(db=CONTROL_DB).hset(fleet_key, b"zz:" + field, beat)
    try:
        # Not hung: the process keeps reading the keys.
        start = plane(engine).syncs
        wait_until(lambda: plane(engine).syncs >= start + 2, timeout=10, message="the control plane stopped syncing")
        # Not spinning: about one round per interval, like the reference.
        rounds, ref = engine.monitor.completed_rounds, reference.monitor.completed_rounds
        wait_until(lambda: reference.monitor.completed_rounds >= ref + 3, timeout=10)
        assert engine.monitor.completed_rounds - rounds <= 6
        # Status never crashes, whatever it finds.
        st_ = fleet_status(operator)
        code, text = cli.render_status(st_, Style(io.StringIO(), "never"))
        assert code in (0, 1, 2, 3) and text
        out = io.StringIO()
        assert cli.main(["status", "--json"], engines=[operator], stdout=out) in (0, 1, 2, 3)
        assert ME in {p["key"] for p in json.loads(out.getvalue())["configurations"][0]["fleet"]}
        # The operator is never blocked: the way out, then an ordinary action, reach the process
        # (the entry goes first: a valid one would be a peer that never acknowledges).
        servers[0].client(db=CONTROL_DB).hdel(fleet_key, b"zz:" + field)
        if way_out == "override clear":
            result = request(operator, "clear", wait=5)
        else:
            result = request(operator, "failback", force=True, wait=5)
        assert result.written_to == ["a", "b"] and ME in {hb.key for hb in result.acknowledged}, result
        result = request(operator, "unpin", wait=5)
        assert result.written_to == ["a", "b"] and result.ok and [hb.key for hb in result.moved] == [ME], result
    finally:
        servers[0].client(db=CONTROL_DB).hdel(fleet_key, b"zz:" + field)
