"""``manage.py geofailover``: the geofailover CLI on this project's caches.

A thin shell over :func:`geofailover_core.cli.main`: it picks the engines of
the chosen caches (``--cache ALIAS``, repeatable; default every geofailover
cache) and forwards everything else unchanged, so the subcommands, their
output and their exit codes are the core CLI's.

The CLI makes the engines that have not served in this process observers
while it runs, so the command's own probes never fire the project's signal
receivers. System checks are not run first: ``status`` must work on a
project whose checks fail.

A non-zero exit code is raised as ``SystemExit(code)`` once the CLI has
printed its verdict (like ``makemigrations --check``), so
``call_command("geofailover", ...)`` raises ``SystemExit`` too; a mistake
found before the CLI runs (unknown ``--cache``, a misconfigured cache, no
subcommand) is a ``CommandError`` (returncode 2).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any, TextIO, cast

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from geofailover_core import cli
from geofailover_core.engine import FailoverEngine

from ...cache import geofailover_cache
from ...conf import geofailover_aliases

#: Django's own options (and ours), accepted anywhere on the line, even after
#: the subcommand. ``-v`` is Django's verbosity only before the subcommand:
#: after it, it is the core CLI's ``--verbose``.
_DJANGO_FLAGS = frozenset({"--traceback", "--no-color", "--force-color", "--skip-checks"})
_DJANGO_VALUED = frozenset({"--settings", "--pythonpath", "--verbosity", "--cache"})
_DJANGO_VALUED_BEFORE = frozenset({"-v"})


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split ``argv`` into (ours, forwarded to the core CLI).

    Everything before the subcommand is ours; after it, only ``--cache`` and
    Django's own options are, so ``manage.py geofailover status --cache
    default --json`` works as typed.
    """
    ours: list[str] = []
    forwarded: list[str] = []
    items = list(argv)
    i = 0
    started = False
    while i < len(items):
        arg = items[i]
        name = arg.split("=", 1)[0]
        if name in _DJANGO_VALUED or (not started and name in _DJANGO_VALUED_BEFORE):
            ours.append(arg)
            if "=" not in arg and i + 1 < len(items):
                ours.append(items[i + 1])
                i += 1
        elif arg in _DJANGO_FLAGS or (not started and arg.startswith("-")):
            ours.append(arg)
        else:
            started = True
            forwarded.append(arg)
        i += 1
    return ours, forwarded


class _ForwardingParser(CommandParser):
    """Parse our options; hand the rest (the subcommand line) to the core CLI untouched."""

    def parse_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None) -> argparse.Namespace:  # type: ignore[override]
        ours, forwarded = split_argv(list(args or []))
        parsed = super().parse_args(ours, namespace)
        parsed.args = forwarded
        return parsed


class Command(BaseCommand):
    help = (
        "Fleet-wide geographic failover of the geofailover caches. Subcommands: status, failover, failback, "
        "pin, unpin, check (each with --help)."
    )
    # status must work on a project whose checks fail (that may be why you are here).
    requires_system_checks: list[str] = []  # type: ignore[assignment]

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, allow_abbrev=False, **kwargs)
        parser.__class__ = _ForwardingParser
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--cache", action="append", metavar="ALIAS", default=None,
            help="a CACHES alias served by geofailover (repeatable); default: every geofailover cache",
        )

    def handle(self, *args: str, **options: Any) -> None:
        if not args:
            raise CommandError("missing subcommand: status, failover, failback, pin, unpin or check (see --help)", returncode=2)
        engines = list({id(e): e for e in self._engines(options.get("cache"))}.values())  # aliases may share one
        argv = list(args)
        if not any(a == "--color" or a.startswith("--color=") for a in argv):
            if options.get("no_color"):
                argv.append("--color=never")
            elif options.get("force_color"):
                argv.append("--color=always")
        self.stdout.ending = ""  # the core CLI writes whole lines itself
        code = cli.main(argv, engines=engines, stdout=cast(TextIO, self.stdout), prog="manage.py geofailover")
        if code:
            # The CLI has printed its verdict: only the exit code is left to
            # give (a CommandError would add a "CommandError: ..." line).
            raise SystemExit(code)

    def _engines(self, wanted: list[str] | None) -> list[FailoverEngine]:
        known = geofailover_aliases()
        if not known:
            raise CommandError(
                "no cache uses geofailover: set a CACHES entry's BACKEND to 'geofailover_django.cache.GeoFailoverCache'",
                returncode=2,
            )
        aliases = list(dict.fromkeys(wanted or known))
        unknown = [a for a in aliases if a not in known]
        if unknown:
            raise CommandError(f"--cache {unknown[0]!r}: not a geofailover cache; choose from {', '.join(known)}", returncode=2)
        engines = []
        for alias in aliases:
            try:
                engines.append(geofailover_cache(alias).geofailover)
            except ImproperlyConfigured as exc:
                raise CommandError(f"cache {alias!r} is misconfigured: {exc}", returncode=2) from None
        return engines
