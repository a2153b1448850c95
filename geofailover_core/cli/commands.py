"""One invocation of the command line: ``status``, ``check`` and the fleet actions."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, TextIO, cast

from .. import demo
from ..control import check, fleet_status, request
from ..control.fleet import refusal
from ..control.records import Action, ActionResult
from ..engine import FailoverEngine
from ..errors import ConfigurationError, UnhealthyEndpointError
from ..masking import MASK
from ..terminal import HEALTH_STYLE, Style
from .parser import EXIT_DEGRADED, EXIT_ERROR, EXIT_NO_FLEET, EXIT_OK, combine
from .render import count, render_status, result_json, straggler_line

_SECRET_OPTIONS = ("password", "token", "secret", "pass", "ssl_password", "username")


class Invocation:
    """One invocation: parsed arguments, output stream, engines."""

    def __init__(self, args: argparse.Namespace, out: TextIO, engines: list[FailoverEngine], owned: bool, prog: str = "geofailover") -> None:
        self.args = args
        self.out = out
        self.engines = engines
        self.owned = owned
        self.prog = prog
        self.json: bool = bool(getattr(args, "json", False))
        self.style = Style(out, getattr(args, "color", "auto"))

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def emit_json(self, data: Any) -> None:
        self.print(json.dumps(data, default=str, sort_keys=True))

    def command_line(self, sub: str) -> str:
        """``sub`` as the user would type it next: this command's program name and the
        options that chose the configuration (a URL carries passwords: shown as ``…``)."""
        parts = [self.prog]
        if getattr(self.args, "url", None):
            parts.append("--url …")
        if getattr(self.args, "config", None):
            parts.append(f"--config {self.args.config}")
        if getattr(self.args, "name", None):
            parts.append(f"--name {self.args.name}")
        for item in getattr(self.args, "option", None) or []:
            key, _, _ = item.partition("=")
            parts.append(f"-o {key.strip()}={MASK}" if key.strip().lower() in _SECRET_OPTIONS else f"-o {item}")
        return " ".join([*parts, sub])

    # -- status ---------------------------------------------------------------------------

    def status(self) -> int:
        watch = getattr(self.args, "watch", None)
        count_ = getattr(self.args, "count", None)
        if count_ is not None and count_ < 1:
            raise ConfigurationError("--count", f"must be >= 1, got {count_}", "give a positive number of refreshes")
        for engine in self.engines:
            engine.check_now()
        refreshes = 0
        while True:
            snapshots = [fleet_status(engine) for engine in self.engines]
            rendered = [render_status(st, self.style, self.command_line) for st in snapshots]
            code = combine([c for c, _ in rendered])
            if self.json:
                self.emit_json({"configurations": snapshots, "code": code})
            else:
                if watch is not None:
                    if self.style.enabled:
                        self.out.write("\x1b[H\x1b[2J")
                    self.print(self.style(f"geofailover status  {time.strftime('%Y-%m-%d %H:%M:%S')}  (Ctrl-C to stop)", "dim"))
                self.print("\n\n".join(text for _, text in rendered))
            refreshes += 1
            if watch is None or (count_ is not None and refreshes >= count_):
                return code
            period = watch if watch > 0 else max(1.0, min(e.config.probe_interval for e in self.engines))
            time.sleep(period)
            if not self.json and not self.style.enabled:
                self.print()

    # -- check ----------------------------------------------------------------------------

    def check(self) -> int:
        reports = []
        codes = []
        for engine in self.engines:
            c, report = check(engine)
            codes.append(c)
            reports.append(report)
        code = combine(codes)
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
        command: str = "clear" if args.command == "override" else args.command
        endpoint: str | None = getattr(args, "endpoint", None)
        force = bool(getattr(args, "force", False))
        targets = self.engines
        if endpoint is not None:
            targets = [e for e in self.engines if endpoint in e.endpoint_names]
            if not targets:
                names = sorted({n for e in self.engines for n in e.endpoint_names})
                raise UsageProblem(f"no configuration has an endpoint named {endpoint!r}; configured endpoints: {', '.join(names)}")
        results: list[dict[str, Any]] = []
        codes = []
        for engine in targets:
            if not self.json:
                wait = f"; waiting up to {args.wait:g}s for the fleet" if args.wait > 0 else ""
                what = "override clear" if command == "clear" else command
                self.print(f"{what}{' to ' + endpoint if endpoint else ''} (configuration {engine.name!r}){wait} ...")
            try:
                result = request(
                    engine, cast("Action", command), endpoint, duration=getattr(args, "duration", None), reason=args.reason,
                    force=force, wait=args.wait,
                )
            except UnhealthyEndpointError:
                assert endpoint is not None
                raise UsageProblem(refusal(engine, engine.endpoint(endpoint), "--force")) from None
            code = self._code(result)
            codes.append(code)
            results.append(result_json(engine, result, code))
            if not self.json:
                self._report(engine, result, force)
        code = combine(codes)
        if self.json:
            self.emit_json({"configurations": results, "code": code})
        return code

    def _code(self, result: ActionResult) -> int:
        if not result.written_to:
            return EXIT_ERROR
        if self.args.wait <= 0:
            return EXIT_NO_FLEET if not result.listening else EXIT_OK
        if not result.acknowledged:
            return EXIT_NO_FLEET
        return EXIT_OK if result.ok else EXIT_DEGRADED

    def _report(self, engine: FailoverEngine, result: ActionResult, forced: bool) -> None:
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
        prefix = engine.config.control_key_prefix
        nobody = (
            f"no running process reports heartbeats for configuration {engine.name!r} (key prefix {prefix!r})"
        )
        if self.args.wait <= 0:
            if not result.listening:
                self.print(s("NOBODY", "yellow", "bold") + f"  {nobody}: nothing acknowledges this record now")
            self.print(f"not waiting for the fleet (--wait 0): check with `{self.command_line('status')}`")
            return
        if not result.acknowledged:
            total = result.listening
            if total == 0:
                self.print(s("NOBODY", "yellow", "bold") + f"  nobody acknowledged: {nobody}")
                self.print(s("  → processes that start later follow the record; if applications run now, check the configuration "
                             "name (--name), the key prefix (-o control_key_prefix=...) and control_plane", "dim"))
            else:
                self.print(s("NOBODY", "yellow", "bold") + f"  nobody acknowledged: none of the {total} live processes picked the "
                           f"record up within {self.args.wait:g}s:")
                for hb in result.stragglers:
                    self.print(f"  {straggler_line(hb, ov.id)}")
                self.print(s("  → they may not reach the endpoints that hold the record; see their logs (logger 'geofailover')", "dim"))
            return
        total = len(result.moved) + len(result.stragglers)
        if result.ok:
            self.print(f"{s('OK', 'green', 'bold')}  all {total} process{'es' if total != 1 else ''} followed in {result.waited:.1f}s ({count(result.moved)})")
            return
        self.print(f"{s('STRAGGLERS', 'yellow', 'bold')}  {len(result.stragglers)} of {total} processes did not follow within {self.args.wait:g}s:")
        for hb in result.stragglers:
            self.print(f"  {straggler_line(hb, ov.id)}")
        fix = "a target unhealthy from their host needs its network fixed"
        if ov.action in ("failover", "pin") and not forced:
            fix += ", or repeat the command with --force to send them anyway"
        self.print(s(f"  → see those processes' logs (logger 'geofailover'); {fix}", "dim"))

    # -- demo -----------------------------------------------------------------------------

    def demo(self) -> int:
        return demo.run(self.args, self.out, style=self.style)


class UsageProblem(Exception):
    """A mistake on the command line that argparse cannot see (unknown endpoint, name)."""



__all__ = ["Invocation", "UsageProblem"]
