"""django-redis client for a geofailover cache.

Plugged in like django-redis's ``SentinelClient``: it rewrites LOCATION before
``DefaultClient.__init__`` sees it. django-redis reads several LOCATIONs as a
primary and read replicas; here they are failover members of one engine, so
the client holds a single "server" (``geofailover://<engine name>``) whose
pool follows the active endpoint.

django-redis turns connection errors into ``ConnectionInterrupted`` (which
``IGNORE_EXCEPTIONS`` swallows) in some methods only: ``ttl``, ``expire``,
``touch`` and the set/hash/sorted-set helpers raise raw ``redis`` errors. This
client gives every method that talks to Redis the same policy (iterators stop
cleanly instead of raising mid-loop), and logs an outage of ignored errors
once instead of once per call (django-redis's ``DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS``).
"""

from __future__ import annotations

import functools
import inspect
import socket
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import redis.exceptions
from django.core.exceptions import ImproperlyConfigured
from django_redis.client import DefaultClient  # type: ignore[import-untyped]
from django_redis.exceptions import ConnectionInterrupted  # type: ignore[import-untyped]

from geofailover_core.client import FailoverRedis

from .pool import URL_SCHEME

if TYPE_CHECKING:
    from .binding import CacheBinding

#: The exceptions django-redis's own wrapped methods turn into
#: ConnectionInterrupted (``django_redis.client.default._main_exceptions``).
#: ``NoHealthyEndpointError`` (all endpoints down) is a ConnectionError.
REDIS_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ResponseError,
    socket.timeout,
)

#: DefaultClient methods that never talk to Redis (key building, encoding,
#: client bookkeeping): left unwrapped.
NO_IO = frozenset({
    "make_key", "make_pattern", "encode", "decode", "get_client", "get_client_with_index", "connect",
    "disconnect", "get_next_client_index", "close", "do_close_clients", "reverse_key",
})


def _wrap(func: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isgeneratorfunction(func):

        @functools.wraps(func)
        def iterate(self: GeoFailoverClient, *args: Any, **kwargs: Any) -> Iterator[Any]:
            return self._guard_iterator(func(self, *args, **kwargs))

        iterate._geo_wrapped = True  # type: ignore[attr-defined]
        return iterate

    @functools.wraps(func)
    def call(self: GeoFailoverClient, *args: Any, **kwargs: Any) -> Any:
        try:
            result = func(self, *args, **kwargs)
        except REDIS_ERRORS as exc:  # ConnectionInterrupted (django-redis's own) passes through
            raise ConnectionInterrupted(connection=self._clients[0]) from exc
        if self._geo_binding.ignoring and kwargs.get("client") is None:  # django-redis passes client= to a step of another method
            self._geo_binding.note_success()
        return result

    call._geo_wrapped = True  # type: ignore[attr-defined]
    return call


def _wrap_io_methods(cls: type[Any]) -> None:
    """Give every public method of ``cls`` that talks to Redis the one error policy.

    Found on the class rather than listed by hand, so methods a newer
    django-redis adds (7.0 added the sorted-set helpers), or a project's
    client subclass adds, are covered without a change here.
    """
    for name in dir(cls):
        attr = inspect.getattr_static(cls, name)
        if not name.startswith("_") and name not in NO_IO and inspect.isfunction(attr) and not getattr(attr, "_geo_wrapped", False):
            setattr(cls, name, _wrap(attr))


class GeoFailoverClient(DefaultClient):  # type: ignore[misc]
    """``DefaultClient`` on one failover pool, with one error policy for every method."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _wrap_io_methods(cls)  # a project's subclass may add methods that talk to Redis

    def __init__(self, server: Any, params: dict[str, Any], backend: Any) -> None:
        binding_of = getattr(backend, "geofailover_binding", None)
        if binding_of is None:
            raise ImproperlyConfigured(
                "GeoFailoverClient needs the geofailover cache backend: set BACKEND to "
                "'geofailover_django.cache.GeoFailoverCache' (or a subclass)"
            )
        self._geo_binding: CacheBinding = binding_of()
        # The Sentinel client's LOCATION hook: one server, the engine.
        # CONNECTION_FACTORY and REDIS_CLIENT_CLASS were checked with the settings (E008, E009).
        super().__init__([f"{URL_SCHEME}{self._geo_binding.settings.config.name}"], params, backend)

    # -- one server, the engine's -------------------------------------------------------

    def get_next_client_index(self, write: bool = True, tried: list[int] | None = None) -> int:
        return 0

    def get_client(self, write: bool = True, tried: list[int] | None = None) -> FailoverRedis:
        client: FailoverRedis | None = self._clients[0]
        if client is None or client.geofailover.closed:
            self._geo_binding.engine()  # live, and relaying to the signals, for the factory to find
            client = self._clients[0] = self.connect(0)
        return client

    def get_client_with_index(self, write: bool = True, tried: list[int] | None = None) -> tuple[FailoverRedis, int]:
        return self.get_client(write, tried), 0

    # -- error policy ---------------------------------------------------------------------

    def _guard_iterator(self, iterator: Iterator[Any]) -> Iterator[Any]:
        """Iterate; on a Redis error stop (IGNORE_EXCEPTIONS) or raise it as django-redis would."""
        try:
            yield from iterator
        except REDIS_ERRORS as exc:
            if not self._backend._ignore_exceptions:
                raise
            self._geo_binding.note_ignored(exc)
            return
        if self._geo_binding.ignoring:
            self._geo_binding.note_success()


_wrap_io_methods(GeoFailoverClient)
