"""The ``geofailover`` command line's arguments: one parser for every front end.

The standalone command, ``manage.py geofailover``, ``flask geofailover`` and
``celery -A app geofailover`` all parse with :func:`build_parser`, so an
option means the same thing everywhere and a typo is reported the same way.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, NoReturn, TextIO

from .. import __version__, demo

ENV_URL = "GEOFAILOVER_URL"
ENV_CONFIG = "GEOFAILOVER_CONFIG"
EXIT_OK, EXIT_DEGRADED, EXIT_ERROR = 0, 1, 2

DESCRIPTION = """\
Client-side geographic failover for Redis: look at and steer the whole fleet
of processes that share one configuration. Actions (failover, failback, pin,
unpin) are written to every reachable endpoint; each running process picks
them up within one health-check interval and reports back by heartbeat.
"""

EPILOG = """\
configuration (when not given by a framework):
  --url 'redis://h1:6379/0?name=us-east&weight=2;redis://h2:6379/0?name=eu-west'
  $GEOFAILOVER_URL (same format), --config FILE.toml or $GEOFAILOVER_CONFIG.
  --name must be the configuration name your applications use (default 'default').

exit codes: 0 ok, 1 degraded or some processes did not follow, 2 error.
"""

class ParserExit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Parser(argparse.ArgumentParser):
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
        raise ParserExit(status)

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


def wait_seconds(text: str) -> float:
    """``--wait``: a duration, or 0 for "do not wait"."""
    if text.strip() in ("0", "0s", "0.0"):
        return 0.0
    return parse_duration(text)


def add_common_options(target: argparse.ArgumentParser, *, configurable: bool) -> None:
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
    parser = Parser(
        prog=prog, description=DESCRIPTION, epilog=EPILOG if configurable else None, out=out,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"geofailover {__version__}")
    add_common_options(parser, configurable=configurable)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)

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
            "--wait", type=wait_seconds, default=10.0, metavar="SECONDS",
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
        add_common_options(p, configurable=configurable)
    demo_parser = sub.add_parser(
        "demo", help="live failover demo on local Redis servers it starts itself",
        description=demo.DESCRIPTION, out=out, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo_parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the summary as JSON")
    demo_parser.add_argument("--color", choices=("auto", "always", "never"), default=argparse.SUPPRESS, help="colour output")
    demo_parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="also show the library's log lines")
    demo.add_arguments(demo_parser)
    return parser


__all__ = [
    "ENV_CONFIG",
    "ENV_URL",
    "EXIT_DEGRADED",
    "EXIT_ERROR",
    "EXIT_OK",
    "Parser",
    "ParserExit",
    "build_parser",
    "parse_duration",
    "wait_seconds",
]
