"""``flask geofailover ...``: the core CLI, run on this app's engines.

Every subcommand, its output and its exit codes belong to
:func:`geofailover_core.cli.main` (which also keeps this process an observer:
no signals fire); this command only picks the engines of the app's
``GeoFailover`` instances (all, or those named with ``--name``) and forwards
the rest of the command line.
"""

from __future__ import annotations

import sys

import click
from flask import current_app
from flask.cli import with_appcontext

from geofailover_core import cli as core_cli
from geofailover_core.engine import FailoverEngine

from .state import states

PROG = "flask geofailover"
_USAGE = """\
Usage: flask geofailover [--name NAME]... COMMAND [ARGS]...

  Fleet-wide Redis failover control for this app's GeoFailover instances.

  --name NAME  act on this GeoFailover instance only (repeatable; default: all
               instances initialised on the app: {names})

  COMMAND is one of the core CLI's: status [--json] [--watch [SECONDS]],
  failover --to NAME [--for DURATION] [--reason TEXT] [--force] [--wait SECONDS],
  failback, pin NAME [--for DURATION], unpin, check [--json].
"""


def select_engines(names: tuple[str, ...]) -> list[FailoverEngine]:
    """Engines of the current app's instances named in ``names`` (all when empty).

    A name is an instance name (``GeoFailover(name="sessions")``) or the
    configuration name of one (``GEOFAILOVER_SESSIONS_OPTIONS["name"]``), which is
    what the core CLI's own ``--name`` after the subcommand matches.
    """
    found = states(current_app)
    if not found:
        raise click.UsageError(f"no GeoFailover instance is initialised on app {current_app.name!r}; call geo.init_app(app) in the app factory")
    by_engine_name = {state.engine.name: state for state in found.values()}
    engines: list[FailoverEngine] = []
    for name in names or tuple(found):
        state = found.get(name) or by_engine_name.get(name)
        if state is None:
            raise click.BadParameter(f"no GeoFailover instance named {name!r} on this app; configured: {', '.join(found)}", param_hint="'--name'")
        engines.append(state.engine)
    return list(dict.fromkeys(engines))  # two instances may share one configuration


@click.command(
    "geofailover",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False, "help_option_names": []},
    short_help="Redis geo-failover: status, failover, failback, pin, unpin, check.",
)
@click.option("--name", "names", multiple=True, metavar="NAME", help="GeoFailover instance to act on (repeatable).")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@with_appcontext
def geofailover_command(names: tuple[str, ...], args: tuple[str, ...]) -> None:
    """Redis geo-failover for this app's fleet: status, failover, failback, pin, unpin, check."""
    argv = list(args)
    if not argv or argv[0] in ("-h", "--help", "help"):
        click.echo(_USAGE.format(names=", ".join(states(current_app)) or "none"))
        raise click.exceptions.Exit(core_cli.main(["--help"], engines=[], stdout=sys.stdout, prog=PROG) if argv else 2)
    raise click.exceptions.Exit(core_cli.main(argv, engines=select_engines(names), stdout=sys.stdout, prog=PROG))
