"""The marks geofailover leaves on redis-py objects, in one place.

Connections carry the engine generation they were made for (so a pool can
tell a socket to the old endpoint from one to the new) and, while a blocking
command waits on them, a flag a switch uses to wake them. Exceptions carry
what the command path learned about them on the way up: the generation of
the socket that failed (a socket made before a switch may fail after it, and
must not be blamed on the new endpoint), whether the command provably never
left this process, and whether a transaction's EXEC may have been sent.

Attributes rather than wrapper types, because the objects are redis-py's own
and must stay exactly what host libraries expect.
"""

from __future__ import annotations

from typing import Any

#: On connections and exceptions: the engine generation of the socket.
GENERATION = "_geofailover_gen"
#: On connections: the name of the endpoint the socket talks to.
ENDPOINT = "_geofailover_endpoint"
#: On connections: a blocking command (BLPOP...) is waiting on this socket.
BLOCKING = "_geofailover_blocking"
#: On connections: a switch shut this socket down to wake its waiter.
WOKEN = "_geofailover_woken"
#: On exceptions: the command never reached a server (safe to re-send anywhere).
UNSENT = "_geofailover_unsent"
#: On exceptions: a MULTI/EXEC block may have been executed by the failed endpoint.
EXEC_SENT = "_geofailover_exec_sent"


def _set(obj: Any, attr: str, value: Any) -> None:
    try:
        setattr(obj, attr, value)
    except AttributeError:  # pragma: no cover - objects with __slots__
        pass


def mark_unsent(exc: BaseException) -> None:
    """Nothing was sent: re-sending the command elsewhere cannot apply it twice."""
    _set(exc, UNSENT, True)


def is_unsent(exc: BaseException) -> bool:
    return bool(getattr(exc, UNSENT, False))


def mark_exec_sent(exc: BaseException, sent: bool) -> None:
    _set(exc, EXEC_SENT, sent)


def exec_sent(exc: BaseException) -> bool:
    return bool(getattr(exc, EXEC_SENT, False))


def stamp_generation(exc: BaseException, generation: int) -> None:
    _set(exc, GENERATION, generation)


def failed_generation(exc: BaseException, default: int) -> int:
    """The generation of the socket an error came from (``default`` when unstamped).

    Never newer than ``default``: the caller's own view bounds what the error can be about."""
    return min(int(getattr(exc, GENERATION, default)), default)


def generation_of(connection: Any, default: int | None = None) -> int | None:
    return getattr(connection, GENERATION, default)  # type: ignore[no-any-return]


def endpoint_of(connection: Any) -> str | None:
    return getattr(connection, ENDPOINT, None)


def is_blocking(connection: Any) -> bool:
    return bool(getattr(connection, BLOCKING, False))


def set_blocking(connection: Any, value: bool) -> None:
    setattr(connection, BLOCKING, value)


def was_woken(connection: Any) -> bool:
    return bool(getattr(connection, WOKEN, False))


def set_woken(connection: Any, value: bool = True) -> None:
    setattr(connection, WOKEN, value)


__all__ = [
    "BLOCKING",
    "ENDPOINT",
    "EXEC_SENT",
    "GENERATION",
    "UNSENT",
    "WOKEN",
    "endpoint_of",
    "exec_sent",
    "failed_generation",
    "generation_of",
    "is_blocking",
    "is_unsent",
    "mark_exec_sent",
    "mark_unsent",
    "set_blocking",
    "set_woken",
    "stamp_generation",
    "was_woken",
]
