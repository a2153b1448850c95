"""``FailoverRedis``: a real ``redis.Redis`` that follows the active endpoint.

The failover logic lives in the engine and the pool; the client adds the two
things only the command path can do: feed errors to the active endpoint's
circuit breaker, and re-send a failed command on the new endpoint when the
retry policy says that is safe.

Retry policy (``retry_on_failover``):

* ``"read_only"`` (default): reads are re-sent; writes only when the error
  proves they never reached the server (the connection could not be made).
  A write whose reply was lost, such as an ``INCR`` on a region that froze
  mid-command, is raised to the caller, because re-sending it could apply it
  twice.
* ``"all"``: every command is re-sent once per switch. ``INCR``, ``LPUSH``
  and whole MULTI/EXEC blocks may then be applied twice when the old region
  executed them but its reply was lost.
* ``"none"``: nothing is re-sent; the caller sees the error (the switch
  still happens, so the *next* command goes to the new endpoint).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis
from redis.client import Pipeline, PubSub

from .commands import BLOCKING, blocking_seconds, retry_allowed
from .config import EndpointConfig, FailoverConfig, check_value, split_options
from .defaults import BOUNDS
from .engine import FailoverEngine
from .errors import ConfigurationError
from .pool import FailoverBlockingConnectionPool, FailoverConnectionPool, FailoverPoolMixin
from .registry import get_engine, lookup
from .stamps import exec_sent, generation_of, is_unsent, mark_exec_sent, mark_unsent, set_blocking, was_woken

EndpointSpec = EndpointConfig | Mapping[str, Any] | str
_BLOCKING_NAMES = BLOCKING | {name.lower() for name in BLOCKING}
_REDIS_EXECUTE = redis.Redis.execute_command


def _engine_of(pool: Any) -> FailoverEngine:
    if not isinstance(pool, FailoverPoolMixin):
        raise TypeError("geofailover clients need a geofailover connection pool")
    return pool.engine


class FailoverRedis(redis.Redis):
    """A ``redis.Redis`` whose connection pool follows the best healthy endpoint.

    ``FailoverRedis(endpoints=[...], name="default", **options)``: options
    are engine options (see the table of defaults) or redis-py connection
    options, which apply to this client's connections on every endpoint.
    A name redis-py's connections take is a connection option, as in
    ``redis.Redis``: ``socket_timeout=5`` or ``health_check_interval=30``
    belong to this client, so clients of one engine may differ in them; only
    a different engine option under the same name is an error.
    ``FailoverRedis(name="default")`` alone attaches to an engine already
    configured in this process (and uses its connection options). The
    engine is ``client.geofailover`` (``Redis.failover`` is the FAILOVER
    command).
    """

    def __init__(
        self,
        endpoints: Sequence[EndpointSpec] | str | None = None,
        *,
        name: str | None = None,
        config: FailoverConfig | Mapping[str, Any] | str | None = None,
        blocking_pool: bool = False,
        max_connections: int | None = None,
        pool_timeout: float = 20.0,
        connection_pool: FailoverPoolMixin | None = None,
        single_connection_client: bool = False,
        **options: Any,
    ) -> None:
        owns_pool = connection_pool is None
        if connection_pool is None:
            connection_pool = self._build_pool(endpoints, name, config, blocking_pool, max_connections, pool_timeout, options)
        elif endpoints is not None or config is not None or options:
            raise ConfigurationError("connection_pool", "given together with endpoints or options", "pass either a pool or a configuration")
        self._geofailover_engine = _engine_of(connection_pool)
        super().__init__(connection_pool=connection_pool, single_connection_client=single_connection_client)  # type: ignore[arg-type]
        # Like Redis.from_url: a pool this client made is closed with it.
        self.auto_close_connection_pool = owns_pool

    @classmethod
    def _build_pool(
        cls,
        endpoints: Sequence[EndpointSpec] | str | None,
        name: str | None,
        config: FailoverConfig | Mapping[str, Any] | str | None,
        blocking_pool: bool,
        max_connections: int | None,
        pool_timeout: float,
        options: dict[str, Any],
    ) -> FailoverPoolMixin:
        engine_options, client_options = split_options(options)
        if max_connections is not None:
            max_connections = check_value("max_connections", BOUNDS["max_connections"], max_connections)
        engine, own = cls._resolve_engine(endpoints, name, config, engine_options)
        if blocking_pool:
            return FailoverBlockingConnectionPool(
                engine, max_connections=max_connections or 50, timeout=pool_timeout, config=own, **client_options
            )
        return FailoverConnectionPool(engine, max_connections=max_connections, config=own, **client_options)

    @staticmethod
    def _resolve_engine(
        endpoints: Sequence[EndpointSpec] | str | None,
        name: str | None,
        config: FailoverConfig | Mapping[str, Any] | str | None,
        engine_options: dict[str, Any],
    ) -> tuple[FailoverEngine, FailoverConfig | None]:
        """The engine, and the configuration this client's connections follow
        (None: the engine's own, for a client that attaches by name)."""
        if config is not None:
            if endpoints is not None or engine_options:
                raise ConfigurationError("config", "given together with endpoints or engine options", "put everything in config")
            cfg = FailoverConfig.coerce(config)
            if name is not None and name != cfg.name:
                cfg = cfg.with_options(name=name)
            return get_engine(cfg, own_connections=True), cfg
        if endpoints is None:
            if name is None:
                raise ConfigurationError("endpoints", "missing", "pass endpoints=[...] or the name of a configured engine")
            try:
                return lookup(name), None
            except KeyError:
                raise ConfigurationError("name", f"no configuration named {name!r} exists in this process", "pass endpoints=[...] the first time") from None
        if isinstance(endpoints, str):
            data: dict[str, Any] = {"endpoints": endpoints, **engine_options}
        else:
            data = {"endpoints": list(endpoints), **engine_options}
        if name is not None:
            data["name"] = name
        cfg = FailoverConfig.from_dict(data)
        return get_engine(cfg, own_connections=True), cfg

    @classmethod
    def from_url(cls, url: str, **options: Any) -> FailoverRedis:  # type: ignore[override]
        """``FailoverRedis.from_url("redis://a/0?name=us&weight=2;redis://b/0?name=eu", **options)``."""
        return cls(url, **options)

    @property
    def geofailover(self) -> FailoverEngine:
        """The failover engine: ``active``, ``status()``, ``failover_to()``, ``pin()``, ``on()``..."""
        return self._geofailover_engine

    # -- command path ------------------------------------------------------------

    def execute_command(self, *args: Any, **options: Any) -> Any:
        engine = self._geofailover_engine
        generation = engine.generation
        pinned = self.connection
        if pinned is not None:  # single_connection_client: its socket may predate a switch
            generation = pinned._geofailover_gen  # type: ignore[attr-defined]  # a ManagedConnection
            if generation != engine.generation:
                self._move_pinned_connection()
                generation = engine.generation
        try:
            if args and args[0] in _BLOCKING_NAMES:
                result = self._execute_blocking(args, options)
            else:
                result = _REDIS_EXECUTE(self, *args, **options)
        except BaseException as exc:  # noqa: BLE001 - classified and re-raised by _retry_after
            return self._retry_after(exc, generation, args, options)
        if engine.suspect:
            engine.record_success(generation)
        return result

    def _run_once(self, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        if args and args[0] in _BLOCKING_NAMES:
            return self._execute_blocking(args, options)
        return _REDIS_EXECUTE(self, *args, **options)

    def _retry_after(self, exc: BaseException, generation: int, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        engine = self._geofailover_engine
        command = str(args[0]) if args else ""
        for _ in range(len(engine.config.endpoints)):
            if not engine.recover(generation, exc, command):
                raise exc
            if not retry_allowed(engine.config.retry_on_failover, [command], exc):
                raise exc
            if self.connection is not None:
                self._move_pinned_connection()
            generation = engine.generation
            try:
                return self._run_once(args, options)
            except BaseException as again:  # noqa: BLE001 - re-raised after the loop
                exc = again
        raise exc

    def _move_pinned_connection(self) -> None:
        old, self.connection = self.connection, None
        if old is not None:
            self.connection_pool.release(old)  # stale generation: discarded, not pooled
        self.connection = self.connection_pool.get_connection()

    def _execute_blocking(self, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        """Run BLPOP & co.: the command waits as long as it asked, the socket
        timeout only bounds silence beyond that, and a switch can wake it."""
        command_name = str(args[0])
        wait = blocking_seconds(command_name, args)
        pool = self.connection_pool
        conn = self.connection or pool.get_connection()
        sock = conn._sock
        if wait is not None and sock is not None:
            sock.settimeout(None if wait == 0 else wait + (conn.socket_timeout or 0))
        set_blocking(conn, True)
        try:
            return self._send_command_parse_response(conn, command_name, *args, **options)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            if was_woken(conn):
                # We shut the socket of a command parked on the old endpoint:
                # re-sending it cannot duplicate a pop that never returned.
                mark_unsent(exc)
            conn.disconnect()
            raise
        finally:
            set_blocking(conn, False)
            if sock is not None and conn._sock is sock:
                try:
                    sock.settimeout(conn.socket_timeout)
                except OSError:
                    pass
            if self.connection is None:
                pool.release(conn)

    # -- pipelines, transactions, pub/sub -------------------------------------------

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> FailoverPipeline:
        return FailoverPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)

    def transaction(self, func: Callable[[Pipeline], Any], *watches: Any, **kwargs: Any) -> Any:
        """``Redis.transaction``; re-run once on the new endpoint when the
        endpoint failed before EXEC was sent (WATCH-based transactions are
        designed to be re-run)."""
        engine = self._geofailover_engine
        generation = engine.generation
        try:
            return super().transaction(func, *watches, **kwargs)
        except BaseException as exc:
            if exec_sent(exc) and engine.config.retry_on_failover != "all":
                raise
            if engine.config.retry_on_failover == "none" or not engine.recover(generation, exc, "MULTI"):
                raise
            return super().transaction(func, *watches, **kwargs)

    def pubsub(self, **kwargs: Any) -> FailoverPubSub:
        return FailoverPubSub(self.connection_pool, event_dispatcher=self._event_dispatcher, **kwargs)

    def client(self) -> FailoverRedis:
        return type(self)(connection_pool=self.connection_pool, single_connection_client=True)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        engine = self._geofailover_engine
        return f"<FailoverRedis name={engine.name!r} active={engine.active!r}>"


class FailoverPipeline(Pipeline):
    """Pipeline that feeds failures to the breaker and re-sends the batch when allowed.

    A transaction (MULTI/EXEC) whose EXEC may have reached the failed
    endpoint is re-sent only under ``retry_on_failover="all"``.
    """

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        engine = _engine_of(self.connection_pool)
        stack = list(self.command_stack)
        watching = self.watching
        generation = engine.generation
        try:
            result = super().execute(raise_on_error)
        except BaseException as exc:
            commands = [str(args[0]) for args, _ in stack]
            transactional = bool(getattr(self, "transaction", True)) or bool(self.explicit_transaction)
            if transactional:
                mark_exec_sent(exc, not is_unsent(exc))
            if watching or not engine.recover(generation, exc, commands[0] if commands else None):
                raise
            if not retry_allowed(engine.config.retry_on_failover, commands, exc):
                raise
            self.command_stack = stack
            return super().execute(raise_on_error)
        if engine.suspect:
            engine.record_success(generation)
        return result  # type: ignore[no-any-return]

    def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        engine = _engine_of(self.connection_pool)
        generation = engine.generation
        try:
            return super().immediate_execute_command(*args, **options)
        except BaseException as exc:
            engine.report_failure(generation, exc, str(args[0]) if args else None)
            raise


class FailoverPubSub(PubSub):
    """PubSub that moves to the active endpoint and re-subscribes there.

    It notices a switch in two ways: an error on its connection, or (for a
    subscriber whose old endpoint is silent, e.g. frozen, or still alive
    after a failback) a generation check before each read. Messages
    published while it moves are lost, as pub/sub always loses messages
    across a reconnect.
    """

    def _engine(self) -> FailoverEngine:
        return _engine_of(self.connection_pool)

    def _stale(self) -> bool:
        conn = self.connection
        return conn is not None and generation_of(conn) != self._engine().generation

    def _move(self) -> None:
        old = self.connection
        if old is not None:
            old.deregister_connect_callback(self.on_connect)
            self.connection_pool.release(old)
            self.connection = None
        conn = self.connection_pool.get_connection()
        self.connection = conn
        conn.register_connect_callback(self.on_connect)
        if self.push_handler_func is not None:
            conn._parser.set_pubsub_push_handler(self.push_handler_func)
        self.health_check_response_counter = 0
        self.on_connect(conn)  # re-subscribe channels, patterns and shard channels

    def execute_command(self, *args: Any) -> None:
        engine = self._engine()
        if self._stale():
            self._move()
        generation = engine.generation
        try:
            super().execute_command(*args)
        except BaseException as exc:
            if not engine.recover(generation, exc, str(args[0]) if args else None):
                raise
            self._move()
            super().execute_command(*args)

    def parse_response(self, block: bool = True, timeout: float = 0) -> Any:
        engine = self._engine()
        for _ in range(len(engine.config.endpoints) + 1):
            if self._stale():
                self._move()
            generation = engine.generation
            try:
                return super().parse_response(block, timeout)
            except BaseException as exc:
                if not engine.recover(generation, exc, None):
                    raise
                self._move()
                if not block:
                    return None
        return None
