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

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import redis
from redis.client import Pipeline, PubSub

from .commands import BLOCKING, blocking_seconds, retry_allowed
from .config import EndpointConfig, FailoverConfig, check_value, split_options
from .defaults import BOUNDS
from .engine import FailoverEngine
from .errors import ConfigurationError
from .pool import FailoverPoolMixin, failover_pool, wake
from .registry import acquire, release
from .stamps import exec_sent, generation_of, is_unsent, mark_exec_sent, mark_unsent, set_blocking, stamp_generation, was_woken

EndpointSpec = EndpointConfig | Mapping[str, Any] | str
_BLOCKING_NAMES = BLOCKING | {name.lower() for name in BLOCKING}
_REDIS_EXECUTE = redis.Redis.execute_command


def _engine_of(pool: Any) -> FailoverEngine:
    if not isinstance(pool, FailoverPoolMixin):
        raise TypeError("geofailover clients need a geofailover connection pool")
    return pool.engine


def client_config(
    endpoints: Sequence[EndpointSpec] | str | None,
    name: str | None,
    config: FailoverConfig | Mapping[str, Any] | str | None,
    engine_options: dict[str, Any],
) -> FailoverConfig | None:
    """The configuration a client's constructor arguments describe; None when
    they only name an engine already configured in this process."""
    if config is not None:
        if endpoints is not None or engine_options:
            raise ConfigurationError("config", "given together with endpoints or engine options", "put everything in config")
        cfg = FailoverConfig.coerce(config)
        if name is not None and name != cfg.name:
            cfg = cfg.with_options(name=name)
        return cfg
    if endpoints is None:
        if name is None:
            raise ConfigurationError("endpoints", "missing", "pass endpoints=[...] or the name of a configured engine")
        return None
    if isinstance(endpoints, str):
        data: dict[str, Any] = {"endpoints": endpoints, **engine_options}
    else:
        data = {"endpoints": list(endpoints), **engine_options}
    if name is not None:
        data["name"] = name
    return FailoverConfig.from_dict(data)


def acquire_for(config: FailoverConfig | None, name: str | None, *, own_connections: bool = False) -> FailoverEngine:
    """The engine of ``config`` (or the one called ``name``), with a share taken for
    the client (:func:`~geofailover_core.registry.release` gives it back). Shared
    by the sync and the async clients, so a sync and an async client with one
    name share one engine. ``own_connections``: the client's pool follows
    ``config``'s connection options, so they may differ from the engine's."""
    if config is None:
        try:
            return acquire(name=name)
        except KeyError:
            raise ConfigurationError("name", f"no configuration named {name!r} exists in this process", "pass endpoints=[...] the first time") from None
    return acquire(config, own_connections=own_connections)


