"""``celery -A app geofailover ...``: the core's command line, run through Celery's plugin mechanism.

The command is found through the ``celery.commands`` entry point. So that
this test does not depend on how the package was installed, it puts a tiny
distribution with that entry point on the subprocess's path.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from geofailover_core import cli as core_cli
from geofailover_core.testing import wait_until
from tests import test_celery_support as support
from tests.test_celery_support import CeleryEnv

celery_env = support.celery_env  # the fixture

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _core_cli_implemented() -> None:
    try:
        core_cli.main(["--version"], stdout=_Sink())
    except NotImplementedError:
        pytest.skip("geofailover_core.cli is still a specification stub")


class _Sink:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _plugin(env: CeleryEnv) -> None:
    dist = env.directory / "geofailover_celery_cli_plugin-0.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: geofailover-celery-cli-plugin\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("[celery.commands]\ngeofailover = geofailover_celery.cli:geofailover\n")


def celery_cli(env: CeleryEnv, *args: str) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "geoapp", "geofailover", *args],
        cwd=env.directory, env=env.environ(), capture_output=True, text=True, timeout=60,
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_fleet_failover_and_failback_through_the_celery_command(celery_env: CeleryEnv) -> None:
    env = celery_env
    env.options["control_plane"] = True
    _plugin(env)
    worker = env.start_worker("solo")

    code, out, err = celery_cli(env, "status", "--json")
    assert code in (0, 1, 3), err  # until the worker's engines report (its result backend's starts with the first result)
    status: Any = json.loads(out)
    assert "celery-broker" in out and "celery-results" in out, status
    assert "hunter2" not in out

    code, out, err = celery_cli(env, "failover", "--to", "b", "--reason", "drill", "--wait", "10")
    assert code in (0, 1) and "configuration 'celery-broker')" in out, out + err  # 1 while nobody uses celery-results yet
    wait_until(lambda: worker.lines(r"MainProcess\] geofailover\[celery-broker\]: broker connection uses endpoint b"), 10,
               message="worker consumer moved to b")
    geoapp = env.app()
    result = geoapp.record.delay(1)
    wait_until(lambda: geoapp.app.connection_for_write().transport.engine.active == "b", 10, message="producer on b")
    assert result.get(timeout=10) == 1, "stored by the worker wherever its engine was; found by the waiting producer"

    code, out, err = celery_cli(env, "failback", "--wait", "10")
    assert code == 0, out + err
    wait_until(lambda: len(worker.lines(r"MainProcess\] geofailover\[celery-broker\]: broker connection uses endpoint a")) >= 2,
               10, message="worker consumer back on a")


def test_the_command_fires_none_of_the_apps_signals_during_an_outage(celery_env: CeleryEnv) -> None:
    """The command process only looks: the app's receivers (geoapp relays every signal to the ledger)
    hear nothing from it, though its engines find the first endpoint dead."""
    env = celery_env
    env.options["control_plane"] = True
    _plugin(env)
    env.a.kill()
    for args in (["status"], ["status", "--json"], ["failover", "--to", "b", "--reason", "drill"]):
        code, out, err = celery_cli(env, *args)
        assert code in (0, 1, 3), out + err  # 3: no worker reports under this name (none runs here)
        assert "celery-broker" in out + err, out + err
    assert "failover to b (configuration 'celery-broker')" in out and "written to b" in out, out
    assert (env.ledger.lrange("signals", 0, -1), env.ledger.lrange("health", 0, -1)) == ([], [])


def test_an_app_without_geofailover_is_refused(celery_env: CeleryEnv) -> None:
    env = celery_env
    _plugin(env)
    (env.directory / "plainapp.py").write_text("from celery import Celery\napp = Celery('plain', broker='memory://')\n")
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "plainapp", "geofailover", "status"],
        cwd=env.directory, env=env.environ(), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "neither broker_url nor result_backend of this app uses geofailover://" in proc.stderr
