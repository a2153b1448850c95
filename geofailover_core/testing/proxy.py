"""A TCP fault proxy: network faults on the data path, no root needed.

Put a ``FaultProxy`` between a client and a server and the test can blackhole,
delay, reset or refuse that one endpoint while the server itself stays healthy,
which is what a network fault looks like from the client.

Design choices, and why:

* One selector thread serves every connection. Faults then switch atomically
  (a control call returns only after the I/O thread applied it), timers for
  ``delay()`` are exact per chunk instead of accumulating, and ``close()``
  has exactly one thread to join.
* Bytes are never dropped. A blackhole stops *reading* so data stays in kernel
  buffers and TCP backpressure stalls the sender; on ``heal()`` everything is
  delivered in order. Dropping bytes inside a live stream is not a network
  fault (TCP would retransmit); it silently corrupts replication streams.
* Resets use ``SO_LINGER`` 0 so peers get a real RST, not a polite FIN.
"""

from __future__ import annotations

import errno
import selectors
import socket
import struct
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypeVar

from .ports import bind_listener

if TYPE_CHECKING:
    from .server import Endpoint

__all__ = ["FaultProxy"]

T = TypeVar("T")

_READ_SIZE = 65536
#: Per-direction bytes held in user space before the proxy stops reading, so a
#: slow or stalled receiver pushes back on the sender instead of growing memory.
_QUEUE_LIMIT = 256 * 1024
_CONTROL_TIMEOUT = 5.0

_PASS = "pass"
_BLACKHOLE = "blackhole"
_RESET = "reset"


def _abort(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0) so the peer sees 'connection reset'."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def _nodelay(sock: socket.socket) -> None:
    # Without it Nagle + delayed ACK can add ~40 ms to small forwarded writes.
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


class _Pipe:
    """One direction of a proxied connection: bytes read from ``src`` and not
    yet written to ``dst``, each chunk with the time it is due (for delay).
    A ``None`` chunk is the source's EOF, forwarded as ``shutdown(SHUT_WR)``.
    """

    __slots__ = ("blocked", "dst", "eof", "queue", "queued", "shut", "src")

    def __init__(self, src: socket.socket, dst: socket.socket) -> None:
        self.src = src
        self.dst = dst
        self.queue: deque[tuple[float, memoryview | None]] = deque()
        self.queued = 0
        self.eof = False
        self.shut = False
        self.blocked = False

    def wants_read(self) -> bool:
        return not self.eof and self.queued < _QUEUE_LIMIT


class _Conn:
    __slots__ = ("c2u", "client", "connecting", "u2c", "upstream")

    def __init__(self, client: socket.socket, upstream: socket.socket, connecting: bool) -> None:
        self.client = client
        self.upstream = upstream
        self.connecting = connecting
        self.c2u = _Pipe(client, upstream)
        self.u2c = _Pipe(upstream, client)

    @property
    def done(self) -> bool:
        return self.c2u.shut and self.u2c.shut


@dataclass
class _Command:
    fn: Callable[[], object]
    done: threading.Event = field(default_factory=threading.Event)
    result: object = None
    error: BaseException | None = None


