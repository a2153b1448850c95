"""``python -m geofailover_core``: the ``geofailover`` command line, for machines
where the console script is not on PATH (a virtualenv that is not activated)."""

from __future__ import annotations

from .cli import run

if __name__ == "__main__":
    run()
