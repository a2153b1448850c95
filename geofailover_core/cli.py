"""The ``geofailover`` command line (SPEC STUB; also ``python -m geofailover_core``).

THIS MODULE IS A SPECIFICATION STUB: ``main`` below is the contract the
framework adapters call (``manage.py geofailover ...`` and ``flask geofailover
...`` pass their own engines and forward the remaining arguments), so there is
one implementation of every subcommand, its output and its exit codes.

Subcommands: ``status [--json] [--watch]``, ``failover --to NAME [--for DURATION]
[--reason TEXT] [--force] [--wait SECONDS]``, ``failback``, ``pin NAME [--for
DURATION]``, ``unpin``, ``check [--json]``, ``demo [...]``. Configuration when
``engines`` is not given: ``--url`` (the ``;`` string), the ``GEOFAILOVER_URL``
environment variable, or ``--config FILE.toml``. Exit codes: 0 ok, 1 degraded
or stragglers, 2 error (bad configuration, all endpoints down, unknown endpoint).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from .engine import FailoverEngine


def main(argv: Sequence[str] | None = None, *, engines: Sequence[FailoverEngine] | None = None, stdout: TextIO | None = None) -> int:
    """Run one CLI invocation; returns the exit code (never calls sys.exit)."""
    raise NotImplementedError
