"""Fork safety the way gunicorn --preload uses it: the app is created and used
in the master, then workers are forked and must get working monitors, fresh
sockets and their own signal deliveries."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import traceback
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flask", reason="Flask integration tests need the flask extra: pip install geofailover[flask]")

from flask import Flask

from geofailover_core import registry
from geofailover_core.testing import RedisServer, wait_until
from geofailover_flask import GeoFailover, signals

from .conftest import CONTROL_DB
from .test_flask_support import FAST, new_app


@pytest.fixture(autouse=True)
def _close_engines() -> Iterator[None]:
    yield
    registry.close_all()


def _worker(app: Flask, geo: GeoFailover, ready: int, go: int) -> dict[str, Any]:
    """Body of a forked worker; returns what it observed."""
    failovers: list[str] = []

    def on_failover(sender: Flask, event: Any, **extra: Any) -> None:
        failovers.append(f"{os.getpid()}:{event.from_endpoint}->{event.to_endpoint}")

    signals.failover.connect(on_failover, sender=app)
    client = app.test_client()
    engine = geo.get_engine(app)
    first = client.get("/").get_json()
    parent_sockets = [c for c in geo.get_client(app).connection_pool._available_connections if c.pid != os.getpid()]
    os.write(ready, b"x")
    os.read(go, 1)  # the master killed the region after both workers had served
    wait_until(lambda: client.get("/").get_json()["region"] == "b", timeout=5, message="worker did not fail over")
    wait_until(lambda: failovers, timeout=5, message="no failover signal in the worker")
    assert engine.events.flush(5)
    return {
        "first": first,
        "monitor": engine.monitor.running,
        "threads": sorted(t.name for t in threading.enumerate() if t.name.startswith("geofailover-monitor")),
        "parent_sockets": len(parent_sockets),
        "failovers": failovers,
    }


def test_preforked_workers_get_monitors_fresh_sockets_and_signals(two: list[RedisServer]) -> None:
    geo = GeoFailover()
    app = new_app(two)
    geo.init_app(app)

    @app.get("/")
    def index() -> dict[str, Any]:
        return {"hits": geo.client.incr("hits"), "region": geo.engine.active, "pid": os.getpid()}

    # The master uses Redis before forking (gunicorn --preload + an import-time warm-up).
    assert app.test_client().get("/").get_json()["region"] == "a"
    assert geo.get_engine(app).monitor.running

    children: list[tuple[int, int]] = []
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    for _ in range(2):
        out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # worker
            code = 0
            try:
                os.close(out_r)
                report = _worker(app, geo, ready_w, go_r)
            except BaseException:
                report = {"error": traceback.format_exc()[-3000:]}
                code = 1
            finally:
                os.write(out_w, json.dumps(report).encode())
                os._exit(code)
        os.close(out_w)
        children.append((pid, out_r))
    for _ in children:
        assert os.read(ready_r, 1) == b"x"
    two[0].kill()
    os.write(go_w, b"xx")
    reports = []
    for pid, out_r in children:
        with os.fdopen(out_r, "rb") as pipe:
            reports.append(json.loads(pipe.read().decode() or "{}"))
        os.waitpid(pid, 0)
    for report in reports:
        assert "error" not in report, report.get("error")
        assert report["first"]["region"] == "a"
        assert report["monitor"] is True
        assert len(report["threads"]) == 1
        assert report["parent_sockets"] == 0  # the master's sockets were never reused
        assert len(report["failovers"]) == 1 and report["failovers"][0].endswith("a->b")
    assert {r["first"]["pid"] for r in reports} == {pid for pid, _ in children}
    # The master (its region killed by a worker) follows too.
    wait_until(lambda: geo.get_engine(app).active == "b", timeout=5)


EXAMPLE = Path(__file__).resolve().parents[1] / "example_projects" / "flask_app"


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=3) as response:
        return json.loads(response.read().decode())  # type: ignore[no-any-return]


def test_gunicorn_preload_workers_fail_over(two: list[RedisServer]) -> None:
    """The real thing: gunicorn --preload with two sync workers serving the example app."""
    pytest.importorskip("gunicorn")
    env = {
        **os.environ,
        "FLASK_GEOFAILOVER_URL": f"{two[0].url}?name=us-east&weight=2;{two[1].url}?name=eu-west&weight=1",
        "FLASK_GEOFAILOVER_OPTIONS": json.dumps({**FAST, "decode_responses": True}),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--preload", "-w", "2", "-b", "127.0.0.1:0", "--chdir", str(EXAMPLE), "hitcounter:create_app()"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stderr is not None
        port = None
        for line in proc.stderr:  # "[...] [INFO] Listening at: http://127.0.0.1:41234 (pid)"
            match = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match.group(1))
                break
        assert port is not None, "gunicorn did not start"
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep draining its log
        url = f"http://127.0.0.1:{port}/api/hits"
        workers: set[int] = set()
        wait_until(lambda: (workers.add(_get_json(url)["pid"]), len(workers) == 2)[1], timeout=10, message="both workers served")
        two[0].kill()
        moved: set[int] = set()

        def both_on_eu_west() -> bool:
            body = _get_json(url)  # an error here (a 500) fails the test at once
            if body["region"] == "eu-west":
                moved.add(body["pid"])
            return moved == workers

        wait_until(both_on_eu_west, timeout=10, message="not every worker moved to eu-west")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_gunicorn_workers_report_at_boot_with_the_example_config(two: list[RedisServer]) -> None:
    """The example's gunicorn.conf.py starts each worker's engine at boot: status lists
    every worker before any of them served a request."""
    pytest.importorskip("gunicorn")
    env = {
        **os.environ,
        "FLASK_GEOFAILOVER_URL": f"{two[0].url}?name=us-east&weight=2;{two[1].url}?name=eu-west&weight=1",
        "FLASK_GEOFAILOVER_OPTIONS": json.dumps({**FAST, "decode_responses": True}),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-w", "3", "-b", "127.0.0.1:0"],
        cwd=EXAMPLE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        fleet = two[0].client(db=CONTROL_DB)

        def workers_reporting() -> int:
            return sum(1 for field in fleet.hkeys("geofailover:default:fleet"))

        wait_until(lambda: workers_reporting() == 3, timeout=15, message="not every worker reported at boot")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
