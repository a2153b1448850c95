"""Clear errors for a framework adapter imported without its extra installed.

``import geofailover_flask`` without Flask would otherwise fail with "No
module named 'blinker'", which names neither the package to install nor the
extra that brings it.
"""

from __future__ import annotations

import importlib


def _missing(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return True
    return False


def require(package: str, extra: str, *modules: str) -> None:
    """Raise ImportError naming ``pip install "geofailover[extra]"`` when any of
    ``modules`` (top-level names such as ``"flask"``) cannot be imported."""
    missing = [m for m in modules if _missing(m)]
    if missing:
        raise ImportError(
            f"{package} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: "
            f'pip install "geofailover[{extra}]"',
            name=missing[0],
        )


__all__ = ["require"]
