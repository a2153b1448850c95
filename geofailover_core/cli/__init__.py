"""The ``geofailover`` command line (also ``python -m geofailover_core``).

``main`` is the contract the framework adapters call (``manage.py geofailover
...``, ``flask geofailover ...`` and ``celery -A app geofailover ...`` pass
their own engines, forward the remaining arguments and name themselves in
``prog``, which every hint repeats), so there is one implementation of every
command, its output and its exit codes.

Commands: ``status [--json] [--watch]``, ``failover --to NAME [--for DURATION]
[--reason TEXT] [--force] [--wait SECONDS]``, ``failback [--force]``, ``pin NAME
[--for DURATION]``, ``unpin [--force]``, ``override clear``, ``check [--json]``,
``demo [...]``. Configuration when ``engines`` is not given: ``--url`` (the
``;`` string), the ``GEOFAILOVER_URL`` environment variable, or ``--config
FILE.toml`` (or ``GEOFAILOVER_CONFIG``).

Exit codes (:data:`.parser.EXIT_CODES`): 0 ok; 1 degraded (an endpoint
unhealthy from here or in the fleet, processes disagree, an invalid override
record, stragglers); 2 error (bad arguments or configuration, nothing written,
no endpoint healthy, unknown or unhealthy target); 3 no fleet (``status``: no
process reports heartbeats under this name and key prefix, so the fleet's
state is unknown; an action: nobody acknowledged it). Several
configurations combine as: 2 if any is 2; 3 if all are 3; else 1 if any is
not 0; else 0.

Actions are fleet-wide: they go through the control plane
(:mod:`geofailover_core.control`), because this command runs in a process of
its own while the traffic is in the application's processes. The command's
own engines only observe: they follow no override, fire no events and write
no heartbeat, and ``status`` reports their probes as *this host's view*
beside what the fleet reports.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from typing import TextIO

from ..engine import FailoverEngine, observing
from ..errors import ConfigurationError, GeoFailoverError
from ..registry import build_engine
from .commands import Invocation, UsageProblem
from .config import load_configs
from .parser import EXIT_CODES, EXIT_DEGRADED, EXIT_ERROR, EXIT_NO_FLEET, EXIT_OK, ParserExit, build_parser, parse_duration
from .render import render_status


def select_engines(engines: Sequence[FailoverEngine], name: str | None) -> list[FailoverEngine]:
    if not name:
        return list(engines)
    chosen = [e for e in engines if e.name == name]
    if not chosen:
        raise UsageProblem(f"no configuration named {name!r} here; available: {', '.join(e.name for e in engines)}")
    return chosen


def main(
    argv: Sequence[str] | None = None,
    *,
    engines: Sequence[FailoverEngine] | None = None,
    stdout: TextIO | None = None,
    prog: str = "geofailover",
) -> int:
    """Run one CLI invocation; returns the exit code (never calls sys.exit).

    ``engines`` (from a framework adapter) replace ``--url``/``--config``.
    The command process only observes: engines that have not served traffic
    in this process are *observers* while it runs (no events, signals or
    heartbeats, no override followed on their own account; see
    :func:`~geofailover_core.engine.observing`), and their log lines stay out
    of the report unless ``-v`` is given.
    """
    out = stdout if stdout is not None else sys.stdout
    parser = build_parser(configurable=engines is None, out=out, prog=prog)
    try:
        args = parser.parse_args(list(argv) if argv is not None else sys.argv[1:])
    except ParserExit as exc:
        return exc.code
    wants_json = bool(getattr(args, "json", False))
    verbose = bool(getattr(args, "verbose", False))

    def fail(message: str, code: int = EXIT_ERROR) -> int:
        if wants_json:
            out.write(json.dumps({"error": message, "code": code}) + "\n")
        else:
            sys.stderr.write(f"{prog}: error: {message}\n")
        return code

    log = logging.getLogger("geofailover")
    handler: logging.Handler | None = None
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        if log.level == logging.NOTSET or log.level > logging.INFO:
            log.setLevel(logging.INFO)
    elif engines is None:
        handler = logging.NullHandler()  # our output says it all; no stray lastResort lines
        log.addHandler(handler)
    owned: list[FailoverEngine] = []
    quiet: _ObserverLogs | None = None
    try:
        if args.command == "demo":
            return Invocation(args, out, [], owned=False).demo()
        if engines is None:
            owned = [build_engine(config, observer=True) for config in load_configs(args)]
            chosen = owned
        else:
            chosen = select_engines(engines, getattr(args, "name", None))
        with observing(chosen) as observers:
            if observers and not verbose:
                quiet = _ObserverLogs({e.name for e in observers})
                log.addFilter(quiet)
            run = Invocation(args, out, chosen, owned=bool(owned), prog=prog)
            if args.command == "status":
                return run.status()
            if args.command == "check":
                return run.check()
            return run.action()
    except (ConfigurationError, UsageProblem) as exc:
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
        if quiet is not None:
            log.removeFilter(quiet)
        if handler is not None:
            log.removeHandler(handler)


class _ObserverLogs(logging.Filter):
    """Drop observer engines' own log lines (``geofailover[<name>]: ...``): they
    describe this command's probes, and the report says what matters."""

    def __init__(self, names: set[str]) -> None:
        super().__init__()
        self.prefixes = tuple(f"geofailover[{name}]" for name in names)

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def run() -> None:
    """Console-script entry point: ``geofailover ...``."""
    raise SystemExit(main())


__all__ = [
    "EXIT_CODES",
    "EXIT_DEGRADED",
    "EXIT_ERROR",
    "EXIT_NO_FLEET",
    "EXIT_OK",
    "build_parser",
    "load_configs",
    "main",
    "parse_duration",
    "render_status",
    "run",
]
