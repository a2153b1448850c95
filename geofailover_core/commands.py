"""What the command path needs to know about a command and its failure.

Three questions, answered cheaply: does this error say the endpoint is
failing (and how conclusively)? Does this command block server-side (so a
long wait is its own timeout, not a fault)? Is it safe to send again on
another endpoint?
"""

from __future__ import annotations

import enum
import errno
import socket
import ssl
from collections.abc import Sequence
from typing import Any

import redis.exceptions as rex
from redis.commands.cluster import READ_COMMANDS

from .errors import GeoFailoverError
from .stamps import is_unsent


class Failure(enum.Enum):
    IGNORE = 0  # application-level error: the endpoint is fine
    COUNT = 1  # counts towards the breaker's failure threshold
    CONCLUSIVE = 2  # the endpoint is down beyond doubt: open the breaker now


# Replies that say the server cannot serve now.
_SERVER_STATE_PREFIXES = ("READONLY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN")


def _role_changed(exc: BaseException) -> bool:
    """The reply that ends a blocking wait when the server became a replica under it
    (not ``CLIENT UNBLOCK ... ERROR``, an operator's or the application's own doing)."""
    text = str(exc)
    return text.startswith("UNBLOCKED") and "instance state changed" in text
_REFUSED = (ConnectionRefusedError, FileNotFoundError)
_REFUSED_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ENOENT, errno.ENETUNREACH, errno.EHOSTUNREACH})

# Safe to re-send: reads, plus commands without side effects that READ_COMMANDS omits.
RETRY_SAFE = READ_COMMANDS | frozenset({"PING", "ECHO", "INFO", "TIME", "SELECT", "CLIENT", "HELLO", "ROLE", "LASTSAVE", "COMMAND"})

# Commands whose server-side wait is the caller's choice, with where the timeout sits.
BLOCKING = frozenset({
    "BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BZPOPMIN", "BZPOPMAX", "BLMPOP", "BZMPOP",
    "XREAD", "XREADGROUP", "WAIT", "WAITAOF",
})


def _refused(exc: BaseException) -> bool:
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 5:
        if isinstance(cur, _REFUSED):
            return True
        if isinstance(cur, OSError) and cur.errno in _REFUSED_ERRNOS:
            return True
        cur = cur.__cause__ or cur.__context__
        seen += 1
    text = str(exc)
    return "Connection refused" in text or "No such file or directory" in text


def classify(exc: BaseException, command: str | None = None) -> Failure:
    """Decide whether ``exc`` says the endpoint is failing."""
    if isinstance(exc, (GeoFailoverError, rex.LockError, rex.WatchError, rex.DataError)):
        return Failure.IGNORE
    if isinstance(exc, rex.BusyLoadingError):
        return Failure.COUNT
    if isinstance(exc, (rex.TimeoutError, socket.timeout)):
        if command is not None and command.upper() in BLOCKING:
            return Failure.IGNORE
        return Failure.COUNT
    if isinstance(exc, rex.AuthenticationError):
        return Failure.COUNT
    if isinstance(exc, (rex.ConnectionError, OSError)):
        return Failure.CONCLUSIVE if _refused(exc) else Failure.COUNT
    if isinstance(exc, rex.ReadOnlyError) or str(exc).startswith("READONLY") or _role_changed(exc):
        # A member that became a replica will refuse every write until an operator acts,
        # however many reads succeed in between (they would reset a count): leave it now,
        # as redis-py's Sentinel client does. The refused write was not applied.
        return Failure.CONCLUSIVE
    if isinstance(exc, rex.MasterDownError):
        return Failure.COUNT
    if isinstance(exc, rex.ResponseError):
        return Failure.COUNT if str(exc).upper().startswith(_SERVER_STATE_PREFIXES) else Failure.IGNORE
    return Failure.IGNORE


def refuses_service(exc: BaseException) -> bool:
    """True when a reply says the server cannot serve now (a role change, loading, out of
    memory): a long-lived consumer reconnects on it rather than dying of an error reply."""
    return isinstance(exc, rex.ResponseError) and (
        classify(exc) is not Failure.IGNORE or isinstance(exc, rex.OutOfMemoryError) or str(exc).startswith("UNBLOCKED")
    )


_REJECTION_PREFIXES = {"NOAUTH": "rejects our credentials", "WRONGPASS": "rejects our credentials", "NOPERM": "denies our user this command (ACL)"}


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(seen) < 5:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def rejection(exc: BaseException) -> str | None:
    """When ``exc`` says the endpoint is up but refuses *us* (wrong password, an
    ACL, a certificate we do not trust), what to tell the operator; else None.

    Such an endpoint cannot serve this application, so it still fails over,
    but it is a configuration problem, not an outage, and the error says so."""
    for cur in _chain(exc):
        if isinstance(cur, (rex.AuthenticationError, rex.AuthenticationWrongNumberOfArgsError)):
            return "rejects our credentials"
        if isinstance(cur, rex.NoPermissionError):
            return "denies our user this command (ACL)"
        if isinstance(cur, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(cur):
            return "presents a TLS certificate we do not trust"
        if isinstance(cur, rex.ResponseError):
            head = str(cur).split(" ", 1)[0].upper()
            if head in _REJECTION_PREFIXES:
                return _REJECTION_PREFIXES[head]
    return None


def timed_out(exc: BaseException) -> bool:
    return isinstance(exc, (rex.TimeoutError, socket.timeout))


def never_sent(exc: BaseException) -> bool:
    """True when the failure happened before the command reached a server
    (checking out or connecting a connection), so re-sending it cannot
    apply it twice. The pool marks such errors."""
    return is_unsent(exc) or isinstance(exc, rex.ReadOnlyError)


def retry_allowed(policy: str, commands: Sequence[str], exc: BaseException) -> bool:
    if policy == "none":
        return False
    if policy == "all" or never_sent(exc):
        return True
    return all(c.upper() in RETRY_SAFE for c in commands)


def _as_float(value: Any) -> float | None:
    try:
        if isinstance(value, bytes):
            value = value.decode()
        return float(value)
    except (TypeError, ValueError, UnicodeDecodeError):
        return None


def blocking_seconds(command: str, args: Sequence[Any]) -> float | None:
    """The server-side wait a blocking command asked for, in seconds.

    Returns ``None`` for non-blocking commands, ``0.0`` for "forever".
    ``args`` include the command name at index 0, as redis-py passes them.
    """
    name = command.upper()
    if name not in BLOCKING or len(args) < 2:
        return None
    if name in ("BLMPOP", "BZMPOP"):
        return _as_float(args[1])
    if name in ("XREAD", "XREADGROUP"):
        for i, token in enumerate(args[:-1]):
            if isinstance(token, (str, bytes)) and (token.upper() if isinstance(token, str) else token.upper().decode()) == "BLOCK":
                ms = _as_float(args[i + 1])
                return None if ms is None else ms / 1000.0
        return None
    if name in ("WAIT", "WAITAOF"):
        ms = _as_float(args[-1])
        return None if ms is None else ms / 1000.0
    return _as_float(args[-1])
