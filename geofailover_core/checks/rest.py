"""Redis Software (self-managed Redis Enterprise) database availability over the cluster REST API.

Why a REST check at all: PING tells whether an endpoint answers, not whether
an Active-Active member has *caught up* with its peers. Redis Software
answers that on its management plane: ``GET /v1/bdbs/{uid}/availability``,
with ``extend_check=lag`` adding "is this member within
``availability_lag_tolerance_ms`` of the others".

Why it looks the way it does (each point is a documented mistake of a peer
client, see ``docs/health-checks.md``):

* The database uid is discovered once with ``GET /v1/bdbs?fields=uid,endpoints``
  and cached: unfiltered ``/v1/bdbs`` returns database passwords when the
  cluster does not mask them, even to viewer roles, so this module never asks
  for unfiltered database objects.
* Matching uses the host *and* the port of the Redis endpoint (case-insensitive
  DNS names, canonical IP addresses): one cluster serves many databases on
  one address, so host-only matching picks an arbitrary one.
* The default lag tolerance is the server's own recommendation, 100 ms
  (peers default to 5000 ms); ``lag_tolerance_ms=None`` leaves it to the
  cluster's setting.
* "The REST API did not answer" is not "the database is down": timeouts,
  refusals, TLS failures, 401/403, unexpected statuses and malformed bodies
  are *inconclusive*, logged once, and never evict an endpoint.
* Only a 2xx answer is healthy; redirects are never followed (they would
  carry the Basic credentials to another host) and never count as success.
* On a database that is not Active-Active, ``extend_check=lag`` always
  answers 503, which would mark it unhealthy forever: the check detects that
  (``GET /v1/bdbs/{uid}?fields=uid,crdt``) and uses the plain availability
  check there, saying so in the log and in ``status()``.
* At most one availability request per endpoint per ``interval`` in this
  process, however many probes and confirmation rounds the monitor runs.

The lag-aware form is a *failback gate* by default (mode ``failback_only``):
it decides whether traffic may return to a member, and never evicts the
member that serves.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode, urlsplit

import redis.connection
from redis.credentials import CredentialProvider

from ..errors import ConfigurationError
from ..health import FAILBACK_ONLY, HEALTH, HealthResult, HealthStatus, ProbeContext, validate_mode

if TYPE_CHECKING:
    from ..config import EndpointConfig, FailoverConfig

__all__ = ["DEFAULT_LAG_TOLERANCE_MS", "DEFAULT_REST_PORT", "RestAvailabilityHealthCheck", "match_databases"]

logger = logging.getLogger("geofailover.checks")

#: "All calls must be made over SSL to port 9443" (Redis Software docs).
DEFAULT_REST_PORT: Final = 9443
#: The server's documented default and recommended tolerance.
DEFAULT_LAG_TOLERANCE_MS: Final = 100
ON_ERROR_CHOICES: Final = ("inconclusive", "unhealthy", "healthy")
# /v1/bdbs with two fields is ~300 bytes per database; larger answers are not what we asked for.
_DISCOVERY_LIMIT: Final = 4 * 1024 * 1024
_BODY_LIMIT: Final = 64 * 1024
_USER_AGENT: Final = "geofailover-health-check"

Credentials = Callable[[], Sequence[str]] | CredentialProvider

_CLS = "RestAvailabilityHealthCheck"


def _setting(name: str) -> str:
    return f"{_CLS}.{name}"


class _Problem(Exception):
    """The REST API gave no usable answer. ``key`` identifies the kind of
    problem so that it is logged once, not once per interval."""

    def __init__(self, detail: str, key: str, level: int = logging.WARNING) -> None:
        super().__init__(detail)
        self.detail = detail
        self.key = key
        self.level = level


@dataclass
class _Outcome:
    result: HealthResult
    problem: _Problem | None = None


@dataclass
class _Member:
    """What this check knows about one endpoint. Per endpoint because one
    check object may be configured globally for several endpoints."""

    host: str | None
    port: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    uid: int | None = None
    matched_before: bool = False
    crdt: bool | None = None
    last_at: float | None = None
    last: HealthResult | None = None
    problem_key: str | None = None
    non_crdt_logged: bool = False


def _canonical_ip(text: str) -> str | None:
    """The canonical form of an IP literal (IPv4-mapped IPv6 as IPv4), or None."""
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _canonical_name(text: str) -> str:
    return text.strip().rstrip(".").lower()


def match_databases(bdbs: Any, host: str, port: int) -> list[int]:
    """Uids of the databases in a ``GET /v1/bdbs?fields=uid,endpoints``
    answer with an endpoint on ``host`` **and** ``port``.

    ``host`` matches an endpoint's ``dns_name`` (case-insensitive, trailing dot
    ignored) or, when it is an IP literal, one of its ``addr`` entries in
    canonical form (so ``0:0::1`` matches ``::1``). Entries of the wrong shape
    are skipped. Raises ``ValueError`` when the answer is not a list.
    """
    if not isinstance(bdbs, list):
        raise ValueError("expected a JSON array of databases")
    want_ip = _canonical_ip(host)
    want_name = _canonical_name(host)
    found: list[int] = []
    for bdb in bdbs:
        if not isinstance(bdb, dict):
            continue
        uid = bdb.get("uid")
        if isinstance(uid, str) and uid.isdigit():
            uid = int(uid)
        endpoints = bdb.get("endpoints")
        if not isinstance(uid, int) or isinstance(uid, bool) or not isinstance(endpoints, list):
            continue
        for ep in endpoints:
            if not isinstance(ep, dict) or ep.get("port") != port:
                continue
            dns_name = ep.get("dns_name")
            addrs = ep.get("addr") or []
            if isinstance(addrs, str):
                addrs = [addrs]
            names = [dns_name] if isinstance(dns_name, str) else []
            if want_ip is not None:
                hit = any(isinstance(a, str) and _canonical_ip(a) == want_ip for a in [*addrs, *names])
            else:
                hit = any(_canonical_name(n) == want_name for n in names)
            if hit:
                if uid not in found:
                    found.append(uid)
                break
    return found


def _json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return _MALFORMED


_MALFORMED: Final = object()


def _error_code(body: bytes) -> str | None:
    data = _json(body)
    if isinstance(data, dict) and isinstance(data.get("error_code"), str):
        return str(data["error_code"])[:100]
    return None


def _describe(body: bytes) -> str:
    data = _json(body)
    if isinstance(data, dict) and isinstance(data.get("description"), str):
        return str(data["description"])[:200]
    return ""


class _Session:
    """The HTTP requests of one probe: one connection (kept alive between the
    probe's requests), one deadline for all of them, closed at the end.

    Why not a connection kept across probes: servers and load balancers close
    idle keep-alive connections whenever they like, and a request on such a
    stale socket fails in a way that looks exactly like a broken API.
    """

    def __init__(self, check: RestAvailabilityHealthCheck, budget: float, authorization: str) -> None:
        self._check = check
        self._budget = budget
        self._deadline = time.monotonic() + budget
        self._authorization = authorization
        self._conn: http.client.HTTPConnection | None = None
        self.requests = 0

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None:
            self._conn.close()

    def _remaining(self) -> float:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise _Problem(f"no answer from {self._check.base_url} within {self._budget:.3g} s", "timeout")
        return remaining

    def get(self, path: str, query: dict[str, str], limit: int = _BODY_LIMIT) -> tuple[int, dict[str, str], bytes]:
        check = self._check
        target = f"{path}?{urlencode(query, safe=',')}" if query else path
        try:
            remaining = self._remaining()
            if self._conn is None:
                if check.scheme == "https":
                    self._conn = http.client.HTTPSConnection(check.host, check.port, timeout=remaining, context=check.ssl_context)
                else:
                    self._conn = http.client.HTTPConnection(check.host, check.port, timeout=remaining)
            conn = self._conn
            conn.timeout = remaining
            if conn.sock is not None:
                conn.sock.settimeout(remaining)
            self.requests += 1
            conn.request(
                "GET", target,
                headers={"Accept": "application/json", "Authorization": self._authorization, "User-Agent": _USER_AGENT},
            )
            if conn.sock is not None:
                conn.sock.settimeout(self._remaining())
            response = conn.getresponse()
            chunks: list[bytes] = []
            size = 0
            while True:
                if conn.sock is not None:
                    conn.sock.settimeout(self._remaining())
                chunk = response.read(min(65536, limit + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    conn.close()
                    self._conn = None
                    raise _Problem(f"answer to {path} larger than {limit} bytes", "too-large")
            headers = {k.lower(): v for k, v in response.getheaders()}
            return response.status, headers, b"".join(chunks)
        except _Problem:
            self._discard()
            raise
        except TimeoutError:
            self._discard()
            raise _Problem(f"no answer from {check.base_url} within {self._budget:.3g} s", "timeout") from None
        except ssl.SSLCertVerificationError as exc:
            self._discard()
            raise _Problem(
                f"TLS certificate verification of {check.base_url} failed ({exc.verify_message}); no request was sent. "
                "Fix: give the cluster's CA certificate with ca_file, ca_path or ca_data",
                "tls-verify",
                logging.ERROR,
            ) from None
        except ssl.SSLError as exc:
            self._discard()
            raise _Problem(f"TLS error with {check.base_url}: {exc.reason or type(exc).__name__}", "tls", logging.ERROR) from None
        except ConnectionRefusedError:
            self._discard()
            raise _Problem(f"connection to {check.base_url} refused", "refused") from None
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
            self._discard()
            raise _Problem(f"connection to {check.base_url} reset before an answer", "reset") from None
        except http.client.HTTPException as exc:
            self._discard()
            raise _Problem(f"malformed HTTP answer from {check.base_url} ({type(exc).__name__})", "malformed-http") from None
        except OSError as exc:
            self._discard()
            reason = exc.strerror or type(exc).__name__
            raise _Problem(f"cannot reach {check.base_url}: {reason}", f"os-{type(exc).__name__}") from None

    def _discard(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class RestAvailabilityHealthCheck:
    """Availability (optionally lag-aware) of one Redis Software database,
    asked of the cluster's REST API.

    Configure it per endpoint (each Active-Active member lives in its own
    cluster, with its own REST URL, credentials and CA)::

        RestAvailabilityHealthCheck(
            "https://cluster-us.example.com",            # port 9443 unless given
            username="monitor@example.com", password=os.environ["RS_PASSWORD"],
            ca_file="/etc/ssl/cluster-us-ca.pem",
        )

    Parameters:

    * ``url``: REST base URL, ``https://host[:port]`` (port 9443 by default).
      ``http://`` needs ``allow_http=True`` (test fakes only): Basic
      credentials would cross the network in clear.
    * ``username``/``password``, or ``credentials``: a callable returning
      ``(username, password)``, or a redis-py ``CredentialProvider``; asked
      before every probe, so rotated secrets are picked up.
    * ``bdb_uid``: the database uid; skips discovery (needed for unix-socket
      endpoints and customer CNAMEs that appear in no ``dns_name``).
    * ``lag_aware`` (True): add ``extend_check=lag``. ``lag_tolerance_ms``
      (100): the tolerance sent; ``None`` omits it, so the cluster's default
      applies.
    * ``verify`` (True), ``ca_file``, ``ca_path``, ``ca_data``: TLS
      verification and trust anchors (the cluster's certificate is
      self-signed by default). ``cert_file``, ``key_file``, ``key_password``:
      client certificate for mutual TLS.
    * ``timeout``: budget of one probe's HTTP requests together, at most the
      engine's ``health_check_timeout`` (the default).
    * ``interval``: least time between two probes of one endpoint (default:
      ``probe_interval``); extra probes in between reuse the last answer.
    * ``on_error`` (``"inconclusive"``): what a probe without a usable answer
      counts as; ``"unhealthy"`` restores the peers' behaviour, ``"healthy"``
      opens a gate when the API cannot be asked.
    * ``mode``: ``"failback_only"`` (default when lag-aware) or ``"health"``
      (default for the plain availability check).
    """

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        credentials: Credentials | None = None,
        bdb_uid: int | None = None,
        lag_aware: bool = True,
        lag_tolerance_ms: int | None = DEFAULT_LAG_TOLERANCE_MS,
        verify: bool = True,
        ca_file: str | os.PathLike[str] | None = None,
        ca_path: str | os.PathLike[str] | None = None,
        ca_data: str | bytes | None = None,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        key_password: str | None = None,
        timeout: float | None = None,
        interval: float | None = None,
        on_error: str = "inconclusive",
        mode: str | None = None,
        name: str | None = None,
        allow_http: bool = False,
    ) -> None:
        self._parse_url(url, allow_http)
        if credentials is not None and (username is not None or password is not None):
            raise ConfigurationError(_setting("credentials"), "given together with username/password", "use one of the two")
        if credentials is None:
            if not username or password is None:
                raise ConfigurationError(
                    _setting("username"), "REST credentials missing",
                    "give username and password (a cluster user; the db_viewer role is enough) or credentials=callable",
                )
            if not isinstance(username, str) or not isinstance(password, str):
                raise ConfigurationError(_setting("password"), "username and password must be strings", "give strings")
            if ":" in username:
                raise ConfigurationError(_setting("username"), "contains ':', which HTTP Basic cannot carry", "use the cluster user's e-mail or name")
        elif not callable(credentials) and not isinstance(credentials, CredentialProvider):
            raise ConfigurationError(_setting("credentials"), "not callable", "give a function returning (username, password) or a redis-py CredentialProvider")
        self._username = username
        self._password = password
        self._credentials = credentials
        if bdb_uid is not None and (isinstance(bdb_uid, bool) or not isinstance(bdb_uid, int) or bdb_uid < 1):
            raise ConfigurationError(_setting("bdb_uid"), f"{bdb_uid!r} is not a database uid", "give the integer uid shown by the cluster (e.g. 1)")
        self.bdb_uid = bdb_uid
        if not isinstance(lag_aware, bool):
            raise ConfigurationError(_setting("lag_aware"), f"expected True or False, got {lag_aware!r}", "write True or False")
        self.lag_aware = lag_aware
        if lag_tolerance_ms is not None and (isinstance(lag_tolerance_ms, bool) or not isinstance(lag_tolerance_ms, int) or lag_tolerance_ms < 0):
            raise ConfigurationError(
                _setting("lag_tolerance_ms"), f"{lag_tolerance_ms!r} is not a whole number of milliseconds",
                f"give an integer >= 0 (recommended {DEFAULT_LAG_TOLERANCE_MS}) or None for the cluster's default",
            )
        self.lag_tolerance_ms = lag_tolerance_ms
        self.timeout = self._positive("timeout", timeout)
        self.interval = self._positive("interval", interval)
        if on_error not in ON_ERROR_CHOICES:
            raise ConfigurationError(_setting("on_error"), f"{on_error!r} is not a choice", f"use one of {', '.join(ON_ERROR_CHOICES)}")
        self.on_error = on_error
        self.mode = validate_mode(mode if mode is not None else (FAILBACK_ONLY if lag_aware else HEALTH), _setting("mode"))
        self.name: str = name or ("rest-lag" if lag_aware else "rest-availability")
        self._key_password = key_password
        self.verify = verify
        self.ssl_context = self._make_ssl_context(verify, ca_file, ca_path, ca_data, cert_file, key_file, key_password) if self.scheme == "https" else None
        self._members: dict[str, _Member] = {}
        self._members_lock = threading.Lock()

    # -- configuration ------------------------------------------------------------

    def _parse_url(self, url: str, allow_http: bool) -> None:
        if not isinstance(url, str):
            raise ConfigurationError(_setting("url"), f"expected a string, got {type(url).__name__}", "write https://cluster.example.com:9443")
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError:
            raise ConfigurationError(_setting("url"), "not a valid URL", "write https://cluster.example.com:9443") from None
        if parts.scheme not in ("https", "http"):
            raise ConfigurationError(_setting("url"), f"scheme {parts.scheme!r} is not supported", "write https://cluster.example.com:9443")
        if parts.scheme == "http" and not allow_http:
            raise ConfigurationError(
                _setting("url"), "plain http would send the Basic credentials unencrypted",
                "use https:// (Redis Software serves its API on https port 9443); allow_http=True is meant for test fakes",
            )
        if parts.username is not None or parts.password is not None:
            raise ConfigurationError(_setting("url"), "credentials inside the URL", "remove them from the URL and pass username/password")
        if not parts.hostname:
            raise ConfigurationError(_setting("url"), "no host", "write https://cluster.example.com:9443")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigurationError(_setting("url"), "has a path or query", "give only the base URL, https://host:9443")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = port or DEFAULT_REST_PORT
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.base_url = f"{self.scheme}://{host}:{self.port}"
        self.url = self.base_url

    @staticmethod
    def _positive(name: str, value: float | None) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
            raise ConfigurationError(_setting(name), f"{value!r} is not a positive number of seconds", "give a positive number, or leave it unset")
        return float(value)

    @staticmethod
    def _make_ssl_context(
        verify: bool,
        ca_file: str | os.PathLike[str] | None,
        ca_path: str | os.PathLike[str] | None,
        ca_data: str | bytes | None,
        cert_file: str | os.PathLike[str] | None,
        key_file: str | os.PathLike[str] | None,
        key_password: str | None,
    ) -> ssl.SSLContext:
        if not isinstance(verify, bool):
            raise ConfigurationError(_setting("verify"), f"expected True or False, got {verify!r}", "write True (default) or False")
        for setting, path, isdir in (("ca_file", ca_file, False), ("ca_path", ca_path, True), ("cert_file", cert_file, False), ("key_file", key_file, False)):
            if path is not None and not (os.path.isdir(path) if isdir else os.path.isfile(path)):
                kind = "directory" if isdir else "file"
                raise ConfigurationError(_setting(setting), f"{kind} {os.fspath(path)!r} does not exist", f"give the path of a readable PEM {kind}")
        if key_file is not None and cert_file is None:
            raise ConfigurationError(_setting("key_file"), "given without cert_file", "give the client certificate in cert_file too")
        try:
            context = ssl.create_default_context(cafile=ca_file, capath=ca_path, cadata=ca_data)
        except (ssl.SSLError, ValueError, TypeError) as exc:
            raise ConfigurationError(_setting("ca_data" if ca_data is not None else "ca_file"), f"cannot load the CA certificates ({type(exc).__name__})", "give PEM certificates") from None
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            logger.warning("geofailover: REST health check with verify=False: the cluster's identity is not checked and the credentials go to whoever answers")
        if cert_file is not None:
            try:
                context.load_cert_chain(cert_file, key_file, password=key_password)
            except (ssl.SSLError, ValueError, OSError) as exc:
                raise ConfigurationError(
                    _setting("cert_file"), f"cannot load the client certificate/key ({type(exc).__name__})",
                    "give a PEM certificate and its key (and key_password if the key is encrypted)",
                ) from None
        return context

    @property
    def secrets(self) -> tuple[str, ...]:
        """Static secrets, so that the engine masks them wherever they might appear."""
        values: list[str] = []
        if self._password:
            values.append(self._password)
            values.append(self._basic(self._username or "", self._password).split(" ", 1)[1])
        if self._key_password:
            values.append(self._key_password)
        return tuple(values)

    def prepare(self, endpoint: EndpointConfig, config: FailoverConfig) -> None:
        """Validate against the endpoint and the engine settings at construction."""
        if self.timeout is not None and self.timeout > config.health_check_timeout:
            raise ConfigurationError(
                _setting("timeout"), f"{self.timeout:g} s is longer than health_check_timeout ({config.health_check_timeout:g} s)",
                "lower it, or raise health_check_timeout: a probe must fit in the monitor's round",
            )
        self._member_for(endpoint)

    def _member_for(self, endpoint: EndpointConfig) -> _Member:
        with self._members_lock:
            member = self._members.get(endpoint.name)
            if member is None:
                parsed = redis.connection.parse_url(endpoint.url)
                host = parsed.get("host")
                if "path" in parsed or host is None:
                    if self.bdb_uid is None:
                        raise ConfigurationError(
                            _setting("bdb_uid"), f"endpoint {endpoint.name!r} is a unix socket, which no REST endpoint entry can match",
                            "set bdb_uid to the database's uid",
                        )
                    host = None
                member = self._members[endpoint.name] = _Member(host=host, port=int(parsed.get("port") or 6379))
                member.uid = self.bdb_uid
            return member

    def after_fork(self) -> None:
        """Locks held by another thread at fork() time would stay held in the child."""
        self._members_lock = threading.Lock()
        for member in self._members.values():
            member.lock = threading.Lock()

    # -- the probe ------------------------------------------------------------------

    def check(self, ctx: ProbeContext) -> HealthResult:
        member = self._member_for(ctx.endpoint)
        spacing = (self.interval if self.interval is not None else ctx.interval) * 0.9  # tolerate round-start jitter
        with member.lock:
            now = time.monotonic()
            if member.last is not None and member.last_at is not None and now - member.last_at < spacing:
                return member.last
            started = time.monotonic()
            outcome = self._probe(ctx, member)
            result = outcome.result
            if result.latency is None:
                result = HealthResult(result.status, result.detail, time.monotonic() - started)
            self._report(ctx.endpoint.name, member, outcome.problem)
            if result.status is HealthStatus.INCONCLUSIVE and self.on_error != "inconclusive":
                result = HealthResult(HealthStatus(self.on_error), f"{result.detail} (counted as {self.on_error}: on_error)", result.latency)
            member.last, member.last_at = result, now
            return result

    def _authorization(self) -> str:
        if self._credentials is None:
            return self._basic(self._username or "", self._password or "")
        try:
            if isinstance(self._credentials, CredentialProvider):
                pair = tuple(self._credentials.get_credentials())
            else:
                pair = tuple(self._credentials())
        except Exception as exc:  # noqa: BLE001 - a failing secret store is not evidence about the database
            raise _Problem(f"credentials callable raised {type(exc).__name__}", "credentials") from None
        if len(pair) != 2 or not all(isinstance(x, str) for x in pair):
            raise _Problem("credentials callable must return (username, password)", "credentials")
        return self._basic(pair[0], pair[1])

    @staticmethod
    def _basic(username: str, password: str) -> str:
        return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")

    def _probe(self, ctx: ProbeContext, member: _Member) -> _Outcome:
        budget = self.timeout if self.timeout is not None else ctx.timeout
        try:
            authorization = self._authorization()
            with _Session(self, budget, authorization) as session:
                if member.uid is None:
                    found = self._discover(session, member)
                    if isinstance(found, _Outcome):
                        return found
                if self.lag_aware and member.crdt is None:
                    guarded = self._guard(session, member)
                    if guarded is not None:
                        return guarded
                return self._availability(session, member)
        except _Problem as problem:
            return _Outcome(HealthResult.inconclusive(problem.detail), problem)

    def _forget_uid(self, member: _Member) -> None:
        if self.bdb_uid is None:
            member.uid = None
        member.crdt = None

    def _discover(self, session: _Session, member: _Member) -> _Outcome | None:
        where = f"{member.host}:{member.port}"
        status, _headers, body = session.get("/v1/bdbs", {"fields": "uid,endpoints"}, _DISCOVERY_LIMIT)
        if status != 200:
            raise self._unexpected(status, body, "database list")
        data = _json(body)
        try:
            uids = match_databases(data, member.host or "", member.port)
        except ValueError:
            raise _Problem("malformed answer to GET /v1/bdbs (expected a JSON array)", "malformed-discovery") from None
        if len(uids) == 1:
            member.uid = uids[0]
            member.matched_before = True
            member.crdt = None
            return None
        if len(uids) > 1:
            raise _Problem(
                f"databases {', '.join(map(str, uids))} all have an endpoint {where}; set bdb_uid to choose one", "ambiguous",
            )
        if member.matched_before:
            return _Outcome(HealthResult.unhealthy(f"no database on {self.base_url} has an endpoint {where} any more"))
        raise _Problem(
            f"no database on {self.base_url} has an endpoint {where} (matched on dns_name or addr, and port); "
            "check url, or set bdb_uid",
            "no-match",
        )

    def _guard(self, session: _Session, member: _Member) -> _Outcome | None:
        """Ask once whether the database is Active-Active (the lag check only means something there)."""
        status, _headers, body = session.get(f"/v1/bdbs/{member.uid}", {"fields": "uid,crdt"})
        if status == 404:
            return self._not_found(member, body)
        if status != 200:
            raise self._unexpected(status, body, "database")
        data = _json(body)
        if not isinstance(data, dict) or not isinstance(data.get("crdt"), bool):
            raise _Problem(f"malformed answer to GET /v1/bdbs/{member.uid}?fields=uid,crdt", "malformed-guard")
        member.crdt = bool(data["crdt"])
        return None

    def _not_found(self, member: _Member, body: bytes) -> _Outcome:
        uid = member.uid
        code = _error_code(body) or "not found"
        self._forget_uid(member)
        again = "; will look it up again" if self.bdb_uid is None else " (configured bdb_uid)"
        return _Outcome(HealthResult.unhealthy(f"database {uid} not found ({code}){again}"))

    def _unexpected(self, status: int, body: bytes, what: str) -> _Problem:
        if 300 <= status < 400:
            return _Problem(f"HTTP {status} redirect for the {what}, not followed (check url)", f"http-{status}")
        if status == 401:
            return _Problem("HTTP 401: the cluster rejected the credentials", "http-401")
        if status == 403:
            return _Problem("HTTP 403: the user's role may not view the database (db_viewer is enough)", "http-403")
        if status == 400:
            code = _error_code(body)
            return _Problem(f"HTTP 400: request rejected{f' ({code})' if code else ''}", "http-400")
        return _Problem(f"HTTP {status} for the {what}", f"http-{status}")

    def _availability(self, session: _Session, member: _Member) -> _Outcome:
        lag = self.lag_aware and member.crdt is not False
        query: dict[str, str] = {}
        if lag:
            query["extend_check"] = "lag"
            if self.lag_tolerance_ms is not None:
                query["availability_lag_tolerance_ms"] = str(self.lag_tolerance_ms)
        status, _headers, body = session.get(f"/v1/bdbs/{member.uid}/availability", query)
        tolerance = "the cluster's default tolerance" if self.lag_tolerance_ms is None else f"{self.lag_tolerance_ms} ms"
        note = ""
        if self.lag_aware and member.crdt is False:
            note = f"; database {member.uid} is not Active-Active, so lag does not apply: plain availability checked"
        if 200 <= status < 300:
            what = f"available, lag within {tolerance}" if lag else "available"
            return _Outcome(HealthResult.healthy(f"database {member.uid} {what}{note}"))
        if status == 404:
            return self._not_found(member, body)
        if status == 503:
            code = _error_code(body)
            if code is not None and (code.startswith("bdb_unavailable") or code == "no_quorum"):
                if code == "no_quorum":
                    why = "cluster has no quorum"
                elif lag:
                    why = f"unavailable or lagging more than {tolerance}"
                else:
                    why = "unavailable"
                return _Outcome(HealthResult.unhealthy(f"database {member.uid} {why} ({code}){note}"))
            raise _Problem(f"HTTP 503 without a database verdict ({code or 'malformed body'})", f"http-503-{code}")
        raise self._unexpected(status, body, "availability")

    def _report(self, endpoint: str, member: _Member, problem: _Problem | None) -> None:
        """Log a problem once when it starts (or changes), and once when it ends."""
        if self.lag_aware and member.crdt is False and not member.non_crdt_logged:
            member.non_crdt_logged = True
            logger.warning(
                "geofailover: endpoint %s: database %s on %s is not Active-Active; extend_check=lag always answers 503 "
                "there, so its lag check uses the plain availability check instead",
                endpoint, member.uid, self.base_url,
            )
        key = problem.key if problem is not None else None
        if key == member.problem_key:
            return
        if problem is not None:
            logger.log(problem.level, "geofailover: REST check %s of endpoint %s gave no verdict: %s", self.name, endpoint, problem.detail)
        elif member.problem_key is not None:
            logger.info("geofailover: REST check %s of endpoint %s answers again", self.name, endpoint)
        member.problem_key = key

    def __repr__(self) -> str:
        return (
            f"{_CLS}(url={self.base_url!r}, bdb_uid={self.bdb_uid!r}, lag_aware={self.lag_aware!r}, "
            f"lag_tolerance_ms={self.lag_tolerance_ms!r}, mode={self.mode!r})"
        )

