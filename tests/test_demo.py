"""``geofailover demo`` end to end with short durations: it is the README's first
command, so CI runs it. Real servers, real faults, the real entry points."""

from __future__ import annotations

import io
import json
import subprocess
import sys

from geofailover_core import cli

SHORT = ["--before", "0.8", "--outage", "1.2", "--after", "0.5", "--period", "0.05", "--grace", "0.3", "--interval", "0.1"]


def test_demo_kill_fails_over_and_back_with_zero_failed_operations() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "geofailover_core", "demo", "--fault", "kill", "--json", *SHORT],
        capture_output=True, text=True, timeout=60,
    )
    summary = json.loads(proc.stdout.splitlines()[-1])
    assert proc.returncode == 0, proc.stderr
    assert summary["failed"] == 0 and summary["ok"] > 20 and summary["errors"] == []
    assert summary["failover_time"] is not None and summary["failback_time"] is not None
    assert summary["code"] == 0
    assert "FAILOVER us-east -> eu-west" in proc.stderr and "FAILBACK eu-west -> us-east" in proc.stderr


def test_demo_blackhole_with_three_regions_reports_what_happened() -> None:
    out = io.StringIO()
    code = cli.main(["demo", "--fault", "blackhole", "--servers", "3", "--view", "compact", *SHORT], stdout=out)
    text = out.getvalue()
    assert code == 0, text
    assert "server ap-south" in text and "FAULT  blackhole us-east" in text and "HEAL   us-east network healed" in text
    assert "FAILOVER us-east -> eu-west" in text and "FAILBACK eu-west -> us-east" in text
    summary = text[text.index("summary"):]
    for line in ("operations ok / failed", "fault -> failover", "heal  -> failback", "longest gap between ok"):
        assert line in summary
    assert "did not happen" not in summary


def test_module_demo_entry_point_still_works() -> None:
    proc = subprocess.run([sys.executable, "-m", "geofailover_core.demo", "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "--fault {kill,freeze,blackhole}" in proc.stdout
