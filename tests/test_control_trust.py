"""Control-plane records are untrusted input: size caps, validation, and the way out.

Anyone who can write ``{prefix}:*`` keys can store anything there, and every
process of the fleet reads the override record each interval. These tests
store hostile records on real servers and check that a serving process
neither applies, hangs, spins nor crashes on them, that ``status`` reports
them as invalid with the reason, and that an operator can always act again.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shlex
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from geofailover_core import FailoverConfig, FailoverEngine, FailoverRedis, cli, registry
from geofailover_core.control import ControlPlane, Heartbeat, Override, fleet_status, request
from geofailover_core.control.records import MAX_HEARTBEAT_BYTES, MAX_REASON, MAX_RECORD_BYTES
from geofailover_core.testing import RedisServer, wait_until

from .conftest import CONTROL_DB, FAST, MakeClient, url_list

ME = f"{socket.gethostname()}:{os.getpid()}"
# Rounds are counted against a reference engine with the same interval: a
# spinning monitor (a round every 50 ms) does several times as many.
SPIN_INTERVAL = 0.4
FAST_CLI = ["-o", "probe_interval=0.1", "-o", "health_check_timeout=0.2"]


@pytest.fixture
def observer() -> Iterator[Any]:
    made: list[FailoverEngine] = []

    def make(servers: list[Any], name: str, **options: Any) -> FailoverEngine:
        engine = registry.build_engine(FailoverConfig.from_string(url_list(servers), name=name, **{**FAST, **options}), observer=True)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


def plane(engine: FailoverEngine) -> ControlPlane:
    assert isinstance(engine.control, ControlPlane)
    return engine.control


def server_now(server: RedisServer) -> float:
    seconds, micros = server.client(db=CONTROL_DB).time()
    return seconds + micros / 1_000_000


def raw_record(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "v": 1, "id": uuid.uuid4().hex, "action": "failover", "endpoint": "b", "until": None,
        "reason": "test", "who": "tester@ci", "at": time.time(), "force": False,
    }
    return base | fields


def store_raw(servers: list[RedisServer], key: str, value: str | bytes) -> None:
    for server in servers:
        server.client(db=CONTROL_DB).set(key, value)


def syncs_after(engine: FailoverEngine, n: int = 2) -> None:
    """Wait until the process's control plane has read the keys ``n`` more times."""
    start = plane(engine).syncs
    wait_until(lambda: plane(engine).syncs >= start + n, timeout=5, message="the control plane stopped syncing")


def rounds_while_reference_does(engine: FailoverEngine, reference: FailoverEngine, n: int = 4) -> int:
    start, ref = engine.monitor.completed_rounds, reference.monitor.completed_rounds
    wait_until(lambda: reference.monitor.completed_rounds >= ref + n, timeout=10, message="the reference monitor stalled")
    return engine.monitor.completed_rounds - start


def status_text(engine: FailoverEngine) -> tuple[int, str]:
    out = io.StringIO()
    code = cli.main(["status"], engines=[engine], stdout=out)
    return code, out.getvalue()


# -- issue 1: size caps --------------------------------------------------------------------------


def test_a_reason_beyond_the_cap_is_rejected_with_a_warning_and_never_applied(two, make_client: MakeClient, observer, caplog) -> None:
    caplog.set_level(logging.WARNING, "geofailover")
    client = make_client(two)
    client.ping()
    engine = client.geofailover
    key = plane(engine).override_key
    store_raw(two, key, json.dumps(raw_record(reason="x" * (MAX_REASON + 1))))
    wait_until(lambda: "ignoring the override record" in caplog.text, timeout=5, message="no warning about the long reason")
    assert f"at most {MAX_REASON} characters" in caplog.text
    syncs_after(engine)
    assert engine.active == "a" and engine.hold() is None
    hb = next(h for h in plane(engine).fleet() if h.key == ME)
    assert "xxxxxxxxxx" not in hb.to_json()
    st = fleet_status(observer(two, engine.name))
    assert st["override"] is None
    assert [(r["endpoint"], "reason" in r["why"]) for r in st["invalid_records"]] == [("a", True), ("b", True)]


