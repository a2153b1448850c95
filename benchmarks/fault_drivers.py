#!/usr/bin/env python
"""Surface drivers of the fault matrix: one process per surface, steered over stdin/stdout.

Each surface (the core client, redis-py's MultiDBClient, a Django site, a
Flask app, a Celery producer with its worker) runs in its own interpreter, so
one surface's threads and garbage never show up in another's call latencies,
and a framework's process-wide state (Django's settings, the geofailover
registry) is that of a real application process. ``fault_matrix.py`` starts
one driver per surface, keeps it for the whole matrix, and for every run
sends it JSON lines:

* ``{"cmd": "start", ...}``: build the surface on the run's endpoints, start
  the caller loop, answer once it served ``warmup`` calls;
* ``{"cmd": "stop"}``: stop the loop, answer with every call it made;
* ``{"cmd": "account"}``: (Celery) wait for every task, fetch every result;
* ``{"cmd": "close"}``: drop the surface (engines, apps, worker).

A call is one request of the surface (``GET`` + ``INCR`` for the clients, a
request through the framework's test client for Django and Flask, a task
publish for Celery). Every call is recorded as ``[start, end, value, error]``
on the system-wide monotonic clock, which the orchestrator shares. ``value``
is what the ``INCR`` returned: each endpoint's counter starts at its own
offset, so the value itself says which endpoint applied and acknowledged the
write, without asking the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from geofailover_core.testing import stop_process_group

HERE = Path(__file__).resolve().parent

Record = list[Any]  # [start, end, value or None, error type or None]


class Loop:
    """One caller thread: a call every ``period`` seconds, each one recorded.

    Bounded in count and time; never bursts to catch up after a slow call.
    """

    def __init__(self, surface: Surface, max_seconds: float = 600.0) -> None:
        self.surface = surface
        self.call = surface.call
        self.period = surface.period
        self.deadline = time.monotonic() + max_seconds
        self.records: list[Record] = []
        self.ok = 0
        self._stop = threading.Event()
        target = self._run_async if isinstance(surface, Async) else self._run
        self._thread = threading.Thread(target=target, name="fault-matrix-caller", daemon=True)
        self._thread.start()

    def _record(self, t0: float, value: int | None, error: str | None) -> float:
        t1 = time.monotonic()
        self.records.append([t0, t1, value, error])
        if error is None:
            self.ok += 1
        return t1

    def _run_async(self) -> None:
        """The same loop as a coroutine on this thread's own event loop, which the client lives on."""
        surface = self.surface
        assert isinstance(surface, Async)

        async def run() -> None:
            next_start = time.monotonic()
            try:
                while not self._stop.is_set() and len(self.records) < 200_000 and time.monotonic() < self.deadline:
                    now = time.monotonic()
                    if now < next_start:
                        await asyncio.sleep(next_start - now)
                        continue
                    t0 = time.monotonic()
                    value: int | None = None
                    error: str | None = None
                    try:
                        value = await surface.acall()
                    except Exception as exc:  # noqa: BLE001 - every error the caller sees is the measurement
                        error = type(exc).__name__
                    next_start = max(next_start + self.period, self._record(t0, value, error))
            finally:
                await surface.aclose()

        asyncio.run(run())

    def _run(self) -> None:
        next_start = time.monotonic()
        while not self._stop.is_set() and len(self.records) < 200_000:
            now = time.monotonic()
            if now >= self.deadline:
                break
            if now < next_start and self._stop.wait(next_start - now):
                break
            t0 = time.monotonic()
            value: int | None = None
            error: str | None = None
            try:
                value = self.call()
            except Exception as exc:  # noqa: BLE001 - every error the caller sees is the measurement
                error = type(exc).__name__
            next_start = max(next_start + self.period, self._record(t0, value, error))

    def stop(self, timeout: float = 30.0) -> bool:
        self._stop.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()


