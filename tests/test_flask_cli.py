"""``flask geofailover ...``: engine selection and forwarding to the core CLI,
then the real thing: a separate ``flask`` process moves a running app."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import pytest

pytest.importorskip("flask", reason="Flask integration tests need the flask extra: pip install geofailover[flask]")

from flask import Flask

from geofailover_core import cli as core_cli
from geofailover_core import registry
from geofailover_core.engine import FailoverEngine
from geofailover_core.testing import RedisServer, wait_until
from geofailover_flask import GeoFailover, signals
from geofailover_flask.cli import geofailover_command

from .test_flask_support import FAST, new_app

EXAMPLE = Path(__file__).resolve().parents[1] / "example_projects" / "flask_app"
STUB_REASON = "geofailover_core.cli / control plane is still a spec stub (raises NotImplementedError)"


@pytest.fixture(autouse=True)
def _close_engines() -> Iterator[None]:
    yield
    registry.close_all()


def _two_instance_app(two: list[RedisServer], redis_server: RedisServer | None = None) -> Flask:
    app = new_app(two)
    GeoFailover().init_app(app)
    if redis_server is not None:
        app.config["GEOFAILOVER_SESSIONS_URL"] = f"{redis_server.url}?name=s1"
        app.config["GEOFAILOVER_SESSIONS_OPTIONS"] = FAST
        GeoFailover(name="sessions").init_app(app)
    return app


# -- forwarding (the core's main replaced by a recorder: no network behaviour involved) --


class _Recorder:
    def __init__(self, code: int = 0) -> None:
        self.calls: list[tuple[list[str], list[str] | None]] = []
        self.code = code

    def __call__(
        self, argv: Sequence[str] | None = None, *, engines: Sequence[FailoverEngine] | None = None, stdout: TextIO | None = None, **kwargs: Any
    ) -> int:
        assert kwargs == {"prog": "flask geofailover"}
        self.calls.append((list(argv or []), None if engines is None else [e.name for e in engines]))
        (stdout or sys.stdout).write("recorded\n")
        return self.code


def test_command_forwards_arguments_and_exit_code(two: list[RedisServer], redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _two_instance_app(two, redis_server)
    recorder = _Recorder(code=1)
    monkeypatch.setattr(core_cli, "main", recorder)
    runner = app.test_cli_runner()

    result = runner.invoke(args=["geofailover", "failover", "--to", "b", "--for", "5m", "--reason", "drill", "--force"])
    assert result.exit_code == 1 and "recorded" in result.output
    assert recorder.calls[-1] == (["failover", "--to", "b", "--for", "5m", "--reason", "drill", "--force"], ["default", "sessions"])

    result = runner.invoke(args=["geofailover", "--name", "sessions", "status", "--json"])
    assert result.exit_code == 1
    assert recorder.calls[-1] == (["status", "--json"], ["sessions"])

    result = runner.invoke(args=["geofailover", "--name", "default", "--name", "sessions", "pin", "a", "--name", "x"])
    assert recorder.calls[-1] == (["pin", "a", "--name", "x"], ["default", "sessions"])  # after the subcommand: the core's


def test_name_may_be_the_configuration_name_of_an_instance(two: list[RedisServer], monkeypatch: pytest.MonkeyPatch) -> None:
    app = new_app(two)
    app.config["GEOFAILOVER_OPTIONS"] = {**FAST, "name": "shop-redis"}
    GeoFailover().init_app(app)
    recorder = _Recorder()
    monkeypatch.setattr(core_cli, "main", recorder)
    runner = app.test_cli_runner()
    for name in ("default", "shop-redis"):
        assert runner.invoke(args=["geofailover", "--name", name, "check"]).exit_code == 0
        assert recorder.calls[-1] == (["check"], ["shop-redis"])


def test_unknown_instance_and_missing_extension_are_usage_errors(two: list[RedisServer], monkeypatch: pytest.MonkeyPatch) -> None:
    app = _two_instance_app(two)
    recorder = _Recorder()
    monkeypatch.setattr(core_cli, "main", recorder)
    result = app.test_cli_runner().invoke(args=["geofailover", "--name", "cache", "status"])
    assert result.exit_code == 2
    assert "no GeoFailover instance named 'cache'" in result.output and "configured: default" in result.output
    assert recorder.calls == []
    bare = Flask("bare")
    bare.cli.add_command(geofailover_command)
    result = bare.test_cli_runner().invoke(args=["geofailover", "status"])
    assert result.exit_code == 2 and "no GeoFailover instance is initialised" in result.output
    assert recorder.calls == []


def test_bare_command_prints_usage_with_the_instances(two: list[RedisServer], monkeypatch: pytest.MonkeyPatch) -> None:
    app = _two_instance_app(two)
    recorder = _Recorder()
    monkeypatch.setattr(core_cli, "main", recorder)
    result = app.test_cli_runner().invoke(args=["geofailover"])
    assert result.exit_code == 2
    assert "flask geofailover [--name NAME]" in result.output and "initialised on the app: default" in result.output
    result = app.test_cli_runner().invoke(args=["geofailover", "--help"])
    assert recorder.calls[-1] == (["--help"], [])
    assert "failover --to NAME" in result.output


def test_command_is_registered_once_for_several_instances(two: list[RedisServer], redis_server: RedisServer) -> None:
    app = _two_instance_app(two, redis_server)
    assert "geofailover" in app.cli.commands
    assert "geofailover" in app.test_cli_runner().invoke(args=["--help"]).output


# -- against the real core CLI and control plane --------------------------------------


def _require_core(engine: FailoverEngine) -> None:
    try:
        core_cli.main(["status", "--json"], engines=[engine], stdout=io.StringIO())
    except NotImplementedError:
        pytest.skip(STUB_REASON)


def test_status_and_check_through_the_core_cli(redis_server_factory: Any) -> None:
    servers = redis_server_factory(2, password="cli-s3cr3t")
    geo = GeoFailover()
    app = new_app(servers)
    geo.init_app(app)
    engine = geo.get_engine(app)
    geo.get_client(app).ping()
    _require_core(engine)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["geofailover", "status", "--json"])
    assert result.exit_code == 0, result.output
    assert "cli-s3cr3t" not in result.output
    status = json.loads(result.output)
    assert status_active(status) == "a"
    result = runner.invoke(args=["geofailover", "check"])
    assert result.exit_code == 0, result.output
    assert "cli-s3cr3t" not in result.output
    servers[1].kill()
    result = runner.invoke(args=["geofailover", "check", "--json"])
    assert result.exit_code == 1, result.output  # degraded
    assert "cli-s3cr3t" not in result.output


def test_commands_fire_no_signals_in_the_command_process(two: list[RedisServer]) -> None:
    """`flask geofailover status` and `failover` probe during an outage and see the
    switch a -> b; it describes the command's own probes, not traffic, so the app's
    receivers (which page on-call) must not run in the command's process."""
    heard: list[str] = []

    def receiver(sender: Flask, event: Any, **extra: Any) -> None:
        heard.append(event.kind)

    two[0].kill()
    try:
        for args in (["status", "--json"], ["failover", "--to", "b", "--wait", "0"]):
            registry.close_all()  # each command runs in a process of its own: a fresh, idle engine
            app = new_app(two)
            GeoFailover().init_app(app)
            for signal in (signals.failover, signals.failback, signals.all_down):
                signal.connect(receiver, app, weak=False)
            engine = app.extensions["geofailover"]["default"].engine
            result = app.test_cli_runner().invoke(args=["geofailover", *args])
            assert result.exit_code in (0, 1, 3), result.output  # 3: no fleet reports under this name
            assert engine.active == "b"  # the command's probes did move this process's engine
            assert engine.events.flush(5)
            assert heard == [], f"{args[0]}: receivers ran in the command process: {heard}"
            # The same receivers do hear this process's own switches once the command is over
            # (back to the higher-priority a: a failback).
            engine.failover_to("a", force=True)
            wait_until(lambda: "failback" in heard, timeout=5, message="the receiver is not connected")
            heard.clear()
    finally:
        for signal in (signals.failover, signals.failback, signals.all_down):
            signal.disconnect(receiver)