def test_a_record_beyond_the_byte_cap_is_rejected_unread(two, make_client: MakeClient, observer) -> None:
    client = make_client(two)
    client.ping()
    engine = client.geofailover
    key = plane(engine).override_key
    store_raw(two, key, json.dumps(raw_record(padding="p" * 200_000)))
    syncs_after(engine, 3)
    assert engine.active == "a" and engine.hold() is None
    st = fleet_status(observer(two, engine.name))
    assert st["override"] is None and f"larger than {MAX_RECORD_BYTES} bytes" in st["invalid_records"][0]["why"]
    # An action replaces it: it never blocks the operator.
    result = request(observer(two, engine.name), "failover", "b", wait=5)
    assert result.written_to == ["a", "b"] and result.ok and engine.active == "b"


def test_a_huge_reason_costs_every_process_nothing(two, make_client: MakeClient, observer) -> None:
    """The original report: 120k characters in the reason. The record is over the
    byte cap, so it is neither decoded nor masked; the monitor keeps its pace."""
    client = make_client(two, probe_interval=SPIN_INTERVAL)
    client.ping()
    engine = client.geofailover
    reference = observer(two, "reference", probe_interval=SPIN_INTERVAL)
    reference.check_now()
    store_raw(two, plane(engine).override_key, json.dumps(raw_record(reason="redis://u:" + "p" * 120_000)))
    syncs_after(engine)
    assert rounds_while_reference_does(engine, reference, 4) <= 7
    assert engine.hold() is None and engine.active == "a"


def test_the_cli_refuses_a_long_reason_before_writing_anything(two, capsys) -> None:
    out = io.StringIO()
    code = cli.main(["failover", "--to", "b", "--reason", "r" * (MAX_REASON + 1), "--url", url_list(two), "--name", "longreason"], stdout=out)
    assert code == 2 and f"at most {MAX_REASON} characters" in capsys.readouterr().err
    assert two[0].client(db=CONTROL_DB).keys("geofailover:*") == [] and two[1].client(db=CONTROL_DB).keys("geofailover:*") == []
    code = cli.main(["pin", "a", "--reason", "two\nlines", "--url", url_list(two), "--name", "longreason"], stdout=out)
    assert code == 2 and "control characters" in capsys.readouterr().err


def test_request_refuses_a_long_reason_and_a_process_clips_what_it_reports(two, make_client: MakeClient, observer) -> None:
    operator = observer(two, "clipped")
    with pytest.raises(ValueError, match=f"at most {MAX_REASON} characters"):
        request(operator, "failover", "b", reason="r" * (MAX_REASON + 1))
    # A process pinned in-process with a huge reason (its own API call) still
    # publishes a heartbeat within the cap, that every reader accepts.
    client = make_client(two, name="clipped")
    client.ping()
    engine = client.geofailover
    engine.pin("b", reason="q" * 100_000)
    hb = wait_until(lambda: next((h for h in plane(engine).fleet() if h.key == ME and h.pinned == "b"), None), timeout=5)
    assert len(hb.to_json()) <= MAX_HEARTBEAT_BYTES and "qqqq" in (hb.hold or {}).get("reason", "")


# -- issue 2: validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"action": "pin", "until": math.nan}, "until must be a finite number"),
        ({"action": "pin", "until": math.inf}, "until must be a finite number"),
        ({"action": "failover", "until": -math.inf}, "until must be a finite number"),
        ({"at": math.nan}, "at must be a finite number"),
        ({"action": "pin", "endpoint": "b c"}, "endpoint"),
        ({"action": "failover", "endpoint": None}, "endpoint"),
        ({"action": "explode"}, "unknown action"),
        ({"id": ""}, "id"),
        ({"who": "w" * 1000}, "who"),
        ({"force": "yes"}, "force"),
    ],
)
def test_an_invalid_record_is_ignored_and_status_says_why(two, make_client: MakeClient, observer, fields: dict[str, Any], why: str) -> None:
    client = make_client(two)
    client.ping()
    engine = client.geofailover
    store_raw(two, plane(engine).override_key, json.dumps(raw_record(**fields)))  # NaN/Infinity written bare, as JSON allows here
    syncs_after(engine)
    assert engine.hold() is None and engine.active == "a"
    operator = observer(two, engine.name)
    st = fleet_status(operator)
    assert st["override"] is None and all(why in r["why"] for r in st["invalid_records"]), st["invalid_records"]
    _, out = status_text(operator)
    assert "INVALID" in out and why in out and "override clear" in out