@contextlib.contextmanager
def blocking_socket(conn: Any, engine: FailoverEngine, wait: float | None) -> Iterator[None]:
    """Around a command that waits server-side for ``wait`` seconds (0: forever).

    The socket timeout is lengthened by the wait, so a long BLPOP is never
    mistaken for a frozen endpoint; the connection is marked so that a switch
    wakes it instead of leaving it parked on the old endpoint. The mark is set
    *before* the generation is checked, so a switch can never fall between
    the two unseen. A socket a switch woke, or one found stale, carries an
    error marked as never sent: re-sending a pop that never returned cannot
    apply it twice.
    """
    conn.connect()  # a single-connection client's socket may be gone: the long timeout needs a socket
    set_blocking(conn, True)
    sock = conn._sock
    try:
        if generation_of(conn) != engine.generation:
            stale = redis.exceptions.ConnectionError(f"geofailover[{engine.name}]: the endpoint changed before the command was sent")
            stamp_generation(stale, generation_of(conn, engine.generation) or 0)
            mark_unsent(stale)
            raise stale
        if wait is not None and sock is not None:
            sock.settimeout(None if wait == 0 else wait + (conn.socket_timeout or 0))
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        if was_woken(conn):
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
        self._geofailover_share = False
        if connection_pool is None:
            connection_pool = self._build_pool(endpoints, name, config, blocking_pool, max_connections, pool_timeout, options)
            self._geofailover_share = True  # acquire_for took a share of the engine for this client
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
        own = client_config(endpoints, name, config, engine_options)
        engine = acquire_for(own, name, own_connections=True)
        try:
            return failover_pool(
                engine, blocking_pool=blocking_pool, max_connections=max_connections, pool_timeout=pool_timeout, config=own, **client_options
            )
        except BaseException:
            release(engine)
            raise

    @classmethod
    def from_url(cls, url: str, **options: Any) -> FailoverRedis:  # type: ignore[override]
        """``FailoverRedis.from_url("redis://a/0?name=us&weight=2;redis://b/0?name=eu", **options)``."""
        return cls(url, **options)

    @property
    def geofailover(self) -> FailoverEngine:
        """The failover engine: ``active``, ``status()``, ``failover_to()``, ``pin()``, ``on()``..."""
        return self._geofailover_engine

    def close(self) -> None:
        """Close this client's connections and give back its share of the engine:
        closing the last client of an engine stops its threads and frees its name."""
        super().close()
        if getattr(self, "_geofailover_share", False):
            self._geofailover_share = False
            release(self._geofailover_engine)

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
        pool = self.connection_pool
        conn = self.connection or pool.get_connection()
        try:
            with blocking_socket(conn, self._geofailover_engine, blocking_seconds(command_name, args)):
                return self._send_command_parse_response(conn, command_name, *args, **options)
        finally:
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
        dispatcher = getattr(self, "_event_dispatcher", None)  # redis-py >= 5.3
        if dispatcher is not None:
            kwargs.setdefault("event_dispatcher", dispatcher)
        return FailoverPubSub(self.connection_pool, **kwargs)

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

    def _execute_transaction(self, connection: Any, commands: Any, raise_on_error: bool) -> Any:
        with self._blocking(connection, commands):
            return super()._execute_transaction(connection, commands, raise_on_error)

    def _execute_pipeline(self, connection: Any, commands: Any, raise_on_error: bool) -> Any:
        with self._blocking(connection, commands):
            return super()._execute_pipeline(connection, commands, raise_on_error)

    def _blocking(self, connection: Any, commands: Any) -> contextlib.AbstractContextManager[None]:
        """A batch with a blocking command (BLPOP inside MULTI or a pipeline)
        waits as long as its longest wait, like the command alone would."""
        waits = [w for args, _ in commands if (w := blocking_seconds(str(args[0]), args)) is not None]
        if not waits:
            return contextlib.nullcontext()
        return blocking_socket(connection, _engine_of(self.connection_pool), 0.0 if 0.0 in waits else max(waits))

    def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        engine = _engine_of(self.connection_pool)
        generation = engine.generation
        try:
            return super().immediate_execute_command(*args, **options)
        except BaseException as exc:
            engine.report_failure(generation, exc, str(args[0]) if args else None)
            raise


