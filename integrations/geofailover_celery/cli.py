"""``celery -A proj geofailover status|failover|failback|pin|unpin|check [--json]``.

A Celery CLI plugin (the ``celery.commands`` entry point) that hands the
app's broker and result-backend engines to the one ``geofailover`` command
line of the core (:func:`geofailover_core.cli.main`), so subcommands, output
and exit codes are the same as ``geofailover ...``, ``manage.py geofailover``
and ``flask geofailover``. Actions go through the core's control plane and so
reach every worker, beat and producer process of the fleet, not just this one.
"""

from __future__ import annotations

import inspect
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
    conn = app.connection_for_write()
    try:
        transport = conn.transport
        if isinstance(transport, Transport):
            engines.append(transport.engine)
    finally:
        conn.release()
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
    kwargs: dict[str, Any] = {"engines": engines}
    if "prog" in inspect.signature(core_cli.main).parameters:
        kwargs["prog"] = "celery geofailover"
    ctx.exit(core_cli.main(list(args), **kwargs))
