"""The ``geofailover`` command line (also ``python -m geofailover_core``).

``main`` is the contract the framework adapters call (``manage.py geofailover
...`` and ``flask geofailover ...`` pass their own engines and forward the
remaining arguments), so there is one implementation of every subcommand, its
output and its exit codes.

Subcommands: ``status [--json] [--watch]``, ``failover --to NAME [--for DURATION]
[--reason TEXT] [--force] [--wait SECONDS]``, ``failback``, ``pin NAME [--for
DURATION]``, ``unpin``, ``check [--json]``, ``demo [...]``. Configuration when
``engines`` is not given: ``--url`` (the ``;`` string), the ``GEOFAILOVER_URL``
environment variable, or ``--config FILE.toml`` (or ``GEOFAILOVER_CONFIG``).
Exit codes: 0 ok, 1 degraded or stragglers, 2 error (bad configuration, all
endpoints down, unknown endpoint).

Actions are fleet-wide: they go through the control plane
(:mod:`geofailover_core.control`), because this command runs in a process of
its own while the traffic is in the application's processes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, cast

from . import __version__
from .errors import ConfigurationError, GeoFailoverError

if TYPE_CHECKING:
    from .config import FailoverConfig
    from .control import Action, ActionResult, Heartbeat
    from .engine import FailoverEngine

ENV_URL = "GEOFAILOVER_URL"
ENV_CONFIG = "GEOFAILOVER_CONFIG"
EXIT_OK, EXIT_DEGRADED, EXIT_ERROR = 0, 1, 2

_DESCRIPTION = """\
Client-side geographic failover for Redis: look at and steer the whole fleet
of processes that share one configuration. Actions (failover, failback, pin,
unpin) are written to every reachable endpoint; each running process picks
them up within one health-check interval and reports back by heartbeat.
"""

_EPILOG = """\
configuration (when not given by a framework):
  --url 'redis://h1:6379/0?name=us-east&weight=2;redis://h2:6379/0?name=eu-west'
  $GEOFAILOVER_URL (same format), --config FILE.toml or $GEOFAILOVER_CONFIG.
  --name must be the configuration name your applications use (default 'default').

