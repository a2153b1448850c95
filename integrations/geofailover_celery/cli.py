"""``celery -A proj geofailover status|failover|failback|pin|unpin|check [--json]``.

The ``celery.commands`` plugin: the core's one command line
(:func:`geofailover_core.cli.main`) on the app's broker and backend engines,
so output and exit codes match ``geofailover ...`` and actions reach the fleet.
"""

from __future__ import annotations

from typing import Any

import click
from celery.bin.base import CeleryCommand  # type: ignore[import-untyped]

from geofailover_core import cli as core_cli
from geofailover_core.engine import FailoverEngine

from .backend import GeoFailoverBackend
from .transport import Transport


def app_engines(app: Any) -> list[FailoverEngine]:
    """The failover engines of a Celery app: its broker's, then its result backend's."""
    engines: list[FailoverEngine] = []
    with app.connection_for_write() as conn:
        if isinstance(conn.transport, Transport):
            engines.append(conn.transport.engine)
    backend = app.backend
    if isinstance(backend, GeoFailoverBackend) and all(e is not backend.geofailover for e in engines):
        engines.append(backend.geofailover)
    return engines


@click.command(
    cls=CeleryCommand,
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def geofailover(ctx: click.Context, args: tuple[str, ...]) -> None:
    """Look at and steer geofailover for this app's broker and result backend (--help for more)."""
    app = ctx.obj.app
    engines = app_engines(app)
    if not engines:
        raise click.UsageError("neither broker_url nor result_backend of this app uses geofailover://")
    ctx.exit(core_cli.main(list(args), engines=engines, prog="celery geofailover"))
