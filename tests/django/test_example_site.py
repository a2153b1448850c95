"""The example project, run as a user would: real servers, ``manage.py`` subprocesses.

Also the fleet test: ``manage.py geofailover failover --to X`` in one process
moves a separately running Django process (the example's ``runserver``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from geofailover_core.testing import RedisServer, wait_until
from geofailover_core.testing.ports import pick_free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "example_projects" / "django_site"


def example_env(servers: list[RedisServer]) -> dict[str, str]:
    urls = f"{servers[0].url}?name=primary&weight=2;{servers[1].url}?name=secondary&weight=1"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    return {**env, "GEOFAILOVER_URL": urls, "PYTHONUNBUFFERED": "1", "DJANGO_SETTINGS_MODULE": "django_site.settings"}


def manage(env: dict[str, str], *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=timeout)


class Site:
    """The example's runserver in a subprocess."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = pick_free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{self.port}"],
            cwd=EXAMPLE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=3) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def json(self, path: str) -> dict[str, Any]:
        status, body = self.get(path)
        data: dict[str, Any] = json.loads(body)
        data["_status"] = status
        return data

    def stop(self) -> str:
        self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out


@pytest.fixture
def site(two: list[RedisServer]) -> Iterator[Callable[[], Site]]:
    started: list[Site] = []

    def start() -> Site:
        s = Site(example_env(two))
        started.append(s)
        wait_until(lambda: s.proc.poll() is None and s.get("/geofailover/health/"), timeout=15, ignore=(OSError,), message="runserver did not start")
        return s

    yield start
    for s in started:
        s.stop()


def test_example_site_smoke(two: list[RedisServer], site: Callable[[], Site]) -> None:
    env = example_env(two)
    checked = manage(env, "check", "--fail-level", "WARNING")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    s = site()
    assert [s.json("/?format=json")["page_views"] for _ in range(3)] == [1, 2, 3]
    status, text = s.get("/")
    assert status == 200 and "viewed 4 time(s)" in text and "'primary'" in text
    assert s.json("/geofailover/health/")["_status"] == 200

    two[0].kill()  # the primary region dies: the page keeps working, counting from 1 on the secondary
    page = s.json("/?format=json")
    assert page == {"page_views": 1, "served_by": "secondary", "_status": 200}
    two[1].kill()  # every region down: the page still renders (IGNORE_EXCEPTIONS), readiness says 503
    status, text = s.get("/")
    assert status == 200 and "nothing was counted" in text
    assert s.json("/geofailover/health/")["_status"] == 503
    two[0].restart()
    wait_until(lambda: s.json("/?format=json")["served_by"] == "primary", timeout=5, message="site did not recover")
    log = s.stop()
    assert "failed over primary -> secondary" in log  # the example's signal receiver
    assert "every Redis region is down" in log


def test_manage_py_failover_moves_a_separately_running_process(core_cli: None, two: list[RedisServer], site: Callable[[], Site]) -> None:
    env = example_env(two)
    s = site()
    assert s.json("/?format=json")["served_by"] == "primary"

    moved = manage(env, "geofailover", "failover", "--to", "secondary", "--reason", "region maintenance", "--wait", "8")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "OK" in moved.stdout and "1 process" in moved.stdout, moved.stdout
    assert s.json("/?format=json")["served_by"] == "secondary"  # the other process has moved

    status = manage(env, "geofailover", "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)["configurations"][0]
    assert [p["active"] for p in report["fleet"]] == ["secondary"]
    assert report["override"]["endpoint"] == "secondary"

    back = manage(env, "geofailover", "failback", "--wait", "8")
    assert back.returncode == 0, back.stdout + back.stderr
    assert s.json("/?format=json")["served_by"] == "primary"
    log = s.stop()
    assert "region maintenance" in log  # the operator's reason reaches the serving process's log


def test_manage_py_exits_with_the_clis_code_and_adds_nothing(core_cli: None, two: list[RedisServer]) -> None:
    """A degraded verdict is exit status 1 with the CLI's report only: no
    "CommandError: ..." line, no traceback."""
    two[1].kill()
    done = manage(example_env(two), "geofailover", "check")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "secondary" in done.stdout
    assert "CommandError" not in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_gunicorn_preload_workers_fail_over_and_follow_the_fleet_command(core_cli: None, two: list[RedisServer]) -> None:
    """gunicorn --preload: workers forked from a master that used the cache."""
    pytest.importorskip("gunicorn")
    env = example_env(two)
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLE), str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    port = pick_free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--preload", "--workers", "2", "--bind", f"127.0.0.1:{port}", "--log-level", "warning", "preload_wsgi:application"],
        cwd=EXAMPLE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )

    def page() -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/?format=json", timeout=3) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data

    def fleet() -> list[dict[str, Any]]:
        done = manage(env, "geofailover", "status", "--json")
        fleet_: list[dict[str, Any]] = json.loads(done.stdout)["configurations"][0]["fleet"]
        return fleet_

    try:
        wait_until(page, timeout=15, ignore=(OSError,), message="gunicorn did not start")
        master_pid = int(two[0].client().get(":1:preloaded-by"))  # Django key: prefix, version, key
        assert master_pid == proc.pid
        # A worker re-arms its engine on its first request after fork(); busy
        # sync workers do not accept, so concurrent requests reach both.
        def both_workers_report() -> list[dict[str, Any]] | None:
            with ThreadPoolExecutor(4) as pool:
                assert all(p["served_by"] == "primary" for p in pool.map(lambda _: page(), range(8)))
            processes = fleet()
            return processes if len(processes) == 3 else None

        processes = wait_until(both_workers_report, timeout=15, message="heartbeats of the master and two workers")
        assert master_pid in {p["pid"] for p in processes}  # the master used the cache: it is in the fleet too
        assert all(p["active"] == "primary" for p in processes)

        moved = manage(env, "geofailover", "failover", "--to", "secondary", "--wait", "8")
        assert moved.returncode == 0 and "all 3 processes followed" in moved.stdout, moved.stdout + moved.stderr
        assert {page()["served_by"] for _ in range(6)} == {"secondary"}

        back = manage(env, "geofailover", "failback", "--wait", "8")
        assert back.returncode == 0, back.stdout + back.stderr
        two[0].kill()  # and a real fault: every worker moves by itself
        assert {page()["served_by"] for _ in range(6)} == {"secondary"}
        wait_until(lambda: {w["active"] for w in fleet()} == {"secondary"}, timeout=10, message="workers did not report the failover")
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert "Traceback" not in out, out[-3000:]


