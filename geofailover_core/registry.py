"""The per-process registry: one engine per configuration name.

Django builds a cache client per thread and Celery a backend per thread;
they must all share one engine (one monitor thread, one set of breakers), or
every thread would probe and fail over on its own. The registry is also
where ``fork()`` is handled: a child process inherits engines whose threads
no longer exist, so each is re-armed lazily on first use in the child.

Engines are built here, not by their users, because building one means
attaching the layers above the engine (the fleet control plane) that the
engine itself must not import.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from .config import FailoverConfig
from .control.plane import attach_control_plane
from .engine import FailoverEngine
from .errors import ConfigurationError
from .forking import after_fork_in_child

_lock = threading.Lock()
_engines: dict[str, FailoverEngine] = {}


def build_engine(config: FailoverConfig | Mapping[str, Any] | str, *, observer: bool = False) -> FailoverEngine:
    """A new engine of this process's own, not shared through the registry
    (a CLI's, a test's), with its control plane attached when configured."""
    engine = FailoverEngine(FailoverConfig.coerce(config))
    if engine.config.control_plane:
        attach_control_plane(engine)
    if observer:
        engine.observer = True
    return engine


def get_engine(config: FailoverConfig | Mapping[str, Any] | str, *, own_connections: bool = False) -> FailoverEngine:
    """Return the engine for ``config.name``, creating it on first use.

    Asking for an existing name with different engine options (endpoints,
    checks, intervals, failback...) is a configuration error: two parts of
    one process would otherwise silently disagree about where traffic goes.
    Connection options (``socket_timeout``, ``decode_responses``...) are each
    client's own and may differ when the caller builds its connections from
    its own configuration (``own_connections``, as :class:`FailoverRedis`
    does with its pool's ``config``). A caller that builds them from
    ``engine.config`` must agree on those too, or it would silently get
    another client's.
    """
    config = FailoverConfig.coerce(config)
    with _lock:
        engine = _engines.get(config.name)
        if engine is not None and not engine.closed:
            differ = _differences(engine.config, config, own_connections)
            if differ:
                raise ConfigurationError(
                    "name",
                    f"configuration {config.name!r} is already in use in this process with different endpoints or options "
                    f"({', '.join(differ)})",
                    "give each distinct endpoint set its own name, or use identical engine settings everywhere",
                )
            return engine
        engine = build_engine(config)
        engine.add_close_hook(_forget)
        _engines[config.name] = engine
        return engine


def _differences(running: FailoverConfig, asked: FailoverConfig, own_connections: bool) -> list[str]:
    """Names of the settings in which ``asked`` differs from the running engine's
    configuration (names only: values may hold secrets)."""
    theirs, ours = running.engine_settings(), asked.engine_settings()
    differ = [key for key in ours if ours[key] != theirs.get(key)]
    if not own_connections and running.connection_fingerprint() != asked.connection_fingerprint():
        differ.append("connection options")
    return differ


def lookup(name: str) -> FailoverEngine:
    """The running engine called ``name`` (KeyError if none was configured)."""
    with _lock:
        engine = _engines.get(name)
    if engine is None or engine.closed:
        raise KeyError(f"no geofailover configuration named {name!r} in this process")
    return engine


def engines() -> list[FailoverEngine]:
    with _lock:
        return [e for e in _engines.values() if not e.closed]


def _forget(engine: FailoverEngine) -> None:
    with _lock:
        if _engines.get(engine.name) is engine:
            del _engines[engine.name]


def close_all() -> None:
    for engine in engines():
        engine.close()


@after_fork_in_child
def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    for engine in list(_engines.values()):
        engine.after_fork_in_child()


__all__ = ["build_engine", "close_all", "engines", "get_engine", "lookup"]