def endpoint_url(spec: dict[str, Any], scheme: str = "redis") -> str:
    """``a;b`` as one geofailover URL: the endpoints' own URLs with name and weight."""
    parts = []
    for ep in spec["endpoints"]:
        url = ep["url"] if scheme == "redis" else ep["url"].replace("redis://", f"{scheme}://", 1)
        parts.append(f"{url}?name={ep['name']}&weight={ep['weight']:g}")
    return ";".join(parts)


class Surface:
    """A way an application talks to Redis. ``call()`` returns the INCR's value."""

    period = 0.01

    def open(self, spec: dict[str, Any]) -> None:
        raise NotImplementedError

    def call(self) -> int | None:
        raise NotImplementedError

    def events(self) -> list[list[Any]]:
        """Switches the surface's engine announced: [time, kind, to]."""
        return []

    def account(self, spec: dict[str, Any]) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        from geofailover_core import registry

        registry.close_all()


class EngineEvents:
    """Collects an engine's failover/failback events with their monotonic time."""

    def __init__(self) -> None:
        self.seen: list[list[Any]] = []

    def __call__(self, event: Any) -> None:
        if event.kind in ("failover", "failback", "all_down", "recovered"):
            self.seen.append([time.monotonic(), event.kind, event.to_endpoint])


class Core(Surface):
    """``FailoverRedis`` with its defaults (``retry_on_failover`` as given)."""

    def __init__(self, policy: str = "read_only") -> None:
        self.policy = policy
        self.recorder = EngineEvents()

    def open(self, spec: dict[str, Any]) -> None:
        from geofailover_core import FailoverRedis

        self.key = spec["key"]
        self.client = FailoverRedis.from_url(
            endpoint_url(spec), name=f"fm-{spec['run']}", retry_on_failover=self.policy, **spec.get("engine_options", {})
        )
        self.recorder = EngineEvents()
        self.client.geofailover.on("*", self.recorder)

    def call(self) -> int | None:
        self.client.get("fm:read")
        return int(self.client.incr(self.key))

    def events(self) -> list[list[Any]]:
        return list(self.recorder.seen)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        super().close()


