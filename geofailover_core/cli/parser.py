"""The ``geofailover`` command line's arguments: one parser for every front end.

The standalone command, ``manage.py geofailover``, ``flask geofailover`` and
``celery -A app geofailover`` all parse with :func:`build_parser`, so an
option means the same thing everywhere and a typo is reported the same way:
at the level it was typed (before the command: the top-level usage; after
it: that command's usage), with the nearest option suggested.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from .. import __version__, demo
from ..control.records import MAX_DURATION, check_reason

ENV_URL = "GEOFAILOVER_URL"
ENV_CONFIG = "GEOFAILOVER_CONFIG"
EXIT_OK, EXIT_DEGRADED, EXIT_ERROR, EXIT_NO_FLEET = 0, 1, 2, 3
EXIT_CODES = {
    EXIT_OK: "ok",
    EXIT_DEGRADED: "degraded, or some processes did not follow",
    EXIT_ERROR: "error",
    EXIT_NO_FLEET: "no fleet: no running process reports under this name, or nobody acknowledged",
}
# Which verdict one configuration's exit code keeps: an error first, then
# "cannot tell" (no fleet), then degraded. A larger number is not a worse one.
_PRECEDENCE = (EXIT_OK, EXIT_DEGRADED, EXIT_NO_FLEET, EXIT_ERROR)

DESCRIPTION = """\
Client-side geographic failover for Redis: look at and steer the whole fleet
of processes that share one configuration. Actions (failover, failback, pin,
unpin, override clear) are written to every reachable endpoint; each running
process picks them up within one health-check interval and reports back by
heartbeat. This command only observes: it never fails over on its own account.
"""

CONFIG_EPILOG = """\
configuration (when not given by a framework):
  --url 'redis://h1:6379/0?name=us-east&weight=2;redis://h2:6379/0?name=eu-west'
  $GEOFAILOVER_URL (same format), --config FILE.toml or $GEOFAILOVER_CONFIG.
  --name must be the configuration name your applications use (default 'default').

"""

EXIT_EPILOG = """\
exit codes:
  0  ok: every endpoint healthy and the fleet agrees; every live process followed the action
  1  degraded: an endpoint unhealthy (from here or in the fleet), processes disagree, an
     invalid override record, or some processes did not follow the action
  2  error: bad arguments or configuration, nothing written, no endpoint healthy,
     unknown or unhealthy target
  3  no fleet: no running process reports heartbeats under this configuration name and
     key prefix (status), or nobody acknowledged the action: check --name and the key prefix
  several configurations: 2 if any is 2; 3 if all are 3; else 1 if any is not 0
"""


def worst(codes: Sequence[int]) -> int:
    """The exit code of one configuration's verdict lines."""
    return max(codes, key=_PRECEDENCE.index, default=EXIT_OK)


def combine(codes: Sequence[int]) -> int:
    """The exit code of several configurations: 2 if any is an error; 3 only if no
    configuration has anyone (a configuration nobody uses beside others that
    answered, such as a Celery result backend not used yet, is degraded: 1)."""
    if EXIT_ERROR in codes:
        return EXIT_ERROR
    if codes and all(code == EXIT_NO_FLEET for code in codes):
        return EXIT_NO_FLEET
    return EXIT_DEGRADED if any(codes) else EXIT_OK