class FailoverPubSub(PubSub):
    """PubSub that follows every switch at the switch, and re-subscribes there.

    The engine tells it about a switch (``on_switch``, under the engine lock:
    it only schedules); the engine's switch worker then connects to the new
    endpoint, re-subscribes every channel, pattern and shard channel, and
    wakes a reader blocked on the old socket (shutdown, never close under a
    reader). So it follows a manual failover, a failback while the old
    endpoint stays up and a frozen endpoint alike, and a subscriber that is
    not reading at that moment is already subscribed on the new endpoint:
    messages published there meanwhile wait in its socket. Messages published
    on the old endpoint during the move are lost, as pub/sub always loses
    messages across a reconnect.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._geo_lock = threading.RLock()  # guards self.connection against the switch worker
        self._geo_readers = 0
        self._geo_retired: list[Any] = []  # old connections a reader may still be blocked on
        self._engine().add_switch_listener(self)

    def _engine(self) -> FailoverEngine:
        return _engine_of(self.connection_pool)

    def _stale(self) -> bool:
        conn = self.connection
        return conn is not None and generation_of(conn) != self._engine().generation

    # -- following a switch ---------------------------------------------------------

    def on_switch(self, generation: int) -> None:
        if self.connection is not None and self.subscribed:
            self._engine().submit(self._follow)

    def on_close(self) -> None:
        conn = self.connection
        if conn is not None:
            wake(conn)

    def _follow(self) -> None:
        with self._geo_lock:
            if self._stale() and self._engine().active is not None:
                self._move()

    def _move(self) -> None:
        """Re-subscribe on the active endpoint (caller holds ``_geo_lock``)."""
        old = self.connection
        if old is not None:
            old.deregister_connect_callback(self.on_connect)
            self.connection = None
            if self._geo_readers:
                self._geo_retired.append(old)
                wake(old)  # the reader releases it
            else:
                self.connection_pool.release(old)
        conn = self.connection_pool.get_connection()
        set_blocking(conn, True)  # a subscriber's wait is its own, never a stall
        self.connection = conn
        conn.register_connect_callback(self.on_connect)
        if self.push_handler_func is not None:
            conn._parser.set_pubsub_push_handler(self.push_handler_func)
        self.health_check_response_counter = 0
        self.on_connect(conn)  # re-subscribe channels, patterns and shard channels

    def _reconnect(self, conn: Any, *args: Any, **kwargs: Any) -> None:
        # redis-py reconnects a failed connection in place; one the engine has
        # switched away from must not be re-opened to the old endpoint.
        if conn is not self.connection or generation_of(conn) != self._engine().generation:
            conn.disconnect()
            return
        super()._reconnect(conn, *args, **kwargs)

    # -- commands and reads -----------------------------------------------------------

    def execute_command(self, *args: Any) -> None:
        engine = self._engine()
        with self._geo_lock:
            if self._stale():
                self._move()
            generation = engine.generation
            try:
                super().execute_command(*args)
            except BaseException as exc:
                if not engine.recover(generation, exc, str(args[0]) if args else None):
                    raise
                self._move()
            finally:
                if self.connection is not None:
                    set_blocking(self.connection, True)  # a subscriber's wait is its own, never a stall

    def _read_blocking(self, conn: Any) -> Any:
        """A blocking read (``listen()``) waits for the next message however long
        it takes, as in redis-py >= 6; older redis-py bounded it by the socket
        timeout, which geofailover sets finite, so an idle subscriber raised."""
        sock = getattr(conn, "_sock", None)
        if sock is None:
            return super().parse_response(True, 0)
        sock.settimeout(None)
        try:
            return super().parse_response(True, 0)
        finally:
            if conn._sock is sock:
                with contextlib.suppress(OSError):
                    sock.settimeout(conn.socket_timeout)

    def parse_response(self, block: bool = True, timeout: float = 0) -> Any:
        engine = self._engine()
        for _ in range(len(engine.config.endpoints) + 1):
            with self._geo_lock:
                if self._stale():
                    self._move()
                conn = self.connection
                generation = engine.generation
                self._geo_readers += 1
            try:
                if block:
                    return self._read_blocking(conn)
                return super().parse_response(block, timeout)
            except BaseException as exc:
                if conn is not self.connection:  # the switch worker moved us while we read: read the new socket
                    if not block:
                        return None
                    continue
                if not engine.recover(generation, exc, None):
                    raise
                with self._geo_lock:
                    self._move()
                if not block:
                    return None
            finally:
                with self._geo_lock:
                    self._geo_readers -= 1
                    if not self._geo_readers:
                        retired, self._geo_retired = self._geo_retired, []
                        for old in retired:
                            self.connection_pool.release(old)
        return None