def test_a_pin_that_never_expires_is_refused_and_the_monitor_keeps_its_pace(two, make_client: MakeClient, observer) -> None:
    client = make_client(two, probe_interval=SPIN_INTERVAL)
    client.ping()
    engine = client.geofailover
    reference = observer(two, "reference2", probe_interval=SPIN_INTERVAL)
    reference.check_now()
    text = json.dumps(raw_record(action="pin", until=math.nan))
    assert "NaN" in text
    store_raw(two, plane(engine).override_key, text)
    syncs_after(engine)
    assert engine.hold() is None
    assert rounds_while_reference_does(engine, reference, 4) <= 7
    code, out = status_text(observer(two, engine.name))
    assert code != 0 and "INVALID" in out


def test_a_record_from_the_far_future_blocks_nobody(two, make_client: MakeClient, observer, capsys) -> None:
    client = make_client(two)
    client.ping()
    engine = client.geofailover
    wait_until(lambda: any(h.key == ME for h in plane(engine).fleet()), timeout=3)
    key = plane(engine).override_key
    store_raw(two, key, json.dumps(raw_record(at=1e18)))
    syncs_after(engine)
    assert engine.hold() is None and engine.active == "a"
    st = fleet_status(observer(two, engine.name))
    assert "ahead of the endpoint's clock" in st["invalid_records"][0]["why"]
    # Any action replaces it (no "a newer override is already stored there").
    result = request(observer(two, engine.name), "failover", "b", wait=5)
    assert result.failed == {} and result.written_to == ["a", "b"] and result.ok
    assert engine.active == "b" and Override.from_json(two[0].client(db=CONTROL_DB).get(key)).id == result.override.id
    assert result.override.at < time.time() + 60


def test_override_clear_and_failback_force_overwrite_whatever_is_stored(two, make_client: MakeClient, capsys) -> None:
    client = make_client(two, name="clearme")
    client.ping()
    engine = client.geofailover
    wait_until(lambda: any(h.key == ME for h in plane(engine).fleet()), timeout=3)
    key = plane(engine).override_key
    args = ["--url", url_list(two), "--name", "clearme", "-o", "probe_interval=0.1"]
    store_raw(two, key, b"\xff\xfe not even json")
    out = io.StringIO()
    assert cli.main(["override", "clear", "--reason", "bad record", *args], stdout=out) == 0, out.getvalue()
    assert "clear the override" in out.getvalue() and "OK  all 1 process" in out.getvalue()
    cleared = Override.from_json(two[1].client(db=CONTROL_DB).get(key))
    assert cleared.action == "clear"
    out = io.StringIO()
    assert cli.main(["status", *args], stdout=out) == 0, out.getvalue()
    assert "override: none (cleared by" in out.getvalue()
    # A hash where the record should be (WRONGTYPE for a plain GET) is overwritten too.
    for server in two:
        server.client(db=CONTROL_DB).delete(key)
        server.client(db=CONTROL_DB).hset(key, "x", "y")
    out = io.StringIO()
    assert cli.main(["failback", "--force", *args], stdout=out) == 0, out.getvalue()
    assert Override.from_json(two[0].client(db=CONTROL_DB).get(key)).action == "failback"


