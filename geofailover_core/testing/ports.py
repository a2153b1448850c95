"""Choosing TCP ports for test servers and proxies.

Ports handed out by ``bind(port=0)`` come from the kernel's ephemeral range,
which every outgoing connection also draws its local port from. A test server
that is killed and restarted (or a proxy that stops listening and heals) must
get *its* port back; if a client socket grabbed it meanwhile, the rebind
fails. Ports below the ephemeral range are never handed out implicitly, so
only another process deliberately binding the same port can collide, and
callers retry on that.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["bind_listener", "ephemeral_port_range", "pick_free_port", "port_is_free"]

_LOWEST = 10000  # stay clear of well-known and common service ports


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's ``ip_local_port_range`` (Linux default 32768-60999)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[:2]
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _candidates() -> list[int]:
    low, high = _LOWEST, ephemeral_port_range()[0] - 1
    if high - low < 1000:
        return []
    return [random.randint(low, high) for _ in range(64)]


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def pick_free_port(host: str = "127.0.0.1") -> int:
    """A port that is free *now*, preferably below the ephemeral range.

    Racy by nature (the caller binds later in another process); callers that
    spawn servers retry on "address already in use".
    """
    for port in _candidates():
        if port_is_free(host, port):
            return port
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        chosen: int = probe.getsockname()[1]
        return chosen


def bind_listener(host: str = "127.0.0.1", port: int | None = None, backlog: int = 128) -> socket.socket:
    """A listening socket on ``port``, or on a free port below the ephemeral range.

    Binding directly (no probe-then-bind gap) makes the choice race-free within
    this process. ``SO_REUSEADDR`` lets the same port be bound again while old
    connections sit in TIME_WAIT.
    """
    candidates = [port] if port is not None else [*_candidates(), 0]
    last_error: OSError | None = None
    for candidate in candidates:
        sock = socket.socket(_family(host), socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, candidate))
            sock.listen(backlog)
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        return sock
    assert last_error is not None
    raise last_error
