"""A faithful fake of the Redis Software REST API, for testing lag-aware health checks.

No real Redis Software cluster is needed (or available in CI) to test what a
client does when a member lags, the cluster loses quorum, the credentials are
rotated or the API hangs. This server implements the part of the API that
availability checks use, with the behaviour documented by Redis and measured
on real clusters (RS 7.4/8.0), and the faults a client must survive::

    with FakeRestServer(tls=True) as api:
        bdb = api.add_bdb_for(redis_server, crdt=True)       # an Active-Active member
        check = RestAvailabilityHealthCheck(**api.check_options())
        bdb.lag_ms = 500                                     # lag-aware check answers 503 now
        api.reset(kinds={"availability"})                    # or delay/hang/malformed_json/respond/redirect
        assert api.count("availability") == ...              # the request log

Routes (all ``GET`` routes need a role with view permissions, see ``VIEW_ROLES``):

* ``GET /v1/bdbs?fields=a,b``: array of databases, filtered to ``fields``.
  Unfiltered answers contain ``authentication_redis_pass`` and
  ``authentication_admin_pass``, as real clusters do when
  ``mask_bdb_credentials`` is off, so tests can prove a client never asks
  for them.
* ``GET /v1/bdbs/{uid}?fields=``: one database; 404 ``db_not_found``.
* ``GET /v1/bdbs/{uid}/availability?extend_check=lag&availability_lag_tolerance_ms=N``
  and ``GET /v1/local/bdbs/{uid}/endpoint/availability``: 200 with an empty
  body when available; 503 ``{"error_code": "bdb_unavailable", "description":
  "BDB <uid> is not available"}`` when not (also for a lag failure, which has
  no code of its own); 503 ``no_quorum``; 404 ``db_not_found``; 400 for a
  malformed ``extend_check`` or tolerance. With ``lag`` requested, 200 only
  if the database is Active-Active (``crdt``), ``crdt_sync == "enabled"`` and
  ``lag_ms`` is within the tolerance (the query's, else the cluster default,
  100 ms): a non-Active-Active database always answers 503 there.
  The tolerance is ignored without ``extend_check=lag``.
* ``PUT /v1/cluster {"availability_lag_tolerance_ms": N}``,
  ``PUT /v1/bdbs/{uid} {"crdt_sync": "paused"|"enabled"}``.
* Anything else: 404. Missing/wrong credentials: 401; a role without the
  permission: 403.

Not modelled (documented, but not needed by clients here): ``x-api-version``
(505), gzip, the OSS-Cluster "all endpoints" availability rule (a database is
available or not as a whole), the few seconds a real cluster takes to clear
a lag failure after sync resumes. Bodies of 400/401/403 and unknown-URI 404
are not documented; clients must rely on the status code alone, so the fake
sends small placeholders.

Faults (each optionally limited to request ``kinds`` and a number of
``times``): :meth:`delay`, :meth:`hang`, :meth:`reset`, :meth:`malformed_json`,
:meth:`respond` (any status, e.g. 500 or 502), :meth:`redirect`; :meth:`heal`
clears them all. State changes (``bdb.lag_ms = ...``, :meth:`set_quorum`)
take effect on the next request. Every request is in :meth:`requests`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import http.server
import json
import math
import os
import secrets
import shutil
import socket
import socketserver
import ssl
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "AVAILABLE_STATUSES",
    "KINDS",
    "VIEW_ROLES",
    "CertificateAuthority",
    "FakeBdb",
    "FakeRestServer",
    "RecordedRequest",
]

#: Database statuses that count as available (the docs list these four).
AVAILABLE_STATUSES: Final = frozenset({"active", "active-change-pending", "import-pending", "pending"})
#: Roles holding ``view_all_bdbs_info`` and ``view_bdb_info``; ``db_viewer`` is enough for every GET.
VIEW_ROLES: Final = frozenset({"admin", "cluster_member", "cluster_viewer", "db_member", "db_viewer", "user_manager"})
_UPDATE_BDB_ROLES: Final = frozenset({"admin", "cluster_member", "db_member"})
_UPDATE_CLUSTER_ROLES: Final = frozenset({"admin"})
#: Request kinds in the log and in fault filters.
KINDS: Final = frozenset({"list_bdbs", "get_bdb", "availability", "local_availability", "put_cluster", "put_bdb", "unknown"})
_DEFAULT_TOLERANCE_MS: Final = 100


# --------------------------------------------------------------------------- certificates


class CertificateAuthority:
    """A throwaway certificate authority made with the ``openssl`` binary.

    Real clusters ship a self-signed certificate per cluster, so clients must
    be given a CA; tests need one that exists only for the test. Keys are
    P-256, certificates valid for two days; nothing touches the system trust
    store. ``issue()`` makes server (or client) certificates signed by it.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None, common_name: str = "geofailover test CA") -> None:
        self._openssl = shutil.which("openssl")
        if self._openssl is None:
            raise RuntimeError("the openssl binary is needed to make test certificates (apt-get install openssl)")
        self.dir = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="geofailover-ca-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self._owns_dir = directory is None
        self.common_name = common_name
        self.key_file = self.dir / "ca.key"
        self.cert_file = self.dir / "ca.pem"
        config = self._config("ca", "basicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\nsubjectKeyIdentifier = hash\n")
        self._genkey(self.key_file)
        self._run("req", "-x509", "-new", "-key", self.key_file, "-out", self.cert_file, "-days", "2", "-sha256",
                  "-config", config, "-extensions", "ext", "-subj", f"/CN={common_name}")  # fmt: skip

    @property
    def pem(self) -> str:
        return self.cert_file.read_text()

    def issue(
        self,
        name: str = "localhost",
        hosts: Iterable[str] = ("localhost", "127.0.0.1", "::1"),
        *,
        client: bool = False,
        key_password: str | None = None,
    ) -> tuple[Path, Path]:
        """``(cert_file, key_file)`` for ``name``, valid for ``hosts`` (DNS names
        and IP addresses), for TLS servers or, with ``client=True``, clients.
        ``key_password`` encrypts the key."""
        stem = f"{'client' if client else 'server'}-{secrets.token_hex(4)}"
        key, csr, cert = (self.dir / f"{stem}.{ext}" for ext in ("key", "csr", "pem"))
        sans = ", ".join(f"IP:{h}" if _is_ip(h) else f"DNS:{h}" for h in hosts)
        usage = "clientAuth" if client else "serverAuth"
        config = self._config(
            stem,
            "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\n"
            f"extendedKeyUsage = {usage}\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n"
            + (f"subjectAltName = {sans}\n" if sans else ""),
        )
        self._genkey(key, key_password)
        passin = ["-passin", "env:GEOFAILOVER_TEST_KEY_PASSWORD"] if key_password else []
        self._run("req", "-new", "-key", key, "-out", csr, "-config", config, "-subj", f"/CN={name}", *passin, password=key_password)
        self._run("x509", "-req", "-in", csr, "-CA", self.cert_file, "-CAkey", self.key_file, "-set_serial", str(secrets.randbits(63)),
                  "-days", "2", "-sha256", "-extfile", config, "-extensions", "ext", "-out", cert)  # fmt: skip
        return cert, key

    def close(self) -> None:
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _config(self, stem: str, extensions: str) -> Path:
        path = self.dir / f"{stem}.cnf"
        path.write_text(f"[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n[ext]\n{extensions}")
        return path

    def _genkey(self, path: Path, password: str | None = None) -> None:
        cipher = ["-aes256", "-pass", "env:GEOFAILOVER_TEST_KEY_PASSWORD"] if password else []
        self._run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", *cipher, "-out", path, password=password)
        path.chmod(0o600)

    def _run(self, *args: str | Path, password: str | None = None) -> None:
        env = dict(os.environ)
        if password:
            env["GEOFAILOVER_TEST_KEY_PASSWORD"] = password  # never on the command line, where ps would show it
        proc = subprocess.run([str(self._openssl), *map(str, args)], capture_output=True, env=env, timeout=30, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.decode(errors='replace').strip()}")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_ip(text: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------- state