def test_a_valid_record_that_is_newer_is_kept_unless_forced(two, observer) -> None:
    operator = observer(two, "racing")
    key = plane(operator).override_key
    newer = Override(uuid.uuid4().hex, "pin", "b", None, "other operator", "bob@ops2", server_now(two[0]) + 30)
    store_raw(two, key, newer.to_json())
    # Written meanwhile by another operator whose clock is 30 s ahead: within the skew bound,
    # so it stands and ours supersedes it by order.
    result = request(operator, "failback", wait=0)
    assert result.written_to == ["a", "b"] and result.override.at > newer.at


def test_a_bad_heartbeat_never_crashes_status_and_is_reported(two, observer) -> None:
    operator = observer(two, "badbeat")
    fleet_key = plane(operator).fleet_key
    now = time.time()
    good = Heartbeat("peer", 7, "badbeat", "web", "a", now, None, None, "0.1.0", None, now, 60.0)
    bad: dict[str, Any] = {
        "nan-at": json.loads(good.to_json()) | {"pid": 8, "at": math.nan},
        "inf-ttl": json.loads(good.to_json()) | {"pid": 9, "ttl": math.inf},
        "bad-hold": json.loads(good.to_json()) | {"pid": 10, "hold": {"endpoint": "b", "pinned": True, "until": "soon", "since": 1}},
        "bad-last": json.loads(good.to_json()) | {"pid": 11, "last_failover": {"kind": "failover", "timestamp": "x"}},
        "future": json.loads(good.to_json()) | {"pid": 12, "at": 1e18},
        "huge": json.loads(good.to_json()) | {"pid": 13, "note": "n" * (MAX_HEARTBEAT_BYTES + 1)},
    }
    client_a = two[0].client(db=CONTROL_DB)
    client_a.hset(fleet_key, good.key, good.to_json())
    for field, data in bad.items():
        client_a.hset(fleet_key, field, json.dumps(data))
    client_a.hset(fleet_key, "bytes", b"\xff\x00")
    st = fleet_status(operator)
    assert [p["key"] for p in st["fleet"]] == ["peer:7"]
    assert sorted(b["field"] for b in st["invalid_heartbeats"]) == sorted([*bad, "bytes"])
    # An observer reports them and leaves them for the fleet's own housekeeping.
    _, out = status_text(operator)
    assert "INVALID" in out and "heartbeat" in out and "nan-at" in out


# -- the ACL in docs/operations.md is the trust boundary ----------------------------------------------


def documented_acl() -> list[list[str]]:
    text = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text(encoding="utf-8")
    return [shlex.split(line) for line in text.splitlines() if line.startswith("ACL SETUSER ")]


def test_the_documented_acl_lets_operators_act_and_keeps_applications_out(two, clients) -> None:
    acl = documented_acl()
    assert [line[2] for line in acl] == ["app", "geofailover-ops"]
    for server in two:
        for line in acl:
            server.client().execute_command(*line)

    def urls(user: str, password: str) -> str:
        return ";".join(f"redis://{user}:{password}@{s.host}:{s.port}/0?name={n}" for s, n in zip(two, "ab", strict=True))

    app = FailoverRedis.from_url(urls("app", "app-password"), name="acl", **FAST)
    clients.append(app)
    assert app.set("app:k", 1)
    wait_until(lambda: any(h.key == ME for h in plane(app.geofailover).fleet()), timeout=3, message="the app cannot heartbeat")
    out = io.StringIO()
    code = cli.main(["failover", "--to", "b", "--url", urls("geofailover-ops", "ops-password"), "--name", "acl", *FAST_CLI], stdout=out)
    assert code == 0, out.getvalue()
    assert app.geofailover.active == "b" and app.set("app:k", 2)
    # The application's own credentials cannot steer the fleet.
    rogue = registry.build_engine(FailoverConfig.from_string(urls("app", "app-password"), name="acl", **FAST), observer=True)
    try:
        result = request(rogue, "failback", wait=0)
        assert result.written_to == [] and all("permission" in why for why in result.failed.values()), result.failed
    finally:
        rogue.close()
    assert app.geofailover.active == "b"