def test_a_settings_typo_is_one_error_line_not_a_traceback(two: list[RedisServer]) -> None:
    """The app factory runs while `flask` looks up the command; a ConfigurationError
    there is shown as its message (naming the key) with exit code 2."""
    env = {
        **os.environ,
        "FLASK_GEOFAILOVER_URL": f"{two[0].url}?name=us-east;{two[1].url}?name=eu-west",
        "FLASK_GEOFAILOVER_OPTIONS": json.dumps({"socket_timout": 1}),
        "PYTHONPATH": os.pathsep.join([str(EXAMPLE), os.environ.get("PYTHONPATH", "")]),
    }
    for command in (["geofailover", "status"], ["geofailover", "failover", "--to", "eu-west"], ["routes"]):
        done = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "hitcounter", *command],
            cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=30, check=False,
        )
        assert done.returncode == 2, done.stdout + done.stderr
        assert "GEOFAILOVER_OPTIONS['socket_timout']" in done.stderr and "did you mean 'socket_timeout'" in done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def status_active(status: dict[str, Any]) -> Any:
    """The active endpoint of the first configuration in the core's ``status --json``."""
    return status["configurations"][0]["active"]


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.loads(response.read().decode())  # type: ignore[no-any-return]


def _flask(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "hitcounter", "geofailover", *args],
        cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=30, check=False,
    )