@dataclass
class FakeBdb:
    """One database as the cluster describes it. Mutate attributes at any time
    (``available``, ``lag_ms``, ``crdt``, ``crdt_sync``, ``status``); the
    next request sees the change."""

    uid: int
    name: str
    port: int
    endpoints: list[dict[str, Any]]
    crdt: bool = True
    crdt_guid: str = ""
    crdt_sync: str = "enabled"
    status: str = "active"
    oss_cluster: bool = False
    proxy_policy: str = "single"
    available: bool = True
    lag_ms: float = 0.0
    #: Code of a 503: ``bdb_unavailable``, or a composed form such as ``bdb_unavailable_shard_unreachable``.
    unavailable_code: str = "bdb_unavailable"
    authentication_redis_pass: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    authentication_admin_pass: str = field(default_factory=lambda: secrets.token_urlsafe(12))

    def as_json(self) -> dict[str, Any]:
        """The full object, secrets included, as an unfiltered GET returns it."""
        return {
            "uid": self.uid,
            "name": self.name,
            "port": self.port,
            "crdt": self.crdt,
            "crdt_guid": self.crdt_guid,
            "crdt_sync": self.crdt_sync,
            "status": self.status,
            "oss_cluster": self.oss_cluster,
            "proxy_policy": self.proxy_policy,
            "authentication_redis_pass": self.authentication_redis_pass,
            "authentication_admin_pass": self.authentication_admin_pass,
            "endpoints": [dict(ep) for ep in self.endpoints],
        }

    @property
    def passwords(self) -> tuple[str, str]:
        """The database's secrets: a client's request log must never show them in an answer it asked for."""
        return (self.authentication_redis_pass, self.authentication_admin_pass)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake saw it. The password is never recorded."""

    method: str
    path: str
    query: Mapping[str, str]
    kind: str
    uid: int | None
    user: str | None  # the Basic username sent, if any
    authenticated: bool
    status: int | None  # None: the connection was reset instead of answered
    fault: str | None
    at: float  # wall clock

    @property
    def fields(self) -> tuple[str, ...] | None:
        raw = self.query.get("fields")
        return None if raw is None else tuple(f for f in raw.split(",") if f)


@dataclass
class _Fault:
    action: str
    kinds: frozenset[str] | None
    times: int | None
    seconds: float = 0.0
    status: int = 0
    body: bytes = b""
    location: str = ""


class _Reset(Exception):
    pass


# --------------------------------------------------------------------------- the server


class FakeRestServer:
    """The fake API on ``host`` and a free port, plain HTTP or HTTPS.

    ``tls=True`` serves a certificate for localhost/127.0.0.1/::1 signed by
    ``ca`` (a new :class:`CertificateAuthority` unless given; its file is
    :attr:`ca_file`). ``require_client_cert=True`` asks for a client
    certificate signed by the same CA (:meth:`issue_client_cert`).
    One user is created (``username``, ``password`` or a random one, ``role``);
    :meth:`add_user` adds more.
    """

    def __init__(
        self,
        *,
        tls: bool = False,
        ca: CertificateAuthority | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "monitor@example.com",
        password: str | None = None,
        role: str = "db_viewer",
        require_client_cert: bool = False,
        cluster_fqdn: str = "cluster.fake.local",
        node_uid: int = 1,
        start: bool = True,
    ) -> None:
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._closed = False
        self.cluster_fqdn = cluster_fqdn
        self.node_uid = node_uid
        self._bdbs: dict[int, FakeBdb] = {}
        self._users: dict[str, tuple[str, str]] = {}
        self.username = username
        self.password = password if password is not None else secrets.token_urlsafe(16)
        self.add_user(username, self.password, role)
        self.quorum = True
        self.cluster_lag_tolerance_ms: int = _DEFAULT_TOLERANCE_MS
        self._faults: list[_Fault] = []
        self._log: list[RecordedRequest] = []
        self._in_flight = 0
        self.tls_failures = 0
        self.tls = tls or require_client_cert
        self._owns_ca = False
        self.ca: CertificateAuthority | None = None
        self._ssl: ssl.SSLContext | None = None
        if self.tls:
            if ca is None:
                ca = CertificateAuthority()
                self._owns_ca = True
            self.ca = ca
            cert, key = ca.issue("localhost", ("localhost", "127.0.0.1", "::1", host))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            if require_client_cert:
                context.verify_mode = ssl.CERT_REQUIRED
                context.load_verify_locations(cafile=ca.cert_file)
            self._ssl = context
        self._connections: set[socket.socket] = set()
        self._httpd = _Server((host, port), _Handler, self)
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> Self:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-rest", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, wake hung requests, drop open connections. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake.set()
            connections = list(self._connections)
        if self._thread is not None:
            self._httpd.shutdown()
        self._httpd.server_close()
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._owns_ca and self.ca is not None:
            self.ca.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- addresses ---------------------------------------------------------------------

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    @property
    def ca_file(self) -> Path | None:
        return self.ca.cert_file if self.ca is not None else None

    def check_options(self, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for ``RestAvailabilityHealthCheck`` talking to this fake."""
        options: dict[str, Any] = {"url": self.url, "username": self.username, "password": self.password}
        if self.tls:
            options["ca_file"] = str(self.ca_file)
        else:
            options["allow_http"] = True
        options.update(overrides)
        return options

    def issue_client_cert(self, key_password: str | None = None) -> tuple[Path, Path]:
        """A client certificate signed by this server's CA (for ``require_client_cert``)."""
        if self.ca is None:
            raise RuntimeError("client certificates need tls=True")
        return self.ca.issue("geofailover-client", (), client=True, key_password=key_password)

    # -- state ---------------------------------------------------------------------------

    def add_user(self, username: str, password: str, role: str = "db_viewer") -> None:
        with self._lock:
            self._users[username] = (password, role)

    def add_bdb(
        self,
        uid: int | None = None,
        *,
        port: int,
        name: str | None = None,
        dns_name: str | None = None,
        addr: Iterable[str] = ("127.0.0.1",),
        crdt: bool = True,
        **attributes: Any,
    ) -> FakeBdb:
        """Add a database with one external endpoint (``dns_name`` defaults to
        ``redis-<port>.<cluster_fqdn>``, as on real clusters)."""
        with self._lock:
            if uid is None:
                uid = max(self._bdbs, default=0) + 1
            if uid in self._bdbs:
                raise ValueError(f"bdb uid {uid} exists")
            endpoint = {
                "uid": f"{uid}:1",
                "dns_name": dns_name if dns_name is not None else f"redis-{port}.{self.cluster_fqdn}",
                "addr": list(addr),
                "addr_type": "external",
                "port": port,
                "proxy_policy": "single",
                "oss_cluster_api_preferred_ip_type": "internal",
                "oss_cluster_api_preferred_endpoint_type": "ip",
            }
            bdb = FakeBdb(uid=uid, name=name or f"db{uid}", port=port, endpoints=[endpoint], crdt=crdt,
                          crdt_guid=secrets.token_hex(8) if crdt else "", **attributes)  # fmt: skip
            self._bdbs[uid] = bdb
            return bdb

    def add_bdb_for(self, server: Any, **kwargs: Any) -> FakeBdb:
        """Add a database whose endpoint is ``server``'s host and port (a
        ``RedisServer``, a ``FaultProxy`` or anything with ``host``/``port``)."""
        kwargs.setdefault("addr", (server.host,))
        return self.add_bdb(port=int(server.port), **kwargs)

    def bdb(self, uid: int) -> FakeBdb:
        return self._bdbs[uid]

    def remove_bdb(self, uid: int) -> None:
        with self._lock:
            del self._bdbs[uid]

    def set_quorum(self, quorum: bool) -> None:
        with self._lock:
            self.quorum = quorum

    # -- faults ----------------------------------------------------------------------------

    def _add_fault(self, fault: _Fault) -> None:
        if fault.kinds is not None and not fault.kinds <= KINDS:
            raise ValueError(f"unknown request kinds {sorted(fault.kinds - KINDS)}; known: {sorted(KINDS)}")
        with self._lock:
            self._faults.append(fault)

    @staticmethod
    def _kinds(kinds: Iterable[str] | None) -> frozenset[str] | None:
        return None if kinds is None else frozenset(kinds)

    def delay(self, ms: float, *, kinds: Iterable[str] | None = None, times: int | None = None) -> None:
        """Answer only after ``ms`` milliseconds (latency; longer than a client's
        timeout is a hang). Milliseconds like :meth:`FaultProxy.delay`."""
        if not ms >= 0:
            raise ValueError("ms must be >= 0")
        self._add_fault(_Fault("delay", self._kinds(kinds), times, seconds=ms / 1000.0))

    def hang(self, *, kinds: Iterable[str] | None = None, times: int | None = None) -> None:
        """Accept requests and answer none until :meth:`heal` or :meth:`close`."""
        self._add_fault(_Fault("delay", self._kinds(kinds), times, seconds=math.inf))

    def reset(self, *, kinds: Iterable[str] | None = None, times: int | None = None) -> None:
        """Reset the connection (TCP RST) instead of answering."""
        self._add_fault(_Fault("reset", self._kinds(kinds), times))

    def malformed_json(self, *, kinds: Iterable[str] | None = None, times: int | None = None) -> None:
        """Send truncated JSON wherever a JSON body is due (lists, objects, error bodies)."""
        self._add_fault(_Fault("malformed", self._kinds(kinds), times))

    def respond(self, status: int, body: bytes | str = b"", *, kinds: Iterable[str] | None = None, times: int | None = None) -> None:
        """Answer ``status`` with ``body`` whatever was asked (e.g. 500, 502, or a 503 from a proxy)."""
        raw = body.encode() if isinstance(body, str) else body
        self._add_fault(_Fault("respond", self._kinds(kinds), times, status=status, body=raw))

    def redirect(self, location: str, status: int = 302, *, kinds: Iterable[str] | None = None, times: int | None = None) -> None:
        """Answer with a redirect to ``location`` (a client must never follow it with its credentials)."""
        self._add_fault(_Fault("redirect", self._kinds(kinds), times, status=status, location=location))

    def heal(self) -> None:
        """Remove every fault and release hung requests."""
        with self._lock:
            self._faults.clear()
            self._wake.set()
            self._wake = threading.Event()

    def _take_faults(self, kind: str) -> list[_Fault]:
        with self._lock:
            taken: list[_Fault] = []
            for fault in list(self._faults):
                if fault.kinds is not None and kind not in fault.kinds:
                    continue
                if fault.action != "delay" and any(f.action != "delay" for f in taken):
                    continue
                taken.append(fault)
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
            return taken

    # -- request log ---------------------------------------------------------------------------

    def requests(self, kind: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self._log if kind is None or r.kind == kind]

    def count(self, kind: str | None = None, *, uid: int | None = None) -> int:
        return sum(1 for r in self.requests(kind) if uid is None or r.uid == uid)

    @property
    def in_flight(self) -> int:
        """Requests received and not answered yet (e.g. held by :meth:`hang`);
        they enter the log when answered."""
        with self._lock:
            return self._in_flight

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()
            self.tls_failures = 0

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._log.append(request)

    # -- request handling (called by the handler threads) -----------------------------------------

    def _authenticate(self, header: str | None) -> tuple[str | None, str | None]:
        """(username sent, role if the credentials are right)."""
        if not header or not header.startswith("Basic "):
            return None, None
        try:
            user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None, None
        if not sep:
            return user, None
        with self._lock:
            entry = self._users.get(user)
        if entry is None or not secrets.compare_digest(entry[0].encode(), password.encode()):
            return user, None
        return user, entry[1]

    def _wait(self, seconds: float) -> None:
        with self._lock:
            wake = self._wake
        wake.wait(None if math.isinf(seconds) else seconds)

    def _serve(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, str], bytes, RecordedRequest]:
        with self._lock:
            self._in_flight += 1
        try:
            return self._serve_counted(method, target, headers, body)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _serve_counted(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, str], bytes, RecordedRequest]:
        parts = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        kind, uid = _route(method, parts.path)
        user, role = self._authenticate(headers.get("authorization"))
        faults = self._take_faults(kind)
        applied = ",".join(f.action for f in faults) or None

        def record(status: int | None) -> RecordedRequest:
            return RecordedRequest(method, parts.path, query, kind, uid, user, role is not None, status, applied, time.time())

        malformed = False
        for fault in faults:
            if fault.action == "delay":
                self._wait(fault.seconds)
            elif fault.action == "reset":
                self._record(record(None))
                raise _Reset
            elif fault.action == "malformed":
                malformed = True
            elif fault.action == "respond":
                return fault.status, {"Content-Type": "application/json"}, fault.body, record(fault.status)
            elif fault.action == "redirect":
                return fault.status, {"Location": fault.location}, b"", record(fault.status)
        status, extra, payload = self._answer(method, kind, uid, query, role, user, body)
        out = b"" if payload is None else json.dumps(payload).encode()
        if malformed and out:
            out = out[: max(1, len(out) // 2)]
        if payload is not None:
            extra.setdefault("Content-Type", "application/json")
        return status, extra, out, record(status)

    def _answer(
        self, method: str, kind: str, uid: int | None, query: dict[str, str], role: str | None, user: str | None, body: bytes,
    ) -> tuple[int, dict[str, str], Any]:
        if kind == "unknown":
            return 404, {}, {"error_code": "not_found", "description": "Unknown URI"}  # body undocumented
        if role is None:
            return 401, {"WWW-Authenticate": 'Basic realm="Redis Software (fake)"'}, {"error_code": "unauthorized"}  # body undocumented
        needed = {"put_cluster": _UPDATE_CLUSTER_ROLES, "put_bdb": _UPDATE_BDB_ROLES}.get(kind, VIEW_ROLES)
        if role not in needed:
            return 403, {}, {"error_code": "insufficient_permissions"}  # body undocumented
        with self._lock:
            if kind == "list_bdbs":
                return 200, {}, [_filter(b.as_json(), query.get("fields")) for b in self._bdbs.values()]
            if kind == "put_cluster":
                return self._put_cluster(body)
            bdb = self._bdbs.get(uid) if uid is not None else None
            if kind in ("availability", "local_availability"):
                return self._availability(kind, uid, bdb, query)
            if bdb is None:
                return 404, {}, _not_found(uid)
            if kind == "get_bdb":
                return 200, {}, _filter(bdb.as_json(), query.get("fields"))
            return self._put_bdb(bdb, body)

    def _availability(self, kind: str, uid: int | None, bdb: FakeBdb | None, query: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        checks = [c.strip() for c in query.get("extend_check", "").split(",") if c.strip()]
        if any(c != "lag" for c in checks):
            return 400, {}, {"error_code": "invalid_schema", "description": f"invalid extend_check {query['extend_check']!r}"}
        raw = query.get("availability_lag_tolerance_ms")
        if raw is not None and not raw.isdigit():
            return 400, {}, {"error_code": "invalid_schema", "description": f"invalid availability_lag_tolerance_ms {raw!r}"}
        if bdb is None:
            return 404, {}, _not_found(uid)
        if not self.quorum:
            return 503, {}, {"error_code": "no_quorum", "description": "Master healthcheck failed (no quorum in the cluster)"}
        ok = bdb.available and bdb.status in AVAILABLE_STATUSES
        if ok and "lag" in checks:
            tolerance = int(raw) if raw is not None else self.cluster_lag_tolerance_ms
            ok = bdb.crdt and bdb.crdt_sync == "enabled" and bdb.lag_ms <= tolerance
        if ok:
            return 200, {}, None
        if kind == "local_availability":
            return 503, {}, {
                "error_code": "bdb_endpoint_unavailable",
                "description": f"Local endpoint of BDB {bdb.uid} on node {self.node_uid} is not available",
            }
        return 503, {}, {"error_code": bdb.unavailable_code, "description": f"BDB {bdb.uid} is not available"}

    def _put_cluster(self, body: bytes) -> tuple[int, dict[str, str], Any]:
        data = _parse_body(body)
        value = data.get("availability_lag_tolerance_ms") if isinstance(data, dict) else None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return 400, {}, {"error_code": "invalid_schema", "description": "availability_lag_tolerance_ms must be an integer >= 0"}
        self.cluster_lag_tolerance_ms = value
        return 200, {}, {"availability_lag_tolerance_ms": value}

    @staticmethod
    def _put_bdb(bdb: FakeBdb, body: bytes) -> tuple[int, dict[str, str], Any]:
        data = _parse_body(body)
        if not isinstance(data, dict) or set(data) - {"crdt_sync"} or data.get("crdt_sync") not in ("enabled", "paused"):
            return 400, {}, {"error_code": "invalid_schema", "description": "only crdt_sync: enabled|paused is supported by the fake"}
        bdb.crdt_sync = data["crdt_sync"]
        return 200, {}, {"uid": bdb.uid, "crdt_sync": bdb.crdt_sync}

    def __repr__(self) -> str:
        return f"<FakeRestServer {self.url} bdbs={sorted(self._bdbs)}>"


def _route(method: str, path: str) -> tuple[str, int | None]:
    parts = [p for p in path.split("/") if p]
    uid: int | None = None
    if len(parts) >= 3 and parts[2].isdigit():
        uid = int(parts[2])
    if len(parts) >= 4 and parts[:2] == ["v1", "local"] and parts[3].isdigit():
        uid = int(parts[3])
    if method == "GET":
        if parts == ["v1", "bdbs"]:
            return "list_bdbs", None
        if len(parts) == 3 and parts[:2] == ["v1", "bdbs"] and uid is not None:
            return "get_bdb", uid
        if len(parts) == 4 and parts[:2] == ["v1", "bdbs"] and uid is not None and parts[3] == "availability":
            return "availability", uid
        if len(parts) == 6 and parts[:3] == ["v1", "local", "bdbs"] and uid is not None and parts[4:] == ["endpoint", "availability"]:
            return "local_availability", uid
    if method == "PUT":
        if parts == ["v1", "cluster"]:
            return "put_cluster", None
        if len(parts) == 3 and parts[:2] == ["v1", "bdbs"] and uid is not None:
            return "put_bdb", uid
    return "unknown", None


def _filter(obj: dict[str, Any], fields: str | None) -> dict[str, Any]:
    if fields is None:
        return obj
    wanted = {f.strip() for f in fields.split(",") if f.strip()}
    return {k: v for k, v in obj.items() if k in wanted}


def _not_found(uid: int | None) -> dict[str, str]:
    return {"error_code": "db_not_found", "description": f"Database {uid} not found"}


def _parse_body(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8") or "null")
    except (UnicodeDecodeError, ValueError):
        return None


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[_Handler], fake: FakeRestServer) -> None:
        self.fake = fake
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn): slow for nothing here.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Runs on the connection's own thread: the TLS handshake happens here,
        so a client that never completes one cannot stall the accept loop."""
        fake = self.fake
        sock: socket.socket = request
        with fake._lock:
            fake._connections.add(sock)
        try:
            if fake._ssl is not None:
                sock.settimeout(5)
                try:
                    sock = fake._ssl.wrap_socket(sock, server_side=True)
                except (ssl.SSLError, OSError):
                    with fake._lock:
                        fake.tls_failures += 1
                    return
                with fake._lock:
                    fake._connections.add(sock)
            _Handler(sock, client_address, self)
        finally:
            with fake._lock:
                fake._connections.discard(request)
                fake._connections.discard(sock)
            if sock is not request:
                with contextlib.suppress(OSError):
                    sock.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-answer is normal in fault tests


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is the record; stderr noise helps nobody

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            status, extra, out, record = self.server.fake._serve(self.command, self.path, headers, body)
        except _Reset:
            # SO_LINGER 0 makes close() send an RST; the descriptor closes only
            # once the handler's file objects are closed too.
            self.close_connection = True
            with contextlib.suppress(OSError, ValueError):
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.rfile.close()
                self.wfile.close()
                self.connection.close()
            return
        self.server.fake._record(record)
        self.send_response(status)
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if out:
            self.wfile.write(out)

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def finish(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().finish()
