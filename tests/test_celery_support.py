"""Shared helpers for the Celery tests: two failover endpoints, a ledger, real worker subprocesses.

Not a test module (it defines no tests); the other ``test_celery_*`` modules
import its fixtures. The worker runs a small app written to a temporary
directory, configured through environment variables. Every task run is
recorded in a *ledger*, a third Redis server outside the failover set, so a
test can count each task id, duplicates included, whatever happens to the
endpoints.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("celery")

from geofailover_core import registry
from geofailover_core.testing import RedisServer, stop_process_group, wait_until

# Tight engine timings so every fault costs a fraction of a second.
FAST: dict[str, Any] = {
    "socket_timeout": 0.5,
    "socket_connect_timeout": 0.5,
    "probe_interval": 0.1,
    "health_check_timeout": 0.2,
    "failback_grace_period": 0.6,
    "breaker_reset_timeout": 0.2,
    "confirm_timeout": 0.8,
    "control_plane": False,
}

# A server that survives SIGKILL with its data, like a real region with AOF.
DURABLE = ("--appendonly", "yes", "--appendfsync", "always")

APP_SOURCE = '''
"""Celery app used by the geofailover tests (written by tests/test_celery_support.py)."""
import json
import os

import redis
from celery import Celery

import geofailover_celery
from geofailover_celery import signals

app = Celery("geoapp")
_opts = json.loads(os.environ["GEO_ENGINE_OPTIONS"])
app.conf.update(
    broker_url=os.environ["GEO_BROKER"],
    result_backend=os.environ["GEO_BACKEND"],
    broker_transport_options={
        "visibility_timeout": 3,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
        "geofailover": {**_opts, "drain_interval": 0.2},
        **json.loads(os.environ.get("GEO_KOMBU_OPTIONS", "{}")),
    },
    result_backend_transport_options={"geofailover": dict(_opts)},
    broker_connection_retry_on_startup=True,
    worker_cancel_long_running_tasks_on_connection_loss=True,
    result_expires=600,
    worker_prefetch_multiplier=1,
)
app.conf.update(json.loads(os.environ.get("GEO_APP_CONF", "{}")))
ledger = redis.Redis.from_url(os.environ["GEO_LEDGER"])


@app.task
def record(i):
    """Note every run (duplicates included) in the ledger."""
    ledger.rpush("ran", i)
    return i


@app.task
def tick():
    """Sent by celery beat: note each run by its task id."""
    ledger.rpush("ticks", tick.request.id)


if os.environ.get("GEO_BEAT"):
    app.conf.beat_schedule = {"tick": {"task": "geoapp.tick", "schedule": 0.2}}
    app.conf.beat_max_loop_interval = 0.1


@app.task(acks_late=True)
def hold(i):
    """A long-running task: runs until the test releases it."""
    ledger.rpush("started", i)
    ledger.blpop(f"release:{i}", timeout=30)
    ledger.rpush("ran", i)
    return i


def _relay(kind):
    def receiver(sender, event, **kwargs):
        ledger.rpush("health" if kind == "health_changed" else "signals", json.dumps({
            "pid": os.getpid(), "sender": sender, "kind": kind,
            "from": event.from_endpoint, "to": event.to_endpoint, "at": event.timestamp,
        }))
    return receiver


RECEIVERS = []
for _kind, _signal in signals.SIGNALS.items():
    RECEIVERS.append((_signal, _relay(_kind)))
    _signal.connect(RECEIVERS[-1][1], weak=False)


def disconnect():
    for signal, receiver in RECEIVERS:
        signal.disconnect(receiver)
'''


def geo_url(server: RedisServer, db: int, name: str, weight: float) -> str:
    auth = f":{server.password}@" if server.password else ""
    return f"geofailover://{auth}{server.host}:{server.port}/{db}?name={name}&weight={weight:g}"


@dataclass
class CeleryEnv:
    """Endpoints ``a`` (weight 2) and ``b`` (weight 1), a ledger, and the app's directory."""

    a: RedisServer
    b: RedisServer
    ledger_server: RedisServer
    directory: Path
    options: dict[str, Any] = field(default_factory=lambda: dict(FAST))
    kombu_options: dict[str, Any] = field(default_factory=dict)  # top-level broker_transport_options
    workers: list[Worker] = field(default_factory=list)

    @property
    def broker_url(self) -> str:
        return f"{geo_url(self.a, 0, 'a', 2)};{geo_url(self.b, 0, 'b', 1)}"

    @property
    def backend_url(self) -> str:
        return f"{geo_url(self.a, 1, 'a', 2)};{geo_url(self.b, 1, 'b', 1)}"

    @property
    def ledger(self) -> Any:
        return self.ledger_server.client()

    def environ(self, app_conf: dict[str, Any] | None = None) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(self.directory), os.environ.get("PYTHONPATH", "")]),
            "GEO_BROKER": self.broker_url,
            "GEO_BACKEND": self.backend_url,
            "GEO_LEDGER": self.ledger_server.url,
            "GEO_ENGINE_OPTIONS": json.dumps(self.options),
            "GEO_KOMBU_OPTIONS": json.dumps(self.kombu_options),
            "GEO_APP_CONF": json.dumps(app_conf or {}),
        }

    def app(self) -> Any:
        """The same app, imported in this (the producer's) process."""
        for key, value in self.environ().items():
            os.environ[key] = value
        sys.path.insert(0, str(self.directory))
        sys.modules.pop("geoapp", None)
        import geoapp  # type: ignore[import-not-found]

        return geoapp

    def start_beat(self, name: str = "beat") -> Worker:
        beat = Worker(self, "", 0, name, None, kind="beat")
        self.workers.append(beat)
        beat.start()
        return beat

    def start_worker(self, pool: str = "solo", *, concurrency: int = 1, name: str = "w1", app_conf: dict[str, Any] | None = None,
                     queues: str | None = None) -> Worker:
        worker = Worker(self, pool, concurrency, name, app_conf, queues=queues)
        self.workers.append(worker)
        worker.start()
        return worker

    def ran(self) -> list[int]:
        return [int(x) for x in self.ledger.lrange("ran", 0, -1)]

    def signals(self) -> list[dict[str, Any]]:
        return [json.loads(x) for x in self.ledger.lrange("signals", 0, -1)]


