"""The issue's acceptance test: separate processes, one operator command.

Two application processes (real subprocesses, same configuration) serve
traffic; a third process runs ``python -m geofailover_core failover --to b``
and both move; ``failback`` brings both back; ``status --json`` lists both
with their endpoint; a pin given a duration lapses by itself. Traffic is
checked on the servers themselves, not only in the heartbeats.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from geofailover_core.testing import RedisServer, wait_until

from .conftest import url_list

INTERVAL = 0.1
OPTIONS = {
    "probe_interval": INTERVAL,
    "health_check_timeout": 0.2,
    "socket_timeout": 0.3,
    "socket_connect_timeout": 0.3,
    "failback_grace_period": 0.3,
    "breaker_reset_timeout": 0.2,
}

# An application process: INCRs its own counter on whatever endpoint is active,
# and exits when the test closes its stdin (or dies).
WORKER = r"""
import json, os, sys, threading, time
from geofailover_core import FailoverRedis

urls, name, label, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
client = FailoverRedis.from_url(urls, name=name, app_label=label, **options)
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
client.ping()
print(os.getpid(), flush=True)
while not stop.is_set():
    try:
        client.incr(f"hits:{os.getpid()}")
    except Exception as exc:
        print("error", type(exc).__name__, exc, file=sys.stderr, flush=True)
    stop.wait(0.02)
client.geofailover.close()
"""


def cli(servers: list[RedisServer], name: str, *args: str) -> tuple[int, Any]:
    """Run the real console entry point in a third process; JSON output parsed."""
    proc = subprocess.run(
        [sys.executable, "-m", "geofailover_core", *args, "--json", "--url", url_list(servers), "--name", name,
         "-o", f"probe_interval={INTERVAL}", "-o", "health_check_timeout=0.2"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.stdout, f"no output (exit {proc.returncode}); stderr:\n{proc.stderr}"
    return proc.returncode, json.loads(proc.stdout.splitlines()[-1])


@pytest.fixture
def fleet(two: list[RedisServer]) -> Iterator[tuple[str, list[int]]]:
    name = "fleet-e2e"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url_list(two), name, label, json.dumps(OPTIONS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for label in ("web", "worker")
    ]
    try:
        pids = []
        for proc in procs:
            line = proc.stdout.readline() if proc.stdout else ""
            assert line.strip().isdigit(), f"worker did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
            pids.append(int(line))
        yield name, pids
    finally:
        for proc in procs:
            if proc.stdin:
                proc.stdin.close()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def where(status: dict[str, Any], pids: list[int]) -> dict[int, tuple[str | None, Any]]:
    [config] = status["configurations"]
    return {p["pid"]: (p["active"], p["hold"]) for p in config["fleet"] if p["pid"] in pids}


def hits(server: RedisServer, pid: int) -> int:
    return int(server.client().get(f"hits:{pid}") or 0)


def test_an_operator_command_moves_every_process_and_failback_returns_them(two, fleet) -> None:
    name, pids = fleet
    a, b = two
    wait_until(lambda: len(where(cli(two, name, "status")[1], pids)) == 2, timeout=10, message="workers' heartbeats not listed")

    code, out = cli(two, name, "failover", "--to", "b", "--reason", "region maintenance", "--wait", "10")
    [result] = out["configurations"]
    assert code == 0 and result["ok"], result
    assert sorted((hb["pid"], hb["active"]) for hb in result["moved"]) == [(pid, "b") for pid in sorted(pids)]
    assert result["stragglers"] == [] and result["written_to"] == ["a", "b"]

    code, status = cli(two, name, "status")
    assert {pid: active for pid, (active, _) in where(status, pids).items()} == dict.fromkeys(pids, "b")
    [config] = status["configurations"]
    assert config["override"]["action"] == "failover" and config["override"]["reason"] == "region maintenance"
    assert config["override"]["in_force"] and config["disagreements"] == []
    # Real traffic moved: both processes' counters now grow on b.
    before = {pid: hits(b, pid) for pid in pids}
    wait_until(lambda: all(hits(b, pid) > before[pid] + 3 for pid in pids), timeout=5, message="traffic did not move to b")

    code, out = cli(two, name, "failback", "--wait", "10")
    [result] = out["configurations"]
    assert code == 0 and result["ok"], result
    assert sorted((hb["pid"], hb["active"]) for hb in result["moved"]) == [(pid, "a") for pid in sorted(pids)]
    before = {pid: hits(a, pid) for pid in pids}
    wait_until(lambda: all(hits(a, pid) > before[pid] + 3 for pid in pids), timeout=5, message="traffic did not return to a")


def test_a_pin_with_a_duration_lapses_by_itself_in_every_process(two, fleet) -> None:
    name, pids = fleet
    wait_until(lambda: len(where(cli(two, name, "status")[1], pids)) == 2, timeout=10, message="workers' heartbeats not listed")
    code, out = cli(two, name, "pin", "b", "--for", "1.5s", "--wait", "10")
    [result] = out["configurations"]
    assert code == 0 and result["ok"], result
    assert all(hb["active"] == "b" and hb["pinned"] == "b" for hb in result["moved"]) and len(result["moved"]) == 2
    # Nobody acts again: the pin lapses on its own and automatic rules bring both back.
    wait_until(
        lambda: where(cli(two, name, "status")[1], pids) == dict.fromkeys(pids, ("a", None)),
        timeout=10, interval=0.2, message="the pin did not lapse in every process",
    )
    code, status = cli(two, name, "status")
    assert status["configurations"][0]["override"]["in_force"] is False