class FaultProxy:
    """TCP proxy from ``host:port`` to ``upstream`` with switchable faults.

    Faults (each replaces the previous one; ``heal()`` undoes all):

    * :meth:`blackhole` - nothing moves in either direction, new connections
      are accepted but stall (clients see *read* timeouts, not connect ones).
    * :meth:`delay` - every chunk is held ``ms`` in each direction (RTT grows by 2 x ``ms``).
    * :meth:`reset` - live and new connections get an RST.
    * :meth:`refuse` - the port stops listening (connection refused).

    ``upstream`` may be a ``(host, port)`` tuple or anything with ``host`` and
    ``port`` attributes, such as a :class:`RedisServer`; it is resolved once,
    and since a restarted server keeps its port the proxy keeps working.
    """

    def __init__(
        self,
        upstream: tuple[str, int] | Endpoint,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        name: str | None = None,
    ) -> None:
        if isinstance(upstream, tuple):
            up_host, up_port = upstream
            self._password: str | None = None
        else:
            up_host, up_port = upstream.host, upstream.port
            self._password = getattr(upstream, "password", None)
        self._upstream = (up_host, int(up_port))
        family, _, _, _, sockaddr = socket.getaddrinfo(up_host, up_port, type=socket.SOCK_STREAM)[0]
        self._upstream_family = family
        self._upstream_addr = sockaddr
        self._name = name
        self._host = host

        self._listener: socket.socket | None = bind_listener(host, port)
        self._listener.setblocking(False)
        self._port: int = self._listener.getsockname()[1]

        self._mode = _PASS
        self._delay = 0.0
        self._conns: set[_Conn] = set()
        self._masks: dict[socket.socket, int] = {}
        self._accepted_total = 0

        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._sel.register(self._listener, selectors.EVENT_READ, None)

        self._commands: deque[_Command] = deque()
        self._cmd_lock = threading.Lock()
        self._stopping = False
        self._closed = False
        self._crash: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"FaultProxy:{self._port}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ facts

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """``redis://[:password@]host:port/0`` pointing at the proxy.

        Carries the upstream server's password (if it has one) so the URL
        works as-is, like :attr:`RedisServer.url`.
        """
        host = f"[{self._host}]" if ":" in self._host else self._host
        auth = f":{urllib.parse.quote(self._password, safe='')}@" if self._password else ""
        return f"redis://{auth}{host}:{self._port}/0"

    @property
    def upstream(self) -> tuple[str, int]:
        return self._upstream

    @property
    def mode(self) -> str:
        """``pass``, ``blackhole``, ``reset`` or ``refuse``."""
        return self._call(lambda: "refuse" if self._listener is None else self._mode)

    @property
    def delay_ms(self) -> float:
        return self._call(lambda: self._delay * 1000.0)

    @property
    def connection_count(self) -> int:
        """Live proxied connections (lets tests wait for a client to connect)."""
        return self._call(lambda: len(self._conns))

    @property
    def accepted_total(self) -> int:
        return self._call(lambda: self._accepted_total)

    @property
    def closed(self) -> bool:
        return self._closed

    # ----------------------------------------------------------------- faults

    def blackhole(self) -> None:
        """Stall both directions; keep every byte for delivery after ``heal()``."""
        self._call(lambda: self._set_mode(_BLACKHOLE))

    def delay(self, ms: float) -> None:
        """Hold each chunk ``ms`` milliseconds per direction (0 removes the delay).

        Applies to bytes read from now on; the connect handshake itself is not
        delayed (the proxy accepts immediately).
        """
        if ms < 0:
            raise ValueError("delay must be >= 0 ms")

        def apply() -> None:
            self._delay = ms / 1000.0

        self._call(apply)

    def reset(self) -> None:
        """RST every live connection, and every new one until ``heal()``."""
        self._call(lambda: self._set_mode(_RESET))

    def refuse(self, *, reset_existing: bool = True) -> None:
        """Stop listening so new connects get ECONNREFUSED.

        By default live connections are reset too, as when the endpoint's
        process dies; ``reset_existing=False`` keeps them flowing.
        """

        def apply() -> None:
            if reset_existing:
                self._abort_all()
            listener, self._listener = self._listener, None
            if listener is not None:
                self._unwatch(listener)
                # shutdown() first: close() alone let a racing accept keep the
                # backlog alive, and queued clients saw "reset", not "refused".
                try:
                    listener.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                listener.close()

        self._call(apply)

    def heal(self) -> None:
        """Back to plain pass-through on the same port; stalled bytes flow on."""

        def apply() -> None:
            if self._listener is None:
                listener = bind_listener(self._host, self._port)
                listener.setblocking(False)
                self._sel.register(listener, selectors.EVENT_READ, None)
                self._listener = listener
            self._mode = _PASS
            self._delay = 0.0

        self._call(apply)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the I/O thread and reset every connection. Idempotent."""
        with self._cmd_lock:
            if self._closed:
                return
            self._closed = True
            self._stopping = True
        self._wake()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"{self!r}: I/O thread did not stop within {timeout} s")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        label = f"{self._name} " if self._name else ""
        state = "closed" if self._closed else ("refuse" if self._listener is None else self._mode)
        up_host, up_port = self._upstream
        return f"<FaultProxy {label}{self._host}:{self._port} -> {up_host}:{up_port} {state}>"

    # ----------------------------------------------------- control plumbing

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the I/O thread and wait, so a fault is fully in effect
        when the control method returns (no byte slips through afterwards)."""
        if threading.current_thread() is self._thread:
            return fn()
        command = _Command(fn)
        with self._cmd_lock:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed")
            self._commands.append(command)
        self._wake()
        if not command.done.wait(_CONTROL_TIMEOUT):
            raise RuntimeError(f"{self!r}: I/O thread did not answer (crash: {self._crash!r})")
        if command.error is not None:
            raise command.error
        return command.result  # type: ignore[return-value]

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # buffer full means a wake-up is already pending; closed means stopped

    def _drain_commands(self) -> None:
        while True:
            with self._cmd_lock:
                if not self._commands:
                    return
                command = self._commands.popleft()
            try:
                command.result = command.fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                command.error = exc
            command.done.set()

    # ------------------------------------------------------------ I/O thread

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._drain_commands()
                if self._stopping:
                    break
                now = time.monotonic()
                for conn in list(self._conns):
                    self._flush(conn, now)
                for conn in self._conns:
                    self._watch_conn(conn)
                timeout = self._next_timeout(time.monotonic())
                for key, mask in self._sel.select(timeout):
                    self._dispatch(key, mask)
        except BaseException as exc:  # noqa: BLE001 - recorded, reported to callers
            self._crash = exc
        finally:
            self._teardown()

    def _teardown(self) -> None:
        self._abort_all()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._cmd_lock:
            self._closed = True
            pending = list(self._commands)
            self._commands.clear()
        for command in pending:
            command.error = RuntimeError(f"{self!r} is closed")
            command.done.set()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def _set_mode(self, mode: str) -> None:
        self._mode = mode
        if mode == _RESET:
            self._abort_all()

    def _dispatch(self, key: selectors.SelectorKey, mask: int) -> None:
        sock = key.fileobj
        if sock is self._wake_r:
            try:
                while self._wake_r.recv(4096):
                    pass
            except OSError:
                pass  # BlockingIOError: drained
            return
        if sock is self._listener:
            self._accept()
            return
        conn = key.data
        if not isinstance(conn, _Conn) or conn not in self._conns:
            return  # aborted earlier in this batch of events
        if sock is conn.upstream and conn.connecting:
            error = conn.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                self._abort_conn(conn)  # upstream down: the client sees a reset
            else:
                conn.connecting = False
            return
        incoming = conn.c2u if sock is conn.client else conn.u2c
        outgoing = conn.u2c if sock is conn.client else conn.c2u
        if mask & selectors.EVENT_WRITE:
            outgoing.blocked = False
        if mask & selectors.EVENT_READ and self._mode == _PASS and incoming.wants_read():
            self._read(conn, incoming)

    def _accept(self) -> None:
        listener = self._listener
        if listener is None:
            return
        while True:
            try:
                client, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. EMFILE; the next select() retries
            self._accepted_total += 1
            if self._mode == _RESET:
                _abort(client)
                continue
            client.setblocking(False)
            _nodelay(client)
            upstream = socket.socket(self._upstream_family, socket.SOCK_STREAM)
            upstream.setblocking(False)
            _nodelay(upstream)
            result = upstream.connect_ex(self._upstream_addr)
            if result not in (0, errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
                _abort(upstream)
                _abort(client)
                continue
            self._conns.add(_Conn(client, upstream, connecting=result != 0))

    def _read(self, conn: _Conn, pipe: _Pipe) -> None:
        try:
            data = pipe.src.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._abort_conn(conn)
            return
        due = time.monotonic() + self._delay
        if not data:
            pipe.eof = True
            pipe.queue.append((due, None))
            return
        pipe.queue.append((due, memoryview(data)))
        pipe.queued += len(data)

    def _flush(self, conn: _Conn, now: float) -> None:
        if self._mode != _PASS or conn.connecting:
            return
        for pipe in (conn.c2u, conn.u2c):
            while pipe.queue and not pipe.blocked:
                due, chunk = pipe.queue[0]
                if due > now:
                    break
                if chunk is None:
                    pipe.queue.popleft()
                    try:
                        pipe.dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        self._abort_conn(conn)
                        return
                    pipe.shut = True
                    continue
                try:
                    sent = pipe.dst.send(chunk)
                except (BlockingIOError, InterruptedError):
                    pipe.blocked = True
                    break
                except OSError:
                    self._abort_conn(conn)
                    return
                pipe.queued -= sent
                if sent < len(chunk):
                    pipe.queue[0] = (due, chunk[sent:])
                    pipe.blocked = True
                else:
                    pipe.queue.popleft()
        if conn.done:
            self._close_conn(conn)

    def _next_timeout(self, now: float) -> float | None:
        if self._mode != _PASS:
            return None
        earliest: float | None = None
        for conn in self._conns:
            if conn.connecting:
                continue
            for pipe in (conn.c2u, conn.u2c):
                if pipe.queue and not pipe.blocked:
                    due = pipe.queue[0][0]
                    earliest = due if earliest is None else min(earliest, due)
        if earliest is None:
            return None
        return max(0.0, earliest - now)

    def _watch_conn(self, conn: _Conn) -> None:
        if conn.connecting:
            self._watch(conn.client, 0, conn)
            self._watch(conn.upstream, selectors.EVENT_WRITE, conn)
            return
        if self._mode != _PASS:
            # Not reading is what keeps the bytes (and the backpressure) in the kernel.
            self._watch(conn.client, 0, conn)
            self._watch(conn.upstream, 0, conn)
            return
        for sock, incoming, outgoing in ((conn.client, conn.c2u, conn.u2c), (conn.upstream, conn.u2c, conn.c2u)):
            mask = 0
            if incoming.wants_read():
                mask |= selectors.EVENT_READ
            if outgoing.blocked:
                mask |= selectors.EVENT_WRITE
            self._watch(sock, mask, conn)

    def _watch(self, sock: socket.socket, mask: int, conn: _Conn) -> None:
        """Keep the selector registration equal to ``mask`` (0: unregistered)."""
        current = self._masks.get(sock, 0)
        if mask == current:
            return
        if current == 0:
            self._sel.register(sock, mask, conn)
        elif mask == 0:
            self._sel.unregister(sock)
        else:
            self._sel.modify(sock, mask, conn)
        if mask:
            self._masks[sock] = mask
        else:
            del self._masks[sock]

    def _unwatch(self, sock: socket.socket) -> None:
        self._masks.pop(sock, None)
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError):
            pass  # was not registered

    def _abort_conn(self, conn: _Conn) -> None:
        self._conns.discard(conn)
        for sock in (conn.client, conn.upstream):
            self._unwatch(sock)
            _abort(sock)

    def _close_conn(self, conn: _Conn) -> None:
        self._conns.discard(conn)
        for sock in (conn.client, conn.upstream):
            self._unwatch(sock)
            sock.close()

    def _abort_all(self) -> None:
        for conn in list(self._conns):
            self._abort_conn(conn)
