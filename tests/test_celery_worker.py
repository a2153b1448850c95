"""Real Celery worker subprocesses across real failovers, every task id counted.

The endpoints run with ``appendfsync always`` so that a killed region comes
back with its data, as a real one with persistence does: tasks published to
it before it died must be consumed after it returns. Each test prints its
counts (sent, distinct tasks run, runs, duplicates).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from geofailover_core.testing import wait_until
from tests import test_celery_support as support
from tests.test_celery_support import CeleryEnv, Worker

celery_env = support.celery_env  # the fixtures
celery_env_secret = support.celery_env_secret

pytestmark = pytest.mark.slow


def _counts(env: CeleryEnv, label: str, sent: int) -> tuple[int, int]:
    ran = env.ran()
    duplicates = len(ran) - len(set(ran))
    print(f"[{label}] sent={sent} received={len(set(ran))} runs={len(ran)} duplicates={duplicates}")
    return len(set(ran)), duplicates


def _wait_all_ran(env: CeleryEnv, n: int, timeout: float) -> None:
    try:
        wait_until(lambda: set(env.ran()) >= set(range(n)), timeout, interval=0.05, message="every task ran")
    except AssertionError as exc:
        missing = sorted(set(range(n)) - set(env.ran()))
        raise AssertionError(f"{exc}; missing task ids: {missing}") from None


def _reconnect_delays(worker: Worker, engine: str) -> list[float]:
    """Seconds from each switch of the worker's broker engine to its consumer's new connection."""
    switches = worker.lines(rf"MainProcess\] geofailover\[{engine}\]: (failover|failback) ")
    connects = worker.lines(rf"MainProcess\] geofailover\[{engine}\]: broker connection uses endpoint")
    delays = []
    for at, _ in switches:
        later = [c for c, _ in connects if c >= at]
        assert later, f"no reconnect after the switch at {at}:\n{worker.log()[-3000:]}"
        delays.append(later[0] - at)
    return delays


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_stream_survives_kill_and_failback_with_no_task_lost(celery_env: CeleryEnv, pool: str) -> None:
    env = celery_env
    worker = env.start_worker(pool, concurrency=2 if pool == "prefork" else 1)
    geoapp = env.app()
    broker = geoapp.app.connection_for_write().transport.engine
    n = 150
    results = []
    for i in range(n):
        results.append(geoapp.record.delay(i))
        if i == 40:
            env.a.kill()  # tasks 0..40 not yet consumed stay in a's persisted queue
        if i == 100:
            env.a.restart()
    _wait_all_ran(env, n, 30)
    wait_until(lambda: broker.active == "a", 10, message="producer back on a")
    received, duplicates = _counts(env, pool, n)
    assert received == n
    assert duplicates <= 2, "duplicates only from messages in flight at the kill"
    assert [r.get(timeout=10) for r in results] == list(range(n)), "every result retrievable"

    # The worker ends where the producer is, and said so once per switch.
    def worker_broker_events() -> list[tuple[str, str, str]]:
        return [(s["kind"], s["from"], s["to"]) for s in env.signals() if s["pid"] == worker.pid and s["sender"] == "celery-broker"]

    wait_until(lambda: worker_broker_events() == [("failover", "a", "b"), ("failback", "b", "a")], 10,
               message="worker's broker signals: one failover, one failback")
    per_process: dict[tuple[int, str], list[Any]] = {}
    for s in env.signals():
        per_process.setdefault((s["pid"], s["sender"]), []).append((s["kind"], s["from"], s["to"]))
    for key, events in per_process.items():
        assert len(events) == len(set(events)), f"a signal fired twice in one process: {key} {events}"
    delays = _reconnect_delays(worker, "celery-broker")
    print(f"[{pool}] consumer reconnect after switch: {', '.join(f'{d * 1000:.0f} ms' for d in delays)}")
    assert len(delays) == 2 and all(d < 1.0 for d in delays), delays
    if pool == "prefork":
        # Children never used the broker engine, yet it watched the endpoints
        # from the start: worker_process_init started it (tasks that send
        # tasks publish from the child).
        assert worker.lines(r"ForkPoolWorker-\d+\] geofailover\[celery-broker\]: failover a -> b"), worker.log()[-3000:]


def test_backlog_published_to_the_secondary_is_consumed_after_failback(celery_env: CeleryEnv) -> None:
    """Tasks sent to b during an outage while no worker consumed them are not stranded on b."""
    env = celery_env
    geoapp = env.app()
    broker = geoapp.app.connection_for_write().transport.engine
    env.a.kill()
    results = [geoapp.record.delay(i) for i in range(40)]
    assert broker.active == "b"
    assert env.b.client().llen("celery") == 40
    env.a.restart()
    wait_until(lambda: broker.active == "a", 10, message="producer failed back")
    worker = env.start_worker("solo")  # connects to a; its drainer finds b's backlog
    wait_until(lambda: set(env.ran()) >= set(range(40)), 20, interval=0.05, message="backlog consumed")
    _counts(env, "backlog", 40)
    assert env.b.client().llen("celery") == 0
    assert [r.get(timeout=5) for r in results] == list(range(40))
    assert worker.lines(r"moved \d+ message\(s\) of celery from b to the active endpoint a")


@pytest.mark.parametrize("cancel", [False, True], ids=["keep-running", "cancel-on-loss"])
def test_running_acks_late_task_across_failback(celery_env: CeleryEnv, cancel: bool) -> None:
    """An acks_late task running on b when the worker fails back to a is neither lost nor acked on a."""
    env = celery_env
    worker = env.start_worker("threads", concurrency=2,
                              app_conf={"worker_cancel_long_running_tasks_on_connection_loss": cancel})
    geoapp = env.app()
    broker = geoapp.app.connection_for_write().transport.engine
    env.a.kill()
    wait_until(lambda: worker.lines(r"broker connection uses endpoint b"), 10, message="worker on b")
    result = geoapp.hold.delay(7)
    assert broker.active == "b"
    wait_until(lambda: env.ledger.llen("started"), 10, message="task started on b")
    env.a.restart()
    wait_until(lambda: len(worker.lines(r"broker connection uses endpoint a")) >= 2, 10, message="worker failed back to a")
    env.ledger.rpush("release:7", "go")
    if cancel:
        # Celery cancels (here: cannot stop a thread) and the message is restored, so it runs again.
        env.ledger.rpush("release:7", "go")
    assert result.get(timeout=15) == 7
    b = env.b.client()
    wait_until(lambda: b.hlen("unacked") == 0 and b.llen("celery") == 0, 10,
               message="nothing left unacknowledged or queued on b")
    wait_until(lambda: 7 in env.ran(), 10, message="task finished")
    runs = env.ran().count(7)
    _counts(env, f"acks_late {'cancel' if cancel else 'keep'}", 1)
    if not cancel:
        assert runs == 1, "the running task acked on b (its origin) and was not restored: one run"
        assert worker.lines(r"leaving 1 running acks_late task\(s\) unacknowledged on b")
    else:
        assert runs in (1, 2)


def test_beat_keeps_publishing_across_kill_and_failback(celery_env: CeleryEnv) -> None:
    env = celery_env
    worker = env.start_worker("solo")
    beat = env.start_beat()

    def sent() -> int:
        return len(beat.lines(r"Scheduler: Sending due task tick"))

    def ticks_after(count: int) -> bool:
        return sent() >= count + 3 and env.ledger.llen("ticks") >= count + 3

    wait_until(lambda: ticks_after(0), 10, interval=0.05, message="beat ticks on a")
    env.a.kill()
    mark = sent()
    wait_until(lambda: ticks_after(mark) and worker.lines(r"broker connection uses endpoint b"), 10, interval=0.05,
               message="beat ticks during the outage")
    env.a.restart()
    wait_until(lambda: beat.lines(r"failback b -> a"), 10, interval=0.05, message="beat failed back")
    mark = sent()
    wait_until(lambda: ticks_after(mark), 10, interval=0.05, message="beat ticks after failback")
    beat.stop()
    total = sent()
    wait_until(lambda: env.ledger.llen("ticks") >= total, 10, interval=0.05, message="every tick beat sent ran")
    ticks = env.ledger.lrange("ticks", 0, -1)
    print(f"[beat] sent={total} received={len(set(ticks))} runs={len(ticks)} duplicates={len(ticks) - len(set(ticks))}")
    assert len(set(ticks)) == total
    assert not beat.lines(r"ERROR|CRITICAL"), beat.log()[-3000:]


def test_frozen_primary_is_left_and_nothing_is_lost(celery_env: CeleryEnv) -> None:
    """A hung region (SIGSTOP): connections stay open, replies never come."""
    env = celery_env
    worker = env.start_worker("solo")
    geoapp = env.app()
    broker = geoapp.app.connection_for_write().transport.engine
    results = [geoapp.record.delay(i) for i in range(20)]
    wait_until(lambda: set(env.ran()) >= set(range(20)), 10, interval=0.05, message="first batch ran on a")
    env.a.freeze()
    try:
        results += [geoapp.record.delay(i) for i in range(20, 40)]  # the first publish times out, the rest go to b
        assert broker.active == "b"
        wait_until(lambda: set(env.ran()) >= set(range(40)), 15, interval=0.05, message="second batch ran on b")
    finally:
        env.a.thaw()
    wait_until(lambda: broker.active == "a", 10, message="failback after thaw")
    results += [geoapp.record.delay(i) for i in range(40, 50)]
    wait_until(lambda: set(env.ran()) >= set(range(50)), 15, interval=0.05, message="third batch ran")
    received, duplicates = _counts(env, "freeze", 50)
    assert received == 50 and duplicates <= 1
    assert [r.get(timeout=10) for r in results] == list(range(50))
    delays = _reconnect_delays(worker, "celery-broker")
    print(f"[freeze] consumer reconnect after switch: {', '.join(f'{d * 1000:.0f} ms' for d in delays)}")
    assert all(d < 1.0 for d in delays), delays


def test_passwords_stay_out_of_worker_logs_and_banners(celery_env_secret: CeleryEnv) -> None:
    env = celery_env_secret
    worker = env.start_worker("solo")
    geoapp = env.app()
    assert geoapp.record.delay(1).get(timeout=10) == 1
    env.a.kill()
    assert geoapp.record.delay(2).get(timeout=10) == 2
    env.a.restart()
    wait_until(lambda: worker.lines(r"MainProcess\] geofailover\[celery-broker\]: failback b -> a"), 10, message="failback")
    log = worker.log()
    assert ".> transport:   geofailover://:***@" in log
    assert ".> results:     geofailover://:***@" in log
    assert support.SECRET not in log



@pytest.mark.parametrize("fault", ["replica", "oom"])
def test_worker_outlives_a_member_that_refuses_service(celery_env: CeleryEnv, fault: str) -> None:
    """A member that turns replica (its waits end with ``UNBLOCKED``, its writes with
    ``READONLY``) or runs out of memory: the consumer reconnects instead of the worker dying,
    and every publish the caller saw accepted runs."""
    env = celery_env
    worker = env.start_worker("solo")
    geoapp = env.app()
    accepted = [(i, geoapp.record.delay(i)) for i in range(10)]
    wait_until(lambda: set(env.ran()) >= set(range(10)), 10, interval=0.05, message="first batch ran on a")
    control = env.a.client()
    if fault == "replica":
        env.a.replicaof(SimpleNamespace(host="127.0.0.1", port=1))  # a dead primary: reads work, writes refused
    else:
        control.config_set("maxmemory-policy", "noeviction")
        control.config_set("maxmemory", "1")
    refused = 0
    try:
        for i in range(10, 30):
            try:
                accepted.append((i, geoapp.record.delay(i)))
            except Exception:  # under OOM a refused publish is the caller's to see
                refused += 1
        if fault == "replica":
            assert refused == 0, "READONLY refuses a write unapplied: the publish is retried on b"
            assert geoapp.app.connection_for_write().transport.engine.active == "b"
            wait_until(lambda: set(env.ran()) >= set(range(30)), 15, interval=0.05, message="second batch ran on b")
    finally:
        if fault == "replica":
            env.a.replicaof(None)
        else:
            control.config_set("maxmemory", "0")
    accepted += [(i, geoapp.record.delay(i)) for i in range(30, 40)]
    wanted = {i for i, _ in accepted}
    wait_until(lambda: set(env.ran()) >= wanted, 20, interval=0.05, message="every accepted task ran")
    assert [r.get(timeout=10) for _, r in accepted] == [i for i, _ in accepted], "every result retrievable"
    print(f"[{fault}] accepted={len(accepted)} refused={refused} runs={len(env.ran())}")
    assert worker.proc is not None and worker.proc.poll() is None, worker.log()[-3000:]
    assert not worker.lines(r"Unrecoverable error|CRITICAL"), worker.log()[-3000:]