@dataclass
class Worker:
    env: CeleryEnv
    pool: str
    concurrency: int
    name: str
    app_conf: dict[str, Any] | None
    kind: str = "worker"
    queues: str | None = None  # -Q
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.env.directory / f"{self.name}.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 20.0) -> None:
        if self.kind == "beat":
            argv = [
                sys.executable, "-m", "celery", "-A", "geoapp", "beat", "--loglevel=INFO",
                "-s", str(self.env.directory / "beat-schedule"),
            ]
            ready = "beat: Starting..."
        else:
            argv = [
                sys.executable, "-m", "celery", "-A", "geoapp", "worker", f"--pool={self.pool}",
                f"--concurrency={self.concurrency}", "--without-gossip", "--without-mingle", "--without-heartbeat",
                "-n", f"{self.name}@%h", "--loglevel=INFO", *(["-Q", self.queues] if self.queues else []),
            ]  # fmt: skip
            ready = " ready."
        environ = self.env.environ(self.app_conf)
        if self.kind == "beat":
            environ["GEO_BEAT"] = "1"
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, cwd=self.env.directory, env=environ, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_until(lambda: ready in self.log() or self.proc is None or self.proc.poll() is not None, timeout,
                   interval=0.05, message=f"{self.kind} {self.name} ready")
        if ready not in self.log():
            raise AssertionError(f"{self.kind} {self.name} exited before it was ready:\n{self.log()[-4000:]}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process_group(proc, timeout)

    def lines(self, pattern: str) -> list[tuple[float, str]]:
        """(timestamp, line) of log lines matching ``pattern``."""
        out = []
        for line in self.log().splitlines():
            if re.search(pattern, line):
                m = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})", line)
                if m:
                    stamp = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
                    out.append((stamp, line))
        return out


def quiesce(app: Any) -> None:
    """Stop an in-process app's result consumer and producer pool before its engines close.

    Without it, AsyncResult objects collected later would try to unsubscribe
    through a closed engine (an unraisable exception in ``__del__``).
    """
    backend = app._backend
    consumer = getattr(backend, "result_consumer", None)
    if consumer is not None:
        with consumer._locked():
            consumer.subscribed_to.clear()
            consumer._pending_unsubscribe.clear()
            pubsub, consumer._pubsub = consumer._pubsub, None
        if pubsub is not None:
            pubsub.close()
    app.close()


#: The password of the endpoints of ``celery_env_secret``; must never be printed.
SECRET = "s3cret-Broker-pw"


@pytest.fixture
def celery_env(redis_server_factory: Callable[..., list[RedisServer]], tmp_path: Path) -> Iterator[CeleryEnv]:
    yield from _celery_env(redis_server_factory, tmp_path, None)


@pytest.fixture
def celery_env_secret(redis_server_factory: Callable[..., list[RedisServer]], tmp_path: Path) -> Iterator[CeleryEnv]:
    """Like ``celery_env``, with password-protected endpoints (the password is :data:`SECRET`)."""
    yield from _celery_env(redis_server_factory, tmp_path, SECRET)


def _celery_env(redis_server_factory: Callable[..., list[RedisServer]], tmp_path: Path, password: str | None) -> Iterator[CeleryEnv]:
    a, b = redis_server_factory(2, extra_args=DURABLE, password=password)
    (ledger,) = redis_server_factory(1)
    (tmp_path / "geoapp.py").write_text(textwrap.dedent(APP_SOURCE))
    env = CeleryEnv(a, b, ledger, tmp_path)
    saved_path = list(sys.path)
    saved_environ = dict(os.environ)
    yield env
    for worker in env.workers:
        worker.stop()
    module = sys.modules.pop("geoapp", None)
    if module is not None:
        module.disconnect()
        quiesce(module.app)
    sys.path[:] = saved_path
    os.environ.clear()
    os.environ.update(saved_environ)
    registry.close_all()