exit codes: 0 ok, 1 degraded or some processes did not follow, 2 error.
"""


# -- argument parsing --------------------------------------------------------------


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse that writes help to our stdout and never calls ``sys.exit``,
    because adapters call :func:`main` inside their own command frameworks."""

    def __init__(self, *args: Any, out: TextIO | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.out = out

    def _print_message(self, message: str, file: Any = None) -> None:
        if not message:
            return
        target = self.out if (file is None or file is sys.stdout) and self.out is not None else (file or sys.stderr)
        target.write(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self._print_message(message, sys.stderr)
        raise _Exit(status)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``500ms``, ``5m``, ``1h30m``, ``1.5h`` -> seconds (> 0)."""
    value = text.strip().lower().replace(" ", "")
    try:
        seconds = float(value)
    except ValueError:
        if not value or _DURATION_PART.sub("", value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a duration; write e.g. 90, 30s, 5m, 1h30m") from None
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(value))
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: a duration must be positive")
    return seconds


def _wait_seconds(text: str) -> float:
    """``--wait``: a duration, or 0 for "do not wait"."""
    if text.strip() in ("0", "0s", "0.0"):
        return 0.0
    return parse_duration(text)


def _common(target: argparse.ArgumentParser, *, configurable: bool) -> None:
    """Options accepted before or after the subcommand (defaults are filled in later,
    so that a value given before the subcommand is not overwritten by its parser)."""
    s = argparse.SUPPRESS
    parser = target.add_argument_group("common options")
    if configurable:
        parser.add_argument("--url", default=s, metavar="URLS", help=f"';'-separated endpoint URLs (default: ${ENV_URL})")
        parser.add_argument("--config", default=s, metavar="FILE", help=f"TOML file with the configuration (default: ${ENV_CONFIG})")
        parser.add_argument(
            "-o", "--option", action="append", default=s, metavar="KEY=VALUE",
            help="an engine or connection option, e.g. -o control_key_prefix=myapp (repeatable)",
        )
    parser.add_argument("--name", default=s, help="configuration name; must match the running applications' (default: 'default')")
    parser.add_argument("--json", action="store_true", default=s, help="machine-readable output")
    parser.add_argument("--color", choices=("auto", "always", "never"), default=s, help="colour output (default: auto = on a terminal)")
    parser.add_argument("-v", "--verbose", action="store_true", default=s, help="also show the library's log lines on stderr")


def build_parser(*, configurable: bool = True, out: TextIO | None = None, prog: str = "geofailover") -> argparse.ArgumentParser:
    """The parser of every subcommand (also used to render the usage text in docs)."""
    from . import demo

    parser = _Parser(
        prog=prog, description=_DESCRIPTION, epilog=_EPILOG if configurable else None, out=out,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"geofailover {__version__}")
    _common(parser, configurable=configurable)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    commands: list[argparse.ArgumentParser] = []

    def command(name: str, help: str, **kw: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, out=out, **kw)
        commands.append(p)  # common options are added last, so they come last in --help
        return p

    status = command("status", "endpoints, the fleet of running processes and the override in force")
    status.add_argument(
        "--watch", nargs="?", const=-1.0, type=parse_duration, metavar="SECONDS",
        help="refresh until Ctrl-C (every SECONDS; default: the health-check interval, at least 1s)",
    )
    status.add_argument("--count", type=int, default=None, metavar="N", help="with --watch: stop after N refreshes")

    def action(name: str, help: str, *, target: str | None, duration: bool, force: bool) -> None:
        p = command(name, help)
        if target == "option":
            p.add_argument("--to", required=True, dest="endpoint", metavar="NAME", help="endpoint to send traffic to")
        elif target == "positional":
            p.add_argument("endpoint", metavar="NAME", help="endpoint to pin traffic to")
        if duration:
            p.add_argument("--for", dest="duration", type=parse_duration, metavar="DURATION", help="lapse by itself after DURATION (90s, 10m, 1h)")
        p.add_argument("--reason", help="why (stored in the record, shown in status and in every process's log)")
        if force:
            p.add_argument("--force", action="store_true", help="even if the target looks unhealthy from here")
        p.add_argument(
            "--wait", type=_wait_seconds, default=10.0, metavar="SECONDS",
            help="how long to wait for the fleet's heartbeats to show the change (default 10; 0: do not wait)",
        )

    action("failover", "send the fleet's traffic to one endpoint now (until failback, or until that endpoint fails)",
           target="option", duration=True, force=True)
    action("failback", "end any failover or pin: the fleet returns to the highest-weight healthy endpoint", target=None, duration=False, force=False)
    action("pin", "keep the fleet on one endpoint; if it fails, traffic fails over and comes back to it when it recovers",
           target="positional", duration=True, force=True)
    action("unpin", "end a pin or failover; automatic rules (including failback after the grace period) resume",
           target=None, duration=False, force=False)
    command("check", "run every health check once; exit 0 all healthy, 1 degraded, 2 none healthy")
    for p in commands:
        _common(p, configurable=configurable)
    demo_parser = sub.add_parser(
        "demo", help="live failover demo on local Redis servers it starts itself",
        description=demo.DESCRIPTION, out=out, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo_parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the summary as JSON")
    demo_parser.add_argument("--color", choices=("auto", "always", "never"), default=argparse.SUPPRESS, help="colour output")
    demo_parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="also show the library's log lines")
    demo.add_arguments(demo_parser)
    return parser


# -- configuration -------------------------------------------------------------------


def _option_value(text: str) -> Any:
    """``-o key=VALUE``: VALUE as a TOML value when it parses as one (numbers, booleans), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def load_configs(args: argparse.Namespace, environ: dict[str, str] | os._Environ[str] | None = None) -> list[FailoverConfig]:
    """The configuration from ``--config``/``--url``, else ``$GEOFAILOVER_URL``/``$GEOFAILOVER_CONFIG``."""
    from .config import FailoverConfig

    env = os.environ if environ is None else environ
    url: str | None = getattr(args, "url", None)
    path: str | None = getattr(args, "config", None)
    if url and path:
        raise ConfigurationError("--url/--config", "both given", "pass one of them")
    if not url and not path:
        url = env.get(ENV_URL) or None
        path = None if url else (env.get(ENV_CONFIG) or None)
    data: dict[str, Any]
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigurationError("--config", f"no such file: {path}", "check the path") from None
        except OSError as exc:
            raise ConfigurationError("--config", f"cannot read {path}: {exc.strerror}", "check the path and its permissions") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError("--config", f"{path} is not valid TOML ({exc})", "fix the syntax at the position shown") from None
        table = raw.get("geofailover", raw)
        if not isinstance(table, dict):
            raise ConfigurationError("--config", f"{path}: [geofailover] must be a table", "write the options at the top level or under [geofailover]")
        data = dict(table)
    elif url:
        data = {"endpoints": url}
    else:
        raise ConfigurationError(
            "--url", "no configuration given",
            f"pass --url 'redis://host:6379/0?name=us-east;redis://...', set ${ENV_URL}, or pass --config FILE.toml",
        )
    for item in getattr(args, "option", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError("-o", f"{item!r} is not KEY=VALUE", "write e.g. -o control_key_prefix=myapp")
        data[key.strip()] = _option_value(value.strip())
    name = getattr(args, "name", None)
    if name:
        data["name"] = name
    return [FailoverConfig.from_dict(data)]


# -- output helpers ---------------------------------------------------------------------


class Style:
    """ANSI colour only when asked for or on a terminal (and not with NO_COLOR)."""

    CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}

    def __init__(self, out: TextIO, mode: str = "auto") -> None:
        if mode == "always":
            self.enabled = True
        elif mode == "never" or os.environ.get("NO_COLOR"):
            self.enabled = False
        else:
            isatty = getattr(out, "isatty", None)
            self.enabled = bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"
        encoding = (getattr(out, "encoding", None) or "utf-8").lower()
        self.unicode = "utf" in encoding

    def __call__(self, text: str, *styles: str) -> str:
        if not self.enabled or not styles or not text:
            return text
        codes = ";".join(self.CODES[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def sym(self, fancy: str, plain: str) -> str:
        return fancy if self.unicode else plain


Cell = str | tuple[str, tuple[str, ...]]


def _table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], style: Style, indent: str = "") -> list[str]:
    plain = [[c if isinstance(c, str) else c[0] for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in plain]) for i, h in enumerate(headers)]
    lines = [indent + style("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(), "bold")]
    for row in rows:
        cells = []
        for cell, width in zip(row, widths, strict=True):
            text, styles = (cell, ()) if isinstance(cell, str) else cell
            cells.append(style(text, *styles) + " " * (width - len(text)))
        lines.append(indent + "  ".join(cells).rstrip())
    return lines


def _clock(ts: float | None) -> str:
    if ts is None:
        return "-"
    local = time.localtime(ts)
    if time.strftime("%Y-%m-%d", local) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", local)
    return time.strftime("%Y-%m-%d %H:%M:%S", local)


def _ago(seconds: float | None) -> str:
    from .control import format_duration

    return "-" if seconds is None else f"{format_duration(max(0.0, seconds))} ago"


HEALTH_STYLE = {"healthy": ("green",), "unhealthy": ("red",), "inconclusive": ("yellow",), "unknown": ("dim",)}
BREAKER_STYLE = {"closed": ("green",), "open": ("red",), "half-open": ("yellow",)}


# -- status ----------------------------------------------------------------------------------


def _hold_text(hold: dict[str, Any] | None, remaining: float | None) -> str:
    from .control import format_duration

    if not hold:
        return "-"
    kind = "pin" if hold.get("pinned") else "held"
    left = f" ({format_duration(remaining)} left)" if remaining is not None else ""
    return f"{kind} {hold.get('endpoint')}{left}"


def _process_row(p: dict[str, Any], majority: str | None, style: Style) -> list[Cell]:
    """One fleet row. Times in a heartbeat are its writer's clock: only differences
    between them are used, so a skewed clock does not distort the ages shown."""
    from .control import format_duration

    age = float(p["age"])
    hold = p.get("hold")
    remaining = None
    if hold and hold.get("until") is not None:
        remaining = float(hold["until"]) - float(p["at"]) - age
    last = p.get("last_failover")
    last_text = "-"
    if last and last.get("kind") in ("failover", "failback", "all_down", "recovered"):
        ago = float(p["at"]) - float(last.get("timestamp") or p["at"]) + age
        last_text = f"{last['kind']} {last.get('from_endpoint') or '-'}>{last.get('to_endpoint') or '-'} {format_duration(ago)} ago"
    active = p.get("active") or "NONE"
    active_cell: Cell = (active, ("red",)) if p.get("active") is None else (active, ("yellow",)) if active != majority else active
    since = float(p["at"]) - float(p["since"]) + age
    beat: Cell = _ago(age)
    if p.get("clock_skewed"):
        beat = (f"{_ago(age)} (clock {p['clock_offset']:+.1f}s)", ("yellow",))
    return [p["key"], p.get("app") or "-", active_cell, format_duration(since), _hold_text(hold, remaining), last_text, beat, p.get("version", "?")]


def _status_verdict(st: dict[str, Any]) -> tuple[int, list[tuple[str, str, str]]]:
    """Exit code and (level, headline, what to do) lines an operator can act on."""
    from .control import format_duration

    lines: list[tuple[str, str, str]] = []
    code = EXIT_OK
    endpoints = st["endpoints"]
    healthy = [e for e in endpoints if e["health"] == "healthy"]
    fleet = st["fleet"]
    cp = st["control_plane"]
    if not healthy:
        code = EXIT_ERROR
        lines.append((
            "DOWN", "no endpoint answers health checks from this host",
            "commands fail fast with NoHealthyEndpointError; check the Redis servers and the network path from here",
        ))
    fleet_active = Counter(p["active"] for p in fleet).most_common(1)[0][0] if fleet else None
    serving = fleet_active or st["active"]
    serving_weight = next((e["weight"] for e in endpoints if e["name"] == serving), None)
    for e in endpoints:
        if e["health"] != "healthy" and healthy:
            code = max(code, EXIT_DEGRADED)
            if serving_weight is not None and e["weight"] > serving_weight:
                todo = f"traffic is on {serving} and returns by itself once {e['name']} has been healthy for failback_grace_period"
            else:
                todo = "it is a standby: nothing moves now, but it cannot take traffic if the active endpoint fails"
            lines.append((
                "DEGRADED", f"{e['name']} is {e['health']}: {e['health_detail'] or e.get('last_error') or 'no detail'}",
                f"{todo}; check that server and the network to it from here",
            ))
    override = st.get("override")
    if override and override["in_force"]:
        left = f", lapses in {format_duration(override['remaining'])}" if override.get("remaining") is not None else ""
        undo = "geofailover unpin" if override["action"] == "pin" else "geofailover failback"
        lines.append(("NOTE", f"operator override in force: {override['description']}{left}", f"automatic failback is suspended; end it with `{undo}`"))
    if cp["enabled"]:
        if not fleet:
            lines.append((
                "NOTE", f"no process has reported a heartbeat for configuration {st['name']!r} under key prefix {cp['prefix']!r}",
                "if applications are running: do they use this configuration name and key prefix, with control_plane on?",
            ))
        for d in st["disagreements"]:
            code = max(code, EXIT_DEGRADED)
            why = f" ({d['note']})" if d.get("note") else ""
            lines.append((
                "SPLIT", f"{d['key']} ({d['app'] or 'no label'}) uses {d['active'] or 'no endpoint'} while most use {d['majority']}{why}",
                "it may not reach that endpoint; check its log (logger 'geofailover') and its host's network",
            ))
        split = {d["key"] for d in st["disagreements"]}
        for p in fleet:
            if p.get("note") and p["key"] not in split:
                lines.append(("NOTE", f"{p['key']}: {p['note']}", "see that process's log (logger 'geofailover')"))
            if p.get("clock_skewed"):
                lines.append((
                    "CLOCK", f"{p['key']}'s clock is {p['clock_offset']:+.1f}s off the Redis server's",
                    f"fix time sync (NTP) on {p['host']}; expiry and ages are measured on Redis's clock, but its logs will disagree",
                ))
        for name, error in cp.get("unreachable", {}).items():
            lines.append(("NOTE", f"control-plane keys on {name} not read: {error}", "processes that report only there are not listed"))
    else:
        lines.append((
            "NOTE", "control_plane is off for this configuration",
            "the fleet is not listed and failover commands cannot reach other processes; enable control_plane in the apps' configuration",
        ))
    if code == EXIT_OK and not any(level in ("DOWN", "DEGRADED", "SPLIT", "CLOCK") for level, _, _ in lines):
        agree = f"; {len(fleet)} process{'es' if len(fleet) != 1 else ''} on {fleet[0]['active']}" if fleet else ""
        lines.insert(0, ("OK", f"all {len(endpoints)} endpoints healthy{agree}", ""))
    return code, lines


def render_status(st: dict[str, Any], style: Style) -> tuple[int, str]:
    """One configuration's status as text for people."""
    from .control import format_duration

    out: list[str] = []
    cp = st["control_plane"]
    header = f"configuration {style(repr(st['name']), 'bold')}"
    if st.get("app_label"):
        header += f" (app {st['app_label']})"
    header += f"  key prefix {cp['prefix']!r}" if cp["enabled"] else "  control plane off"
    out.append(header)
    override = st.get("override")
    if override:
        state = "in force" if override["in_force"] else "no longer in force"
        if override.get("remaining") is not None and override["in_force"]:
            state += f", lapses in {format_duration(override['remaining'])}"
        out.append(f"override: {override['description']}, {_ago(override['age'])}, {state}")
        stale = {k: v for k, v in override["copies"].items() if v != "current"}
        if stale:
            # Processes copy the record there themselves; shown so nobody is surprised meanwhile.
            out.append(style("          copies: " + ", ".join(f"{k} {v}" for k, v in override["copies"].items()), "dim"))
    elif cp["enabled"]:
        out.append("override: none")
    out.append("")
    fleet = st["fleet"]
    per_endpoint = Counter(p["active"] for p in fleet)
    rows: list[list[Cell]] = []
    details: dict[int, str] = {}
    for i, e in enumerate(st["endpoints"]):
        latency = "-" if e["latency_ms"] is None else f"{e['latency_ms']:.1f} ms"
        if fleet:
            n = per_endpoint.get(e["name"], 0)
            active: Cell = (f"{n} of {len(fleet)} processes", ("cyan",)) if n else "-"
        else:
            active = (style.sym("●", "*") + " (this host's view)", ("cyan",)) if e["active"] else "-"
        rows.append([
            e["name"], e["url"], f"{e['weight']:g}", (e["health"], HEALTH_STYLE.get(e["health"], ())),
            (e["breaker"], BREAKER_STYLE.get(e["breaker"], ())), latency, active,
        ])
        if e["health"] != "healthy" and (e["health_detail"] or e.get("last_error")):
            details[i] = e["health_detail"] or e["last_error"]
    table = _table(["ENDPOINT", "URL", "WEIGHT", "HEALTH", "BREAKER", "LATENCY", "ACTIVE"], rows, style)
    out.append(table[0])
    for i, line in enumerate(table[1:]):
        out.append(line)
        if i in details:
            out.append(style(f"  {style.sym('└', '`')} {details[i]}", "dim"))
    if cp["enabled"]:
        out.append("")
        if fleet:
            majority = Counter(p["active"] for p in fleet).most_common(1)[0][0]
            out.append(style(f"FLEET  {len(fleet)} process{'es' if len(fleet) != 1 else ''}", "bold"))
            out.extend(_table(
                ["PROCESS", "APP", "ACTIVE", "FOR", "HOLD", "LAST SWITCH", "HEARTBEAT", "VERSION"],
                [_process_row(p, majority, style) for p in fleet], style,
            ))
        else:
            out.append(style("FLEET  no live heartbeats", "bold"))
    code, verdict = _status_verdict(st)
    out.append("")
    colours = {"OK": ("green", "bold"), "DOWN": ("red", "bold"), "SPLIT": ("red", "bold"), "DEGRADED": ("yellow", "bold")}
    for level, head, todo in verdict:
        out.append(f"{style(level, *colours.get(level, ('cyan',)))}  {head}")
        if todo:
            out.append(f"{' ' * (len(level) + 2)}{style(style.sym('→', '->') + ' ' + todo, 'dim')}")
    return code, "\n".join(out)


# -- the runner ---------------------------------------------------------------------------------


class _Run:
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
        from .control import fleet_status

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
            period = watch if watch > 0 else max(1.0, min(e.config.health_check_interval for e in self.engines))
            time.sleep(period)
            if not self.json and not self.style.enabled:
                self.print()

    # -- check ----------------------------------------------------------------------------

    def check(self) -> int:
        from .control import check

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
        from .control import request

        args = self.args
        command: str = args.command
        endpoint: str | None = getattr(args, "endpoint", None)
        targets = self.engines
        if endpoint is not None:
            targets = [e for e in self.engines if endpoint in e.endpoint_names]
            if not targets:
                names = sorted({n for e in self.engines for n in e.endpoint_names})
                raise _UsageProblem(f"no configuration has an endpoint named {endpoint!r}; configured endpoints: {', '.join(names)}")
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
            self.emit_json({"configurations": [_result_json(e, r) for e, r in results], "code": code})
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
            self.print(f"  {_straggler_line(hb, ov.id)}")
        self.print(s("  → see those processes' logs (logger 'geofailover'); a target unhealthy from their host needs its network "
                     "fixed, or use --force", "dim"))

    # -- demo -----------------------------------------------------------------------------

    def demo(self) -> int:
        from . import demo

        return demo.run(self.args, self.out, style=self.style)


class _UsageProblem(Exception):
    """A mistake on the command line that argparse cannot see (unknown endpoint, name)."""


def _straggler_line(hb: Heartbeat, override_id: str) -> str:
    app = f" ({hb.app})" if hb.app else ""
    if hb.override != override_id:
        why = "has not picked up the record yet (busy, or cannot read it from its endpoint)"
    elif hb.note:
        why = hb.note
    else:
        why = "picked up the record but traffic has not moved yet"
    return f"{hb.key}{app} on {hb.active or 'no endpoint'}: {why}"


def _result_json(engine: FailoverEngine, result: ActionResult) -> dict[str, Any]:
    from dataclasses import asdict

    return {
        "name": engine.name,
        "override": asdict(result.override),
        "written_to": result.written_to,
        "failed": result.failed,
        "moved": [asdict(hb) | {"key": hb.key} for hb in result.moved],
        "stragglers": [asdict(hb) | {"key": hb.key} for hb in result.stragglers],
        "ok": result.ok,
        "waited": round(result.waited, 3),
    }


def _select(engines: Sequence[FailoverEngine], name: str | None) -> list[FailoverEngine]:
    if not name:
        return list(engines)
    chosen = [e for e in engines if e.name == name]
    if not chosen:
        raise _UsageProblem(f"no configuration named {name!r} here; available: {', '.join(e.name for e in engines)}")
    return chosen


def main(
    argv: Sequence[str] | None = None,
    *,
    engines: Sequence[FailoverEngine] | None = None,
    stdout: TextIO | None = None,
    prog: str = "geofailover",
) -> int:
    """Run one CLI invocation; returns the exit code (never calls sys.exit).

    ``engines`` (from a framework adapter) replace ``--url``/``--config``. An
    engine that has not served traffic in this process yet is made a control-plane
    *observer*: a management command is not part of the serving fleet, so it
    sends no heartbeat.
    """
    out = stdout if stdout is not None else sys.stdout
    parser = build_parser(configurable=engines is None, out=out, prog=prog)
    try:
        args = parser.parse_args(list(argv) if argv is not None else sys.argv[1:])
    except _Exit as exc:
        return exc.code
    wants_json = bool(getattr(args, "json", False))

    def fail(message: str, code: int = EXIT_ERROR) -> int:
        if wants_json:
            out.write(json.dumps({"error": message, "code": code}) + "\n")
        else:
            sys.stderr.write(f"{prog}: error: {message}\n")
        return code

    log = logging.getLogger("geofailover")
    handler: logging.Handler | None = None
    if getattr(args, "verbose", False):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        if log.level == logging.NOTSET or log.level > logging.INFO:
            log.setLevel(logging.INFO)
    elif engines is None:
        handler = logging.NullHandler()  # our output says it all; no stray lastResort lines
        log.addHandler(handler)
    owned: list[FailoverEngine] = []
    try:
        if args.command == "demo":
            return _Run(args, out, [], owned=False).demo()
        if engines is None:
            from .engine import FailoverEngine

            owned = [FailoverEngine(config) for config in load_configs(args)]
            chosen = owned
        else:
            chosen = _select(engines, getattr(args, "name", None))
        for engine in chosen:
            if engine.control is not None and not engine.monitor.running:
                engine.control.observer = True
        run = _Run(args, out, chosen, owned=bool(owned))
        if args.command == "status":
            return run.status()
        if args.command == "check":
            return run.check()
        return run.action()
    except (ConfigurationError, _UsageProblem) as exc:
        return fail(str(exc))
    except GeoFailoverError as exc:  # unknown/unhealthy endpoint, no healthy endpoint
        return fail(str(exc))
    except ValueError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return 130
    finally:
        for engine in owned:
            engine.close()
        if handler is not None:
            log.removeHandler(handler)


def run() -> None:
    """Console-script entry point: ``geofailover ...``."""
    raise SystemExit(main())


__all__ = ["build_parser", "load_configs", "main", "parse_duration", "render_status", "run"]
