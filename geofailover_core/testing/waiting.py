"""Deadline-bounded polling for tests.

Failover behaviour is asynchronous (a replica links up, a health check flips a
region, a worker reconnects). A fixed ``sleep()`` either wastes time or flakes
on a loaded 2-core CI machine; polling a condition against a deadline does
neither, and the failure message says what was still false.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_until"]

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 5.0,
    interval: float = 0.01,
    message: str = "condition was not met",
    *,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll ``predicate`` until it returns something truthy; return that value.

    Returning the value lets callers wait for *and* use a result (an ``INFO``
    dict, a reply) without evaluating it twice.

    Exceptions of the types in ``ignore`` count as "not yet" (useful while a
    server restarts and connects are refused); any other exception propagates
    at once so genuine bugs are not hidden behind a timeout.

    Raises ``AssertionError`` naming ``message``, the timeout and the last value
    (or ignored exception) seen, so a failed wait reads like a failed assert.
    """
    if timeout < 0:
        raise ValueError("timeout must be >= 0")
    if interval <= 0:
        raise ValueError("interval must be > 0")
    deadline = time.monotonic() + timeout
    last: object = None
    attempts = 0
    while True:
        attempts += 1
        try:
            value = predicate()
        except ignore as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{message} (waited {timeout:.3g} s, {attempts} attempts; last value: {last!r})")
        time.sleep(min(interval, remaining))
