"""The one ``fork()`` hook of geofailover.

A forked child inherits every object of its parent but none of its threads,
and a lock that another thread held at ``fork()`` time stays held forever in
the child. Every module that owns a lock or a thread registers here what the
child must reset; ``os.register_at_fork`` is called once, in this module, so
the order in which children are re-armed is the order of registration (the
registry's locks before the engines that use them), not an accident of
which module was imported first.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

logger = logging.getLogger("geofailover")

_callbacks: list[Callable[[], None]] = []


def after_fork_in_child(callback: Callable[[], None]) -> Callable[[], None]:
    """Run ``callback()`` in every child forked from now on (usable as a decorator)."""
    _callbacks.append(callback)
    return callback


def _run_in_child() -> None:
    for callback in list(_callbacks):
        try:
            callback()
        except Exception:  # one broken hook must not leave the others un-run
            logger.exception("geofailover: after-fork hook %r failed", callback)


os.register_at_fork(after_in_child=_run_in_child)

__all__ = ["after_fork_in_child"]