class Lines:
    """A subprocess whose output lines are collected as they come (the lobby client prints one JSON object a line)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(argv, cwd=EXAMPLE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
        self._reader.start()

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(line.split(" ", 1)[1]) for line in list(self.lines) if line.split(" ", 1)[-1].startswith("{")]

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)
        return "".join(self.lines)


def test_asgi_site_keeps_its_websockets_and_async_view_through_a_kill(two: list[RedisServer]) -> None:
    """The example under daphne, as its README runs it: a listening and a talking
    WebSocket stay connected while the primary region is SIGKILLed, the lobby's
    broadcasts carry on through the secondary, and the async view answers there."""
    pytest.importorskip("daphne")
    pytest.importorskip("channels_redis")
    env = example_env(two)
    port = pick_free_port()
    server = Lines([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "django_site.asgi:application"], env)
    url = f"http://127.0.0.1:{port}"
    started: list[Lines] = [server]

    def visit() -> dict[str, Any]:
        with urllib.request.urlopen(f"{url}/async/", timeout=3) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body

    def texts(client: Lines, region: str) -> list[int]:
        return [int(m["text"].split("#")[1]) for m in client.messages() if m["type"] == "message" and m["served_by"] == region]

    try:
        first = wait_until(visit, timeout=20, ignore=(OSError,), message="daphne did not start")
        assert first["served_by"] == "primary" and visit()["previous_visit"] is not None
        client = [sys.executable, "lobby_client.py", f"ws://127.0.0.1:{port}/ws/lobby/", "--seconds", "60"]
        listener = Lines(client, env)
        started.append(listener)
        wait_until(lambda: listener.messages(), timeout=10, message="the listener got no welcome")
        talker = Lines([*client, "--every", "0.05", "--name", "talker"], env)
        started.append(talker)
        wait_until(lambda: len(texts(listener, "primary")) >= 10, timeout=10, message="no broadcasts on the primary")

        two[0].kill()
        wait_until(lambda: len(texts(listener, "secondary")) >= 20, timeout=10, message="broadcasts did not carry on through the secondary")
        assert visit()["served_by"] == "secondary"
        sent_last = texts(talker, "secondary")[-1]
        wait_until(lambda: sent_last in texts(listener, "secondary"), timeout=5, message="the listener fell behind")
    finally:
        outputs = [p.stop() for p in reversed(started)]
    heard = sorted(texts(listener, "primary") + texts(listener, "secondary"))
    missing = sorted(set(range(heard[0], heard[-1] + 1)) - set(heard))
    assert len(missing) <= 2, f"more than the messages in flight at the kill were lost: {missing}"  # see docs/django.md
    assert all(m["type"] != "closed" for m in listener.messages()[:-1]), "a WebSocket was closed during the failover"
    assert "failed over primary -> secondary" in outputs[-1]
    assert "Traceback" not in outputs[-1], outputs[-1][-3000:]
