"""Real redis-server processes that tests can kill, freeze and restart.

A failover client is only as good as its behaviour against real failures, and
the real failures of a Redis endpoint are process-level: the process dies
(connection refused), hangs (handshake completes, replies never come), or comes
back empty on the same port. ``RedisServer`` produces exactly those, with
deterministic timing, and cleans up even when the test run itself is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .binary import ServerBinary, find_redis_server
from .ports import pick_free_port
from .waiting import wait_until

__all__ = ["Endpoint", "RedisServer", "ServerStartError", "start_all"]

_PR_SET_PDEATHSIG = 1
_LOG_TAIL_LINES = 25


class Endpoint(Protocol):
    """Anything clients can connect to: a server, a proxy in front of one."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


class ServerStartError(RuntimeError):
    """The server process exited or never answered PING before the deadline."""


class _ServerExited(Exception):
    def __init__(self, returncode: int, log_tail: str) -> None:
        super().__init__(returncode, log_tail)
        self.returncode = returncode
        self.log_tail = log_tail

    @property
    def address_in_use(self) -> bool:
        return "Address already in use" in self.log_tail


def _no_retry() -> Retry:
    """Zero retries: redis-py's default nests retries and can block for minutes
    against a blackholed endpoint, which would make every fault test slow and
    every timing assertion meaningless."""
    return Retry(NoBackoff(), 0)


_prctl: Callable[..., int] | None = None
_prctl_loaded = False


def _load_prctl() -> Callable[..., int] | None:
    # Resolved in the parent: doing ctypes symbol lookup between fork and exec
    # would risk taking loader locks another thread held at fork time.
    global _prctl, _prctl_loaded
    if not _prctl_loaded:
        _prctl_loaded = True
        try:
            func: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
            _prctl = func
        except (OSError, AttributeError):
            _prctl = None
    return _prctl


def _child_setup_factory() -> Callable[[], None] | None:
    """Make the server die with the test process (PR_SET_PDEATHSIG).

    Without it a SIGKILLed or crashed pytest leaves orphan servers holding
    ports. The signal fires when the *spawning thread* exits, so servers should
    be spawned from the main thread (pytest fixtures are).
    """
    prctl = _load_prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def _child_setup() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # parent died before prctl took effect
            os._exit(1)

    return _child_setup