SERVE = """
import sys
from werkzeug.serving import make_server
from hitcounter import create_app
server = make_server("127.0.0.1", 0, create_app(), threaded=True)
print(server.port, flush=True)
server.serve_forever()
"""


def test_flask_geofailover_failover_moves_a_separately_running_process(two: list[RedisServer]) -> None:
    url = f"{two[0].url}?name=us-east&weight=2;{two[1].url}?name=eu-west&weight=1"
    options = {**FAST, "failback_grace_period": 0.5, "app_label": "hitcounter", "decode_responses": True}
    probe_app = new_app(GEOFAILOVER_URL=url, GEOFAILOVER_OPTIONS=options)
    GeoFailover().init_app(probe_app)
    _require_core(probe_app.extensions["geofailover"]["default"].engine)
    registry.close_all()

    env = {
        **os.environ,
        "FLASK_GEOFAILOVER_URL": url,
        "FLASK_GEOFAILOVER_OPTIONS": json.dumps(options),
        "PYTHONPATH": os.pathsep.join([str(EXAMPLE), os.environ.get("PYTHONPATH", "")]),
    }
    web = subprocess.Popen([sys.executable, "-c", SERVE], cwd=EXAMPLE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert web.stdout is not None
        port = int(web.stdout.readline())
        hits = f"http://127.0.0.1:{port}/api/hits"
        assert _get(hits)["region"] == "us-east"
        web_pid = _get(hits)["pid"]

        moved = _flask(["failover", "--to", "eu-west", "--reason", "drill"], env)
        assert moved.returncode == 0, moved.stdout + moved.stderr
        wait_until(lambda: _get(hits)["region"] == "eu-west", timeout=10, message="the web process did not move to eu-west")

        status = _flask(["status", "--json"], env)
        assert status.returncode in (0, 1), status.stdout + status.stderr
        assert str(web_pid) in status.stdout  # the web process is in the fleet

        back = _flask(["failback"], env)
        assert back.returncode == 0, back.stdout + back.stderr
        wait_until(lambda: _get(hits)["region"] == "us-east", timeout=10, message="the web process did not fail back")
    finally:
        web.terminate()
        try:
            web.wait(10)
        except subprocess.TimeoutExpired:
            web.kill()
            web.wait(5)
