"""Exceptions raised by geofailover.

They subclass the exceptions that framework code already handles:
configuration mistakes are ``ValueError``s, and "no region can serve" is a
``redis.exceptions.ConnectionError`` so that django-redis'
``IGNORE_EXCEPTIONS``, kombu's reconnect logic and Celery's ``ensure()``
treat it as the outage it is (the peer clients' plain ``Exception``s do not).
"""

from __future__ import annotations

import redis.exceptions

from .masking import mask_text


class GeoFailoverError(Exception):
    """Base class for errors that are geofailover's own."""


class ConfigurationError(GeoFailoverError, ValueError):
    """A setting is wrong. The message names the setting and says how to fix it.

    Every part is masked (a URL's password, ``password=...``): callers build
    messages from settings, and settings hold secrets.
    """

    def __init__(self, setting: str, problem: str, fix: str) -> None:
        setting, problem, fix = mask_text(setting), mask_text(problem), mask_text(fix)
        self.setting = setting
        self.problem = problem
        self.fix = fix
        super().__init__(f"geofailover setting {setting!r}: {problem}. Fix: {fix}")


class NoHealthyEndpointError(GeoFailoverError, redis.exceptions.ConnectionError):
    """Every endpoint is down; commands fail fast until one recovers.

    The message names each endpoint's state, and says so when an endpoint
    refuses us (wrong password, ACL, untrusted certificate): that is a
    configuration problem, not an outage. ``__cause__`` is the last error
    seen from the highest-priority endpoint."""


class AllEndpointsTimedOutError(NoHealthyEndpointError, redis.exceptions.TimeoutError):
    """Every endpoint's last failure was a timeout (frozen or blackholed regions).

    Also a ``redis.exceptions.TimeoutError``, so code that catches timeouts
    to back off catches this too; code that catches ``ConnectionError`` (or
    ``NoHealthyEndpointError``) is unaffected."""


class UnknownEndpointError(GeoFailoverError, KeyError):
    """A manual operation named an endpoint that is not configured."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnhealthyEndpointError(GeoFailoverError, redis.exceptions.ConnectionError):
    """A manual failover was asked for an endpoint that is down (pass ``force=True`` to insist)."""


class ReplyLostError(GeoFailoverError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
    """The endpoint failed while this command's reply was outstanding, and the
    engine moved traffic on: whether a write was applied there is unknown.

    Both a ``ConnectionError`` (what a region that died raises) and a
    ``TimeoutError`` (what a region that froze raises), because from the
    caller's side it is either, and code written for one must catch it. Reads
    are re-sent on the new endpoint and never see it; writes see it under the
    ``read_only`` retry policy."""