def _quote_config_value(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


class RedisServer:
    """One real server process on ``host:port`` with its own temporary directory.

    Faults map to process operations: :meth:`kill` (refused), :meth:`freeze`
    (hang: connects succeed, replies never arrive), :meth:`restart` (failback
    to an *empty* server on the same port). The argv never changes across
    restarts, so clients and proxies pointing at the port keep working.
    """

    def __init__(
        self,
        binary: ServerBinary | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        password: str | None = None,
        extra_args: Sequence[str] = (),
        start_attempts: int = 5,
        name: str | None = None,
    ) -> None:
        if binary is None:
            binary = find_redis_server()
            if binary is None:
                raise RuntimeError("no redis-server binary found (set $REDIS_SERVER or install redis-server)")
        if start_attempts < 1:
            raise ValueError("start_attempts must be >= 1")
        self._binary = binary
        self._bind_host = host
        self._port = port
        self._auto_port = port is None
        self._password = password
        self._extra_args = tuple(extra_args)
        self._start_attempts = start_attempts
        self._name = name
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._frozen = False
        self._log_offset = 0
        self._stdout_offset = 0
        self._control_client: redis.Redis | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ facts

    @property
    def binary(self) -> ServerBinary:
        return self._binary

    @property
    def name(self) -> str | None:
        return self._name

    @property
    def host(self) -> str:
        """Address clients connect to (a wildcard bind maps to loopback)."""
        if self._bind_host in ("", "0.0.0.0"):
            return "127.0.0.1"
        if self._bind_host in ("::", "::0"):
            return "::1"
        return self._bind_host

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("port not assigned yet: start() the server first")
        return self._port

    @property
    def password(self) -> str | None:
        return self._password

    @property
    def url(self) -> str:
        """``redis://[:password@]host:port/0``; includes the password so the URL works as-is."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        auth = f":{urllib.parse.quote(self._password, safe='')}@" if self._password else ""
        return f"redis://{auth}{host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and self._alive(proc) else None

    @property
    def is_running(self) -> bool:
        """True while the process exists (also when frozen)."""
        proc = self._proc
        return proc is not None and self._alive(proc)

    @staticmethod
    def _alive(proc: subprocess.Popen[bytes]) -> bool:
        # In a forked child (a gunicorn-like test) the server is not our child:
        # poll() would wrongly report it dead, so ask the kernel instead.
        if getattr(proc, "_geofailover_owner", os.getpid()) != os.getpid():
            try:
                os.kill(proc.pid, 0)
            except OSError:
                return False
            return True
        return proc.poll() is None

    @property
    def is_frozen(self) -> bool:
        return self._frozen and self.is_running

    @property
    def dir(self) -> Path:
        return self._ensure_dir()

    @property
    def log_path(self) -> Path:
        return self._ensure_dir() / "redis.log"

    @property
    def stdout_path(self) -> Path:
        return self._ensure_dir() / "stdout.log"

    @property
    def argv(self) -> list[str]:
        """The exact command line (secrets live in a 0600 config file, not here)."""
        directory = self._ensure_dir()
        args = [self._binary.path]
        if self._password is not None:
            args.append(str(directory / "secrets.conf"))
        args += [
            "--port", str(self.port),
            "--bind", self._bind_host,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--repl-diskless-sync-delay", "0",
            "--dir", str(directory),
            "--logfile", str(directory / "redis.log"),
        ]  # fmt: skip
        if self._binary.supports_debug_flag:
            args += ["--enable-debug-command", "local"]
        args += self._extra_args
        return args

    # -------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 5.0) -> Self:
        """Spawn the server and return once it answers PING.

        With an automatically chosen port, "address already in use" (another
        process won the race for the port) is retried on a new port, up to
        ``start_attempts`` times.
        """
        with self._lock:
            if self.is_running:
                raise RuntimeError(f"{self!r} is already running")
            deadline = time.monotonic() + timeout
            self._launch()
            self._finish_start(deadline)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Graceful SIGTERM shutdown, escalating to SIGKILL after ``timeout``.

        The temporary directory (and log) is kept for inspection; ``close()``
        removes it.
        """
        with self._lock:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                self._after_exit()
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)  # a stopped process would ignore SIGTERM
                proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill_proc(proc)
            self._after_exit()

    def kill(self) -> None:
        """SIGKILL and reap: afterwards connects are refused at once."""
        with self._lock:
            proc = self._proc
            if proc is not None:
                self._kill_proc(proc)
            self._after_exit()

    def restart(self, timeout: float = 5.0) -> Self:
        """Kill if needed and start again on the same port with the same argv.

        The new server is empty (persistence is off), like a failed-over
        region coming back: tests must re-seed or assert emptiness.
        """
        with self._lock:
            self.kill()
            if self._port is None:
                return self.start(timeout)
            deadline = time.monotonic() + timeout
            self._launch()
            try:
                self._await_ready(deadline)
            except _ServerExited as exc:
                raise ServerStartError(
                    f"{self!r} failed to restart on port {self._port} (exit {exc.returncode}):\n{exc.log_tail}"
                ) from None
        return self

    def freeze(self) -> None:
        """SIGSTOP: the kernel still completes TCP handshakes from the backlog,
        so clients see *read* timeouts, even on new connections."""
        with self._lock:
            proc = self._require_running()
            os.kill(proc.pid, signal.SIGSTOP)
            self._frozen = True

    def thaw(self) -> None:
        """SIGCONT: the server resumes and answers everything queued meanwhile."""
        with self._lock:
            proc = self._require_running()
            os.kill(proc.pid, signal.SIGCONT)
            self._frozen = False

    def close(self) -> None:
        """Kill (SIGCONT first) and delete the temporary directory. Idempotent."""
        with self._lock:
            self.kill()
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    def __enter__(self) -> Self:
        if not self.is_running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---------------------------------------------------------------- clients

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new redis-py client with short timeouts and no retries.

        Defaults: ``socket_timeout=1``, ``socket_connect_timeout=1``, zero
        retries (redis-py's default retry policy hides faults for seconds to
        minutes). Any keyword overrides the defaults. The caller owns (and
        should close) the client.
        """
        options: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "password": self._password,
            "socket_timeout": 1.0,
            "socket_connect_timeout": 1.0,
            "retry": _no_retry(),
        }
        options.update(kwargs)
        return redis.Redis(**options)

    def _control(self) -> redis.Redis:
        if self._control_client is None:
            self._control_client = self.client(socket_timeout=2.0, decode_responses=True)
        return self._control_client

    def info(self, section: str | None = None) -> dict[str, Any]:
        """``INFO [section]`` as a dict, via a cached control connection."""
        result: dict[str, Any] = self._control().info(section) if section else self._control().info()
        return result

    def replicaof(
        self,
        other: Endpoint | None,
        *,
        password: str | None = None,
        wait: bool = False,
        timeout: float = 5.0,
    ) -> None:
        """Make this server a replica of ``other`` (``None``: promote to primary).

        ``other`` may be another :class:`RedisServer` or anything with ``host``
        and ``port``, notably a :class:`FaultProxy` in front of the primary, to
        fault the replication link alone. ``masterauth`` is set from
        ``password`` or ``other.password``.

        With ``wait=True`` returns only once writes actually stream to this
        replica. ``master_link_status:up`` alone is not enough: after a
        diskless full sync the primary holds the stream until the replica's
        first ``REPLCONF ACK``; when the immediate ACK loses a race the next one
        comes from the once-a-second cron, so about one link-up in five
        delivered the first write ~1 s late (Redis 7.0.15, measured). The wait
        publishes to a private channel (propagated, but no keyspace change) and
        polls until this replica's offset passes it: 13 ms usually, ~1 s when
        the race hits. ``--repl-diskless-sync no`` in ``extra_args`` of the
        primary trades that for a steady ~100 ms link-up.
        """
        control = self._control()
        if other is None:
            control.execute_command("REPLICAOF", "NO", "ONE")
            return
        auth = password if password is not None else getattr(other, "password", None)
        if auth is not None:
            control.config_set("masterauth", auth)
        control.execute_command("REPLICAOF", other.host, str(other.port))
        if wait:
            self._wait_for_stream(other, auth, timeout)

    def _wait_for_stream(self, other: Endpoint, auth: str | None, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        wait_until(
            lambda: self.info("replication").get("master_link_status") == "up",
            timeout=timeout,
            message=f"{self!r} did not link up with {other!r}",
        )
        with redis.Redis(
            host=other.host,
            port=other.port,
            password=auth,
            socket_timeout=max(0.1, deadline - time.monotonic()),
            socket_connect_timeout=1.0,
            retry=_no_retry(),
        ) as primary:
            primary.publish("__geofailover:replication-probe", "1")
            target = int(primary.info("replication")["master_repl_offset"])
        wait_until(
            lambda: int(self.info("replication").get("master_repl_offset", -1)) >= target,
            timeout=max(0.0, deadline - time.monotonic()),
            message=f"{self!r} linked to {other!r} but writes do not stream",
        )

    # -------------------------------------------------------------- internals

    def _ensure_dir(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="geofailover-redis-"))
        return self._dir

    def _require_running(self) -> subprocess.Popen[bytes]:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"{self!r} is not running")
        return proc

    def _write_secrets(self, directory: Path) -> None:
        if self._password is None:
            return
        path = directory / "secrets.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"requirepass {_quote_config_value(self._password)}\n")

    def _launch(self) -> None:
        """Spawn the process without waiting (lets ``start_all`` overlap start-ups)."""
        directory = self._ensure_dir()
        if self._port is None:
            self._port = pick_free_port(self.host)
        self._write_secrets(directory)
        log = directory / "redis.log"
        stdout = directory / "stdout.log"
        self._log_offset = log.stat().st_size if log.exists() else 0
        self._stdout_offset = stdout.stat().st_size if stdout.exists() else 0
        with open(stdout, "ab") as out:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=directory,
                preexec_fn=_child_setup_factory(),
                start_new_session=True,  # terminal Ctrl-C goes to pytest only; teardown kills us
                close_fds=True,
            )
        self._proc._geofailover_owner = os.getpid()  # type: ignore[attr-defined]
        self._frozen = False

    def _finish_start(self, deadline: float) -> None:
        attempts = 1
        while True:
            try:
                self._await_ready(deadline)
                return
            except _ServerExited as exc:
                if exc.address_in_use and self._auto_port and attempts < self._start_attempts:
                    attempts += 1
                    self._port = None
                    self._launch()
                    continue
                raise ServerStartError(f"{self!r} exited during start-up (exit {exc.returncode}):\n{exc.log_tail}") from None

    def _await_ready(self, deadline: float) -> None:
        proc = self._require_proc()
        while True:
            returncode = proc.poll()
            if returncode is not None:
                self._proc = None
                raise _ServerExited(returncode, self._log_tail())
            if self._ping_once(min(0.1, max(0.02, deadline - time.monotonic()))):
                return
            if time.monotonic() >= deadline:
                tail = self._log_tail()
                self._kill_proc(proc)
                self._proc = None
                raise ServerStartError(f"{self!r} did not answer PING before the deadline:\n{tail}")
            # Sleeps at most 5 ms, but wakes at once if the process exits.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.005)

    def _require_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError("server was not launched")
        return self._proc

    def _ping_once(self, timeout: float) -> bool:
        """Raw-socket PING: cheaper than a client and independent of redis-py."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        # NOAUTH proves the server is serving commands; auth is the client's business.
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def _log_tail(self) -> str:
        parts: list[str] = []
        for path, offset in ((self.log_path, self._log_offset), (self.stdout_path, self._stdout_offset)):
            try:
                with open(path, "rb") as handle:
                    handle.seek(offset)
                    text = handle.read().decode(errors="replace")
            except OSError:
                continue
            if text.strip():
                parts.append("\n".join(text.strip().splitlines()[-_LOG_TAIL_LINES:]))
        return "\n".join(parts) or "(no log output)"

    def _kill_proc(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                # SIGCONT first: cleanup must never leave a stopped server behind.
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
        proc.wait(timeout=10)

    def _after_exit(self) -> None:
        self._frozen = False
        control, self._control_client = self._control_client, None
        if control is not None:
            with contextlib.suppress(Exception):
                control.close()

    def __repr__(self) -> str:
        port = self._port if self._port is not None else "?"
        if self.is_frozen:
            state = f"pid={self.pid} frozen"
        elif self.is_running:
            state = f"pid={self.pid}"
        else:
            state = "stopped"
        label = f"{self._name} " if self._name else ""
        secret = " password=***" if self._password is not None else ""
        version = f"{self._binary.flavour} {self._binary.version_string}"
        return f"<RedisServer {label}{version} {self.host}:{port} {state}{secret}>"


def start_all(servers: Iterable[RedisServer], timeout: float = 5.0) -> None:
    """Start several servers concurrently: spawn all, then wait for each.

    Three servers are ready in about the time of one (~15 ms for Redis 7,
    ~40 ms for Valkey) instead of three times that. If any fails, the ones
    launched here are killed before the error propagates.
    """
    pending = [server for server in servers if not server.is_running]
    deadline = time.monotonic() + timeout
    launched: list[RedisServer] = []
    try:
        for server in pending:
            with server._lock:
                server._launch()
            launched.append(server)
        for server in pending:
            with server._lock:
                server._finish_start(deadline)
    except BaseException:
        for server in launched:
            server.kill()
        raise
