"""One invocation of the command line: ``status``, ``check`` and the fleet actions."""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from typing import Any, TextIO, cast

from .. import demo
from ..control import check, fleet_status, request
from ..control.records import Action, ActionResult
from ..engine import FailoverEngine
from ..errors import ConfigurationError
from ..terminal import HEALTH_STYLE, Style
from .parser import EXIT_DEGRADED, EXIT_ERROR, EXIT_OK
from .render import render_status, result_json, straggler_line


class Invocation:
    """One invocation: parsed arguments, output stream, engines."""

    def __init__(self, args: argparse.Namespace, out: TextIO, engines: list[FailoverEngine], owned: bool) -> None:
        self.args = args
        self.out = out
        self.engines = engines
        self.owned = owned
        self.json: bool = bool(getattr(args, "json", False))
        self.style = Style(out, getattr(args, "color", "auto"))

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def emit_json(self, data: Any) -> None:
        self.print(json.dumps(data, default=str, sort_keys=True))

    # -- status ---------------------------------------------------------------------------

    def status(self) -> int:
        watch = getattr(self.args, "watch", None)
        count = getattr(self.args, "count", None)
        if count is not None and count < 1:
            raise ConfigurationError("--count", f"must be >= 1, got {count}", "give a positive number of refreshes")
        for engine in self.engines:
            engine.check_now()
        refreshes = 0
        while True:
            snapshots = []
            for engine in self.engines:
                st = fleet_status(engine)
                snapshots.append(st)
            code = EXIT_OK
            texts = []
            for st in snapshots:
                c, text = render_status(st, self.style)
                code = max(code, c)
                texts.append(text)
            if self.json:
                self.emit_json({"configurations": snapshots, "code": code})
            else:
                if watch is not None:
                    if self.style.enabled:
                        self.out.write("\x1b[H\x1b[2J")
                    self.print(self.style(f"geofailover status  {time.strftime('%Y-%m-%d %H:%M:%S')}  (Ctrl-C to stop)", "dim"))
                self.print("\n\n".join(texts))
            refreshes += 1
            if watch is None or (count is not None and refreshes >= count):
                return code
            period = watch if watch > 0 else max(1.0, min(e.config.probe_interval for e in self.engines))
            time.sleep(period)
            if not self.json and not self.style.enabled:
                self.print()

    # -- check ----------------------------------------------------------------------------

    def check(self) -> int:
        reports = []
        code = EXIT_OK
        for engine in self.engines:
            c, report = check(engine)
            code = max(code, c)
            reports.append(report)
        if self.json:
            self.emit_json({"configurations": reports, "code": code})
            return code
        s = self.style
        label = {"ok": ("OK", ("green", "bold")), "degraded": ("DEGRADED", ("yellow", "bold")), "down": ("DOWN", ("red", "bold"))}
        for report in reports:
            text, colours = label[report["state"]]
            self.print(f"{s(text, *colours)}  configuration {report['name']!r}: {report['summary']}")
            for e in report["endpoints"]:
                ok = e["health"] == "healthy"
                mark = s(s.sym("✓", "ok"), "green") if ok else s(s.sym("✗", "!!"), "red")
                latency = "-" if e["latency_ms"] is None else f"{e['latency_ms']:.1f} ms"
                self.print(f"  {mark} {e['name']:<12} {s(e['health'], *HEALTH_STYLE.get(e['health'], ())):<9}  {latency:>9}  {e['health_detail']}")
        return code

    # -- actions --------------------------------------------------------------------------

    def action(self) -> int:
        args = self.args
        command: str = args.command
        endpoint: str | None = getattr(args, "endpoint", None)
        targets = self.engines
        if endpoint is not None:
            targets = [e for e in self.engines if endpoint in e.endpoint_names]
            if not targets:
                names = sorted({n for e in self.engines for n in e.endpoint_names})
                raise UsageProblem(f"no configuration has an endpoint named {endpoint!r}; configured endpoints: {', '.join(names)}")
        results: list[tuple[FailoverEngine, ActionResult]] = []
        code = EXIT_OK
        for engine in targets:
            if not self.json:
                wait = f"; waiting up to {args.wait:g}s for the fleet" if args.wait > 0 else ""
                self.print(f"{command}{' to ' + endpoint if endpoint else ''} (configuration {engine.name!r}){wait} ...")
            result = request(
                engine, cast("Action", command), endpoint, duration=getattr(args, "duration", None), reason=args.reason,
                force=bool(getattr(args, "force", False)), wait=args.wait,
            )
            results.append((engine, result))
            if not result.written_to:
                code = EXIT_ERROR
            elif not result.ok:
                code = max(code, EXIT_DEGRADED)
            if not self.json:
                self._report(engine, result)
        if self.json:
            self.emit_json({"configurations": [result_json(e, r) for e, r in results], "code": code})
        return code

    def _report(self, engine: FailoverEngine, result: ActionResult) -> None:
        s = self.style
        ov = result.override
        if not result.written_to:
            self.print(f"{s('FAILED', 'red', 'bold')}  the override could not be written to any endpoint:")
            for name, error in result.failed.items():
                self.print(f"  {name}: {error}")
            self.print(s("  → nothing changed anywhere; check that this host reaches the endpoints, then retry", "dim"))
            return
        self.print(f"record: {ov.describe()}; written to {', '.join(result.written_to)}")
        for name, error in result.failed.items():
            self.print(s(f"  not written to {name}: {error}", "yellow"))
            self.print(s(f"  → processes copy the record to {name} once it is reachable again", "dim"))
        if self.args.wait <= 0:
            self.print("not waiting for the fleet (--wait 0): check with `geofailover status`")
            return
        total = len(result.moved) + len(result.stragglers)
        if total == 0:
            prefix = engine.config.control_key_prefix
            self.print(s("NOTE", "cyan", "bold") + f"  no running process reports heartbeats for configuration {engine.name!r} (key prefix {prefix!r})")
            self.print(s("  → processes that start later follow the record; if applications run now, check their "
                         "configuration name, key prefix and control_plane setting", "dim"))
            return
        if result.ok:
            where = Counter(hb.active for hb in result.moved)
            spread = ", ".join(f"{n} on {a}" for a, n in where.items())
            self.print(f"{s('OK', 'green', 'bold')}  all {total} process{'es' if total != 1 else ''} followed in {result.waited:.1f}s ({spread})")
            return
        self.print(f"{s('STRAGGLERS', 'yellow', 'bold')}  {len(result.stragglers)} of {total} processes did not follow within {self.args.wait:g}s:")
        for hb in result.stragglers:
            self.print(f"  {straggler_line(hb, ov.id)}")
        self.print(s("  → see those processes' logs (logger 'geofailover'); a target unhealthy from their host needs its network "
                     "fixed, or use --force", "dim"))

    # -- demo -----------------------------------------------------------------------------

    def demo(self) -> int:
        return demo.run(self.args, self.out, style=self.style)


class UsageProblem(Exception):
    """A mistake on the command line that argparse cannot see (unknown endpoint, name)."""



__all__ = ["Invocation", "UsageProblem"]
