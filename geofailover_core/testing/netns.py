"""Private network namespace and kernel-level (iptables) faults.

Why a namespace: inside a fresh network namespace all of ``127.0.0.0/8`` and
its firewall belong to this process alone. Fixed ports cannot collide with
other jobs, nothing can leave the machine (outside addresses fail with
``ENETUNREACH``), and every iptables rule vanishes with the process, so a
crashed test run cannot leave the host firewall broken.

Why iptables at all: a fault proxy only breaks the *data path* (it accepts the
TCP handshake, so a blackhole shows up as a read timeout). Dropping packets in
the kernel reproduces a real network partition, where even ``connect()`` times
out. Both are needed to test a failover client honestly.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import socket
import struct
import subprocess
import threading
from types import TracebackType

__all__ = [
    "CLONE_NEWNET",
    "NETNS_ACTIVE",
    "IptablesFaults",
    "enter_private_netns",
    "in_private_netns",
]

CLONE_NEWNET = 0x40000000

#: True once :func:`enter_private_netns` succeeded in this process. Read it as
#: ``netns.NETNS_ACTIVE`` (attribute access), not ``from netns import ...``,
#: which would copy the value at import time.
NETNS_ACTIVE: bool = False

#: Inode of the namespace we created; lets the iptables guard check that the
#: *calling thread* really is inside it (threads that existed before
#: ``unshare`` stay in the host namespace).
_OUR_NETNS_INODE: int | None = None

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = "16sh22x"  # struct ifreq: name[16], short flags, rest of the union


def _thread_netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def _thread_count() -> int:
    """OS-level thread count: also sees C threads that ``threading`` misses."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _bring_loopback_up() -> None:
    """``ip link set lo up`` without depending on iproute2 being installed."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            request = struct.pack(_IFREQ, b"lo", 0)
            reply = fcntl.ioctl(sock.fileno(), _SIOCGIFFLAGS, request)
            flags = struct.unpack(_IFREQ, reply)[1]
            fcntl.ioctl(sock.fileno(), _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | _IFF_UP))
    except OSError:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True, capture_output=True, timeout=10)


def _loopback_works() -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with socket.create_connection(listener.getsockname(), timeout=1.0):
            pass
    return True


def enter_private_netns() -> bool:
    """Move this process into a new, private network namespace.

    Returns ``True`` on success (or if already inside one), ``False`` when not
    root, when ``GEOFAILOVER_NETNS=0`` opts out, when other threads already
    exist, or on any failure. Never raises: callers fall back to running
    without kernel faults.

    Call it before any thread exists (first thing in ``conftest.py``, or let the
    pytest plugin do it with ``GEOFAILOVER_NETNS=1``): ``unshare`` moves only
    the calling thread, so an older thread would keep using the host network
    and children it spawns would escape the namespace. Child processes started
    afterwards (redis-server, workers) inherit the namespace. The check counts
    OS threads, and a joined ``threading.Thread`` can linger there for a moment
    after ``join()`` returns.
    """
    global NETNS_ACTIVE, _OUR_NETNS_INODE
    if NETNS_ACTIVE:
        return True
    if os.environ.get("GEOFAILOVER_NETNS") == "0":
        return False
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False
    if _thread_count() > 1:
        return False
    original_fd: int | None = None
    libc: ctypes.CDLL | None = None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        original_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        if libc.unshare(ctypes.c_int(CLONE_NEWNET)) != 0:
            return False
        try:
            _bring_loopback_up()
            _loopback_works()
        except Exception:  # noqa: BLE001 - a namespace without loopback is worse than none
            libc.setns(ctypes.c_int(original_fd), ctypes.c_int(CLONE_NEWNET))
            return False
        _OUR_NETNS_INODE = _thread_netns_inode()
        NETNS_ACTIVE = True
        return True
    except Exception:  # noqa: BLE001 - documented as never raising
        return False
    finally:
        if original_fd is not None:
            os.close(original_fd)


def in_private_netns() -> bool:
    """True only if the calling thread is inside the namespace we created."""
    if not NETNS_ACTIVE or _OUR_NETNS_INODE is None:
        return False
    try:
        return _thread_netns_inode() == _OUR_NETNS_INODE
    except OSError:
        return False


def _require_private_netns() -> None:
    if not in_private_netns():
        raise RuntimeError(
            "refusing to run iptables outside the private network namespace created by "
            "enter_private_netns(): that would change the host's firewall"
        )


class IptablesFaults:
    """Kernel-level blackhole/reset of one TCP endpoint, undone exactly.

    Every rule added is recorded and :meth:`heal` deletes exactly those rules,
    so several helpers (or a test and its fixtures) can coexist. Each call
    re-checks that the calling thread is inside our private namespace: a rule
    added to the host firewall by a test would outlive the test run.
    """

    def __init__(self, iptables: str | None = None) -> None:
        _require_private_netns()
        binary = iptables or shutil.which("iptables")
        if binary is None:
            raise RuntimeError("iptables binary not found")
        self._iptables = binary
        self._rules: list[tuple[str, tuple[str, ...]]] = []
        self._lock = threading.Lock()

    @property
    def rules(self) -> list[tuple[str, tuple[str, ...]]]:
        """The (chain, rule spec) pairs currently installed by this helper."""
        with self._lock:
            return list(self._rules)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        _require_private_netns()
        return subprocess.run(
            [self._iptables, "-w", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def _insert(self, chain: str, spec: tuple[str, ...]) -> None:
        proc = self._run("-I", chain, *spec)
        if proc.returncode != 0:
            raise RuntimeError(f"iptables -I {chain} {' '.join(spec)} failed: {proc.stderr.strip()}")
        with self._lock:
            self._rules.append((chain, spec))

    def blackhole(self, host: str, port: int) -> None:
        """Silently drop all packets to and from ``host:port``.

        Both directions are dropped so server pushes (replication, pub/sub)
        stall too, as in a real partition. New connects then time out in
        ``connect()``; established ones time out on read.
        """
        self._insert("INPUT", ("-p", "tcp", "-d", host, "--dport", str(port), "-j", "DROP"))
        self._insert("INPUT", ("-p", "tcp", "-s", host, "--sport", str(port), "-j", "DROP"))

    def reset(self, host: str, port: int) -> None:
        """Answer every packet sent to ``host:port`` with a TCP RST.

        Only the inbound direction is matched: a matching rule for the server's
        own packets would also catch the RSTs that REJECT generates and turn
        the reset into a silent blackhole.
        """
        self._insert(
            "INPUT",
            ("-p", "tcp", "-d", host, "--dport", str(port), "-j", "REJECT", "--reject-with", "tcp-reset"),
        )

    def heal(self, host: str | None = None, port: int | None = None) -> None:
        """Delete the rules this helper added (optionally only for one endpoint).

        Tries every rule even if one deletion fails, then raises, so one
        vanished rule cannot leave the others in place.
        """
        with self._lock:
            selected = [
                (chain, spec) for chain, spec in self._rules if (host is None or host in spec) and (port is None or str(port) in spec)
            ]
        errors: list[str] = []
        for chain, spec in reversed(selected):
            proc = self._run("-D", chain, *spec)
            if proc.returncode != 0 and "does a matching rule exist" not in proc.stderr:
                errors.append(f"iptables -D {chain} {' '.join(spec)}: {proc.stderr.strip()}")
                continue
            with self._lock:
                self._rules.remove((chain, spec))
        if errors:
            raise RuntimeError("; ".join(errors))

    def heal_all(self) -> None:
        """Flush the filter table's INPUT and OUTPUT chains entirely.

        Safe only because the namespace is private; catches rules added by
        other helpers or by hand in a test.
        """
        for chain in ("INPUT", "OUTPUT"):
            proc = self._run("-F", chain)
            if proc.returncode != 0:
                raise RuntimeError(f"iptables -F {chain} failed: {proc.stderr.strip()}")
        with self._lock:
            self._rules.clear()

    def __enter__(self) -> IptablesFaults:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.heal()

    def __repr__(self) -> str:
        return f"IptablesFaults(rules={len(self._rules)})"
