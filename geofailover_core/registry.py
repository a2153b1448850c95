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
# Clients that own a share of an engine (FailoverRedis built from endpoints or
# a name). The engine closes when the last share is released, unless someone
# asked for it with get_engine (an adapter, an application): those live until
# closed explicitly or the process ends.
_shares: dict[str, int] = {}
_kept: set[str] = set()


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
    """Return the engine for ``config.name``, creating it on first use; it
    lives until it is closed (``engine.close()``, :func:`close_all`).

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
    engine = _get(FailoverConfig.coerce(config), own_connections)
    with _lock:
        _kept.add(engine.name)
    return engine


def acquire(
    config: FailoverConfig | Mapping[str, Any] | str | None = None, *, name: str | None = None, own_connections: bool = False
) -> FailoverEngine:
    """Like :func:`get_engine` (or :func:`lookup` with ``name``), taking a share
    that :func:`release` gives back: the engine's threads stop and its name is
    free again when the last share is released."""
    engine = lookup(name) if config is None and name is not None else _get(FailoverConfig.coerce(config), own_connections)  # type: ignore[arg-type]
    with _lock:
        _shares[engine.name] = _shares.get(engine.name, 0) + 1
    return engine


def release(engine: FailoverEngine) -> None:
    """Give back a share taken by :func:`acquire`; the last one closes the engine
    (unless it was also asked for with :func:`get_engine`)."""
    with _lock:
        if _engines.get(engine.name) is not engine:
            return
        left = _shares.get(engine.name, 0) - 1
        _shares[engine.name] = max(0, left)
        last = left <= 0 and engine.name not in _kept
    if last:
        engine.close()


def _get(config: FailoverConfig, own_connections: bool) -> FailoverEngine:
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
            _shares.pop(engine.name, None)
            _kept.discard(engine.name)


def close_all() -> None:
    for engine in engines():
        engine.close()


@after_fork_in_child
def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    for engine in list(_engines.values()):
        engine.after_fork_in_child()


__all__ = ["acquire", "build_engine", "close_all", "engines", "get_engine", "lookup", "release"]