class ParserExit(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse that writes help to our stdout, never calls ``sys.exit`` (adapters
    call :func:`main` inside their own command frameworks), and reports an unknown
    option at the level it was typed, with a suggestion."""

    def __init__(self, *args: Any, out: TextIO | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.out = out
        self.commands: dict[str, Parser] = {}
        self.configurable = True

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

    def parse_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None) -> argparse.Namespace:  # type: ignore[override]
        argv = list(sys.argv[1:] if args is None else args)
        self._check_leading_options(argv)
        parsed, extras = self.parse_known_args(argv, namespace)
        if extras:  # left over by the command's parser: report them there, with its usage
            owner = self.commands.get(getattr(parsed, "command", None) or "", self)
            owner.error(owner.unrecognized(extras))
        return parsed

    def option_strings(self) -> dict[str, bool]:
        """Every option string of this parser -> whether it takes a value."""
        return {s: action.nargs != 0 for action in self._actions for s in action.option_strings}

    def _check_leading_options(self, argv: list[str]) -> None:
        """Options before the command belong to this parser: an unknown one is reported
        here, rather than its value being taken for the command's name."""
        options = self.option_strings()
        i = 0
        while i < len(argv) and argv[i].startswith("-") and argv[i] not in ("-", "--"):
            name, eq, _ = argv[i].partition("=")
            if not name.startswith("--"):
                name = name[:2]  # -oKEY=VALUE
            matches = [name] if name in options else [o for o in options if name.startswith("--") and o.startswith(name)]
            if len(matches) != 1:  # unknown, or an ambiguous abbreviation (argparse says which)
                if not matches:
                    self.error(self.unrecognized(argv[i:]))
                return
            glued = bool(eq) or (not argv[i].startswith("--") and len(argv[i]) > 2)
            i += 1 if glued or not options[matches[0]] else 2

    def unrecognized(self, extras: Sequence[str]) -> str:
        """``unrecognized argument --urll; did you mean --url?`` (and where an option of
        another level or of the standalone command belongs)."""
        token = next((t for t in extras if t.startswith("-") and t != "-"), extras[0])
        name = token.partition("=")[0]
        if not token.startswith("-"):
            return f"unrecognized argument {token!r}"
        message = f"unrecognized argument {name}"
        if name in ("--url", "--config", "-o", "--option") and not self.configurable:
            return f"{message}; this command uses the application's configuration"
        owners = [command for command, parser in self.commands.items() if name in parser.option_strings()]
        if owners:
            return f"{message} before the command; it is an option of {', '.join(owners)}: put it after the command"
        close = difflib.get_close_matches(name, list(self.option_strings()), n=1, cutoff=0.6)
        return f"{message}; did you mean {close[0]}?" if close else message


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


def pin_duration(text: str) -> float:
    """``--for``: a duration of at most a year (what every process accepts)."""
    seconds = parse_duration(text)
    if seconds > MAX_DURATION:
        raise argparse.ArgumentTypeError(f"{text!r}: at most {MAX_DURATION / 86400:.0f} days")
    return seconds


def wait_seconds(text: str) -> float:
    """``--wait``: a duration, or 0 for "do not wait"."""
    if text.strip() in ("0", "0s", "0.0"):
        return 0.0
    return parse_duration(text)


def reason_text(text: str) -> str:
    """``--reason``: refused here, before anything is written, if every process would reject it."""
    try:
        return check_reason(text) or ""
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_common_options(target: argparse.ArgumentParser, *, configurable: bool) -> None:
    """Options accepted before or after the command (defaults are filled in later,
    so that a value given before the command is not overwritten by its parser)."""
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


def build_parser(*, configurable: bool = True, out: TextIO | None = None, prog: str = "geofailover") -> Parser:
    """The parser of every command (also used to render the usage text in docs)."""
    parser = Parser(
        prog=prog, description=DESCRIPTION, epilog=(CONFIG_EPILOG if configurable else "") + EXIT_EPILOG, out=out,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.configurable = configurable
    parser.add_argument("--version", action="version", version=f"geofailover {__version__}")
    add_common_options(parser, configurable=configurable)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)

    def command(name: str, help: str, **kw: Any) -> Parser:
        p: Parser = sub.add_parser(name, help=help, description=help, out=out, **kw)
        p.configurable = configurable
        parser.commands[name] = p  # common options are added last, so they come last in --help
        return p

    status = command("status", "the fleet of running processes, what they and this host see of each endpoint, the override in force")
    status.add_argument(
        "--watch", nargs="?", const=-1.0, type=parse_duration, metavar="SECONDS",
        help="refresh until Ctrl-C (every SECONDS; default: the health-check interval, at least 1s)",
    )
    status.add_argument("--count", type=int, default=None, metavar="N", help="with --watch: stop after N refreshes")

    def action(p: Parser, *, duration: bool, force: str) -> None:
        if duration:
            p.add_argument("--for", dest="duration", type=pin_duration, metavar="DURATION", help="lapse by itself after DURATION (90s, 10m, 1h)")
        p.add_argument("--reason", type=reason_text, help="why, one line (stored in the record, shown in status and in every process's log)")
        p.add_argument("--force", action="store_true", help=force)
        p.add_argument(
            "--wait", type=wait_seconds, default=10.0, metavar="SECONDS",
            help="how long to wait for the fleet's heartbeats to show the change (default 10; 0: do not wait)",
        )

    overwrite = "overwrite whatever override record is stored, even one newer than this"
    p = command("failover", "send the fleet's traffic to one endpoint now (until failback, or until that endpoint fails)")
    p.add_argument("--to", required=True, dest="endpoint", metavar="NAME", help="endpoint to send traffic to")
    action(p, duration=True, force=f"even if the target looks unhealthy from here; also {overwrite}")
    p = command("failback", "end any failover or pin: the fleet returns to the highest-weight healthy endpoint")
    action(p, duration=False, force=overwrite)
    p = command("pin", "keep the fleet on one endpoint; if it fails, traffic fails over and comes back to it when it recovers")
    p.add_argument("endpoint", metavar="NAME", help="endpoint to pin traffic to")
    action(p, duration=True, force=f"even if the target looks unhealthy from here; also {overwrite}")
    p = command("unpin", "end a pin or failover; automatic rules (including failback after the grace period) resume")
    action(p, duration=False, force=overwrite)
    p = command(
        "override",
        "the override record itself: `override clear` replaces whatever is stored (an invalid record, a stale one) "
        "with a record that changes nothing; every process keeps its current endpoint",
    )
    p.add_argument("operation", choices=("clear",), help="clear: replace the stored record by one that changes nothing")
    p.add_argument("--reason", type=reason_text, help="why, one line")
    p.add_argument("--wait", type=wait_seconds, default=10.0, metavar="SECONDS", help="how long to wait for the fleet to acknowledge (default 10)")
    command("check", "run every health check once from this host; exit 0 all healthy, 1 degraded, 2 none healthy")
    for command_parser in parser.commands.values():
        add_common_options(command_parser, configurable=configurable)
    demo_parser: Parser = sub.add_parser(
        "demo", help="live failover demo on local Redis servers it starts itself",
        description=demo.DESCRIPTION, out=out, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.commands["demo"] = demo_parser
    demo_parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the summary as JSON")
    demo_parser.add_argument("--color", choices=("auto", "always", "never"), default=argparse.SUPPRESS, help="colour output")
    demo_parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="also show the library's log lines")
    demo.add_arguments(demo_parser)
    return parser


__all__ = [
    "ENV_CONFIG",
    "ENV_URL",
    "EXIT_CODES",
    "EXIT_DEGRADED",
    "EXIT_ERROR",
    "EXIT_NO_FLEET",
    "EXIT_OK",
    "Parser",
    "ParserExit",
    "build_parser",
    "combine",
    "parse_duration",
    "reason_text",
    "wait_seconds",
    "worst",
]