class Async(Surface):
    """``AsyncFailoverRedis`` with its defaults, on the caller thread's own event loop:
    ``await get`` then ``await incr``."""

    def open(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.key = spec["key"]
        self.client: Any = None

    async def acall(self) -> int:
        if self.client is None:  # built on the event loop that awaits it
            from geofailover_core.asyncio import AsyncFailoverRedis

            self.client = AsyncFailoverRedis.from_url(
                endpoint_url(self.spec), name=f"fm-async-{self.spec['run']}", **self.spec.get("engine_options", {})
            )
        await self.client.get("fm:read")
        return int(await self.client.incr(self.key))

    async def aclose(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.aclose()
            self.client = None


class MultiDB(Surface):
    """redis-py's ``MultiDBClient``, configured by ``failover_bench.multidb_config`` (defaults or tuned)."""

    def __init__(self, variant: str) -> None:
        self.variant = variant

    def open(self, spec: dict[str, Any]) -> None:
        from failover_bench import build_multidb

        a, b = (SimpleNamespace(url=ep["url"]) for ep in spec["endpoints"])
        self.key = spec["key"]
        self.client, self._close = build_multidb(a, b, self.variant)  # type: ignore[arg-type]

    def call(self) -> int | None:
        self.client.get("fm:read")
        return int(self.client.incr(self.key))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._close()


class Django(Surface):
    """A Django site on ``GeoFailoverCache``: each call is a request through Django's
    test client whose view does ``cache.get``, ``cache.set`` and ``cache.incr``."""

    period = 0.02

    def __init__(self) -> None:
        import django
        from django.conf import settings
        from django.http import HttpRequest, JsonResponse
        from django.urls import path

        def view(request: HttpRequest) -> JsonResponse:
            from django.core.cache import cache

            cache.get("fm:page")
            cache.set("fm:page", "rendered", timeout=60)
            return JsonResponse({"v": cache.incr("fm:django:ctr")})

        settings.configure(
            DEBUG=False,
            SECRET_KEY="fault-matrix-only",
            ALLOWED_HOSTS=["testserver"],
            INSTALLED_APPS=["geofailover_django"],
            MIDDLEWARE=[],
            ROOT_URLCONF=type("FaultMatrixUrls", (), {"urlpatterns": [path("fm/", view)]}),  # any hashable object with urlpatterns
            CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
            DATABASES={},
            USE_TZ=True,
            LOGGING_CONFIG=None,
        )
        django.setup()
        self.override: Any = None

    def open(self, spec: dict[str, Any]) -> None:
        from django.test import Client, override_settings

        location = [f"{ep['url']}?name={ep['name']}&weight={ep['weight']:g}" for ep in spec["endpoints"]]
        caches = {"default": {
            "BACKEND": "geofailover_django.cache.GeoFailoverCache",
            "LOCATION": location,
            "OPTIONS": {"IGNORE_EXCEPTIONS": False, "GEOFAILOVER": spec.get("engine_options", {})},  # the caller must see what failed
        }}  # fmt: skip
        self.override = override_settings(CACHES=caches)
        self.override.enable()
        self.client = Client(raise_request_exception=True)

    def call(self) -> int | None:
        return int(self.client.get("/fm/").json()["v"])

    def close(self) -> None:
        from asgiref.local import Local
        from django.core.cache import caches

        from geofailover_django import binding

        for backend in caches.all(initialized_only=True):
            with contextlib.suppress(Exception):
                backend.close()
        caches._connections = Local(caches.thread_critical)  # drop every thread's backend
        binding.reset()
        super().close()
        if self.override is not None:
            self.override.disable()
            self.override = None


class Flask(Surface):
    """A Flask app with the extension, Flask-Caching on ``GeoFailoverCache`` and
    Flask-Session on the app's client; each call is a request whose view touches
    the session, the cache, and ``INCR``s the counter."""

    period = 0.02

    def open(self, spec: dict[str, Any]) -> None:
        import flask
        import flask_session
        from flask_caching import Cache

        from geofailover_flask import GeoFailover

        app = flask.Flask(f"fault_matrix_{spec['run']}")
        app.config.update(
            TESTING=True,
            SECRET_KEY="fault-matrix-only",
            GEOFAILOVER_URL=endpoint_url(spec),
            GEOFAILOVER_OPTIONS=spec.get("engine_options", {}),
            CACHE_TYPE="geofailover_flask.cache.GeoFailoverCache",
            SESSION_TYPE="redis",
        )
        geo = GeoFailover()
        geo.init_app(app)
        app.config["SESSION_REDIS"] = geo.get_client(app)
        flask_session.Session(app)
        cache = Cache()
        cache.init_app(app)

        @app.get("/fm")
        def hit() -> dict[str, Any]:
            flask.session["n"] = flask.session.get("n", 0) + 1
            cache.get("fm:page")
            cache.set("fm:page", "rendered", timeout=60)
            return {"v": geo.client.incr("fm:flask:ctr")}

        self.client = app.test_client()

    def call(self) -> int | None:
        response = self.client.get("/fm")
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}")
        return int(response.json["v"])  # type: ignore[index]


class Celery(Surface):
    """A producer (this process) publishing one task per call, a prefork worker
    (a subprocess) running them, results on the result backend. Accounting:
    every acknowledged publish runs at least once (duplicates counted) and its
    result can be fetched."""

    period = 0.05

    def __init__(self) -> None:
        # The Celery tests' app: record(i) notes every run (duplicates included) in a ledger server
        # outside the failover set; engine options come from GEO_ENGINE_OPTIONS ({}: the defaults).
        from tests.test_celery_support import APP_SOURCE

        self.directory = Path(tempfile.mkdtemp(prefix="fault-matrix-celery-"))
        (self.directory / "geoapp.py").write_text(APP_SOURCE)
        self.worker: subprocess.Popen[bytes] | None = None
        self.app: Any = None
        self.recorder = EngineEvents()

    def open(self, spec: dict[str, Any]) -> None:
        import redis

        broker = endpoint_url({"endpoints": [dict(ep, url=ep["url"].rsplit("/", 1)[0] + "/0") for ep in spec["endpoints"]]}, "geofailover")
        backend = endpoint_url({"endpoints": [dict(ep, url=ep["url"].rsplit("/", 1)[0] + "/1") for ep in spec["endpoints"]]}, "geofailover")
        os.environ.update(
            GEO_BROKER=broker, GEO_BACKEND=backend, GEO_LEDGER=spec["ledger"], GEO_ENGINE_OPTIONS=json.dumps(spec.get("engine_options", {})),
            # As docs/celery.md's quick start: a result stored while the regions are down is retried, not lost.
            GEO_APP_CONF=json.dumps({"result_backend_always_retry": True}),
        )
        self.ledger = redis.Redis.from_url(spec["ledger"])
        self.ledger.delete("ran", "signals")
        self.log_path = Path(spec["logdir"]) / f"celery-worker-{spec['run']}.log"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(self.directory), os.environ.get("PYTHONPATH", "")])}
        with self.log_path.open("wb") as out:
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "geoapp", "worker", "--pool=prefork", "--concurrency=2",
                 "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"fm{spec['run']}@%h", "--loglevel=INFO"],
                cwd=self.directory, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while " ready." not in self.log_path.read_text(errors="replace"):
            if self.worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"celery worker did not start: {self.log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)
        sys.path.insert(0, str(self.directory))
        sys.modules.pop("geoapp", None)
        import geoapp  # type: ignore[import-not-found]

        self.app = geoapp
        self.results: dict[int, Any] = {}
        self.numbers = itertools.count()
        self.recorder = EngineEvents()
        self.app.app.connection_for_write().transport.engine.on("*", self.recorder)

    def call(self) -> int | None:
        i = next(self.numbers)
        self.results[i] = self.app.record.delay(i)  # returns once the broker acknowledged the message
        return i

    def events(self) -> list[list[Any]]:
        return list(self.recorder.seen)

    def account(self, spec: dict[str, Any]) -> dict[str, Any]:
        acked = sorted(self.results)
        deadline = time.monotonic() + float(spec.get("drain_timeout", 30.0))

        def ran() -> list[int]:
            return [int(x) for x in self.ledger.lrange("ran", 0, -1)]

        worker_alive = True
        expected = set(acked) - set(spec.get("destroyed_tasks", []))  # messages the fault itself wiped cannot run
        while not set(ran()) >= expected and time.monotonic() < deadline:
            if self.worker is None or self.worker.poll() is not None:
                worker_alive = False  # nothing will run them any more
                break
            time.sleep(0.1)
        runs = ran()
        # Results: poll each task's state (one GET each, with the backend's fallback reads) until
        # every one is final or the deadline passes; AsyncResult.get() would wait its polling
        # interval (1 s) for every missing result.
        pending = set(acked) & set(runs)  # a task that never ran has no result to wait for
        wiped = {i for i in pending if self.results[i].id in set(spec.get("wiped_results", []))}
        pending -= wiped  # stored, then destroyed with the region's data by the fault (an empty restart)
        results_deadline = time.monotonic() + float(spec.get("results_timeout", 15.0))
        while pending and time.monotonic() < results_deadline:
            pending = {i for i in pending if not self.results[i].ready()}
            if pending:
                time.sleep(0.2)
        fetched = wrong = 0
        wrong_states: dict[str, int] = {}
        for i in sorted(set(acked) & set(runs) - pending - wiped):
            if self.results[i].successful() and self.results[i].get(timeout=5) == i:
                fetched += 1
            else:
                wrong += 1  # final but not our value: e.g. FAILURE stored because storing SUCCESS failed
                state = str(self.results[i].state)
                wrong_states[state] = wrong_states.get(state, 0) + 1
        return {
            "sent_acked": len(acked),
            "ran_distinct": len(set(runs) & set(acked)),
            "ran_unacked": len(set(runs) - set(acked)),  # publishes that raised yet ran (fate was unknown)
            "runs": len(runs),
            "duplicates": len(runs) - len(set(runs)),
            "lost": sorted(set(acked) - set(runs)),
            "results_fetched": fetched,
            "results_wrong": wrong,
            "results_wrong_states": wrong_states,
            "results_missing": sorted(pending),
            "results_wiped_by_fault": len(wiped),
            "worker_alive": worker_alive,
            "worker_died_of": "" if worker_alive else self.cause_of_death(),
        }

    def cause_of_death(self) -> str:
        """The exception after the worker's CRITICAL line (Celery's "Unrecoverable error")."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        for k, line in enumerate(lines):
            if "CRITICAL/MainProcess" in line:
                for later in lines[k + 1 :]:
                    if re.match(r"^[\w.]+(Error|Exception): ", later):
                        return later.strip()
                return line.split("] ", 1)[-1]
        return "no CRITICAL line in its log"

    def close(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            stop_process_group(worker)
        if self.app is not None:
            # Quiet the result consumer before the engines close: otherwise the AsyncResults dropped
            # below unsubscribe through a closed engine, and the backend's connection retries
            # (20 x 1 s) stall the next run.
            from tests.test_celery_support import quiesce

            with contextlib.suppress(Exception):
                quiesce(self.app.app)
            self.results = {}
            self.app = None
        super().close()


SURFACES: dict[str, Callable[[], Surface]] = {
    "core": Core,
    "core_all": lambda: Core("all"),
    "multidb": lambda: MultiDB("default"),
    "multidb_tuned": lambda: MultiDB("tuned"),
    "django": Django,
    "flask": Flask,
    "celery": Celery,
    "async": Async,
}


def serve(name: str) -> None:
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to the log, never into the protocol
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format=f"%(relativeCreated)8.0f {name} %(name)s %(levelname)s %(message)s")
    warnings.filterwarnings("ignore", message=r".*is an experimental", category=UserWarning)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1 <pid>: every thread's stack into the log
    surface = SURFACES[name]()
    loop: Loop | None = None
    spec: dict[str, Any] = {}
    for line in sys.stdin:
        msg = json.loads(line)
        reply: dict[str, Any]
        try:
            if msg["cmd"] == "start":
                spec = msg
                t0 = time.monotonic()
                surface.open(spec)
                t1 = time.monotonic()
                loop = Loop(surface)
                deadline = time.monotonic() + 30
                while loop.ok < spec["warmup"] and time.monotonic() < deadline:
                    time.sleep(0.005)
                reply = {"ready": loop.ok >= spec["warmup"], "open_s": round(t1 - t0, 2), "warmup_s": round(time.monotonic() - t1, 2)}
            elif msg["cmd"] == "stop":
                stopped = loop.stop() if loop is not None else True
                reply = {"records": loop.records if loop is not None else [], "events": surface.events(), "stopped": stopped}
                loop = None
            elif msg["cmd"] == "account":
                reply = surface.account({**spec, **msg})
            elif msg["cmd"] == "close":
                surface.close()
                reply = {"closed": True}
            elif msg["cmd"] == "exit":
                protocol.write(json.dumps({"bye": True}) + "\n")
                return
            else:
                reply = {"error": f"unknown command {msg['cmd']!r}"}
        except Exception as exc:
            logging.getLogger("fault_drivers").exception("%s failed", msg.get("cmd"))
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        protocol.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    serve(sys.argv[1])
