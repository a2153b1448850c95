"""The one place where geofailover's options, defaults and bounds live.

Every option geofailover validates is declared here once, with its default,
its bounds (smallest and largest value, or the allowed values) and a
sentence for operators. :mod:`geofailover_core.config` takes its defaults
from this table and validates every value against it, the README's option
tables are generated from it (``python -m geofailover_core.defaults``) and a
test keeps the two in step, so neither the documentation nor the checks can
drift from the code.

Bounds refuse values that parse but cannot be meant: a weight of ``1e-300``,
a probe every nanosecond, a billion probes per round, port 0, database
99999. A value outside them is a typo or a unit mistake, and the place to
learn that is start-up, not the outage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

#: How a value is checked: ``seconds`` and ``number`` (int or float),
#: ``integer`` (int), ``choice`` (one of ``choices``), ``flag`` (bool),
#: ``key`` (letters, digits and ``. _ : -``), ``text`` (any string),
#: ``codec`` (a Python codec name) and ``codec_errors`` (a codec error handler).
Kind = Literal["seconds", "number", "integer", "choice", "flag", "key", "text", "codec", "codec_errors"]

#: Who holds the value. ``engine``: one value per configuration name, shared
#: by every client of the engine (a different value under the same name is a
#: ConfigurationError). ``client``: the engine's default for connections,
#: which each client may override with its own. ``endpoint``: one value per
#: endpoint. ``connection``: a redis-py connection option, per client or per
#: endpoint (settings, URL query or keyword argument).
Scope = Literal["engine", "client", "endpoint", "connection"]


@dataclass(frozen=True)
class Setting:
    """One option: name, default, unit, bounds, who holds it, and why."""

    name: str
    default: Any
    unit: str
    doc: str
    kind: Kind
    scope: Scope = "engine"
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] = ()
    #: ``None`` is accepted and means redis-py's own behaviour.
    nullable: bool = False

    @property
    def allowed(self) -> str:
        """The bounds as an operator reads them: ``0.01 - 3600 s``, ``"all", "any"``."""
        if self.kind == "choice":
            shown = ", ".join(f'"{c}"' if isinstance(c, str) else repr(c) for c in self.choices)
            return shown + (", None" if self.nullable else "")
        if self.kind == "flag":
            return "True, False"
        if self.kind == "key":
            return "letters, digits, `. _ : -`"
        if self.kind == "codec":
            return "a Python codec name"
        if self.kind == "codec_errors":
            return "a codec error handler"
        if self.minimum is None and self.maximum is None:
            return "text"
        unit = f" {self.unit}" if self.unit else ""
        return f"{_num(self.minimum)} to {_num(self.maximum)}{unit}"


def _num(value: float | None) -> str:
    if value is None:
        return "?"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:g}"


def _seconds(name: str, default: float | None, minimum: float, maximum: float, doc: str, scope: Scope = "engine") -> Setting:
    return Setting(name, default, "s", doc, "seconds", scope, minimum, maximum)


def _integer(name: str, default: int | None, minimum: int, maximum: int, doc: str, scope: Scope = "engine", unit: str = "") -> Setting:
    return Setting(name, default, unit, doc, "integer", scope, minimum, maximum)


def _choice(name: str, default: Any, choices: tuple[Any, ...], doc: str, scope: Scope = "engine", nullable: bool = False) -> Setting:
    return Setting(name, default, "", doc, "choice", scope, choices=choices, nullable=nullable)


def _flag(name: str, default: bool | None, doc: str, scope: Scope = "engine") -> Setting:
    return Setting(name, default, "", doc, "flag", scope)


_POLICIES = ("all", "any", "majority")

#: The options of :class:`~geofailover_core.config.FailoverConfig`, in the README's order.
SETTINGS: Final[tuple[Setting, ...]] = (
    _seconds(
        "socket_timeout", 1.0, 0.01, 3600,
        "Read/write timeout of every connection to an endpoint. Finite so that a frozen "
        "or blackholed region costs about this long, not redis-py's minutes of nested retries.",
        scope="client",
    ),
    _seconds(
        "socket_connect_timeout", 1.0, 0.01, 3600,
        "TCP connect timeout per endpoint.",
        scope="client",
    ),
    _seconds(
        "probe_interval", 1.0, 0.01, 3600,
        "Time between two probe rounds of the health monitor (all endpoints, concurrently). "
        "Formerly `health_check_interval` (see *Probe interval and `health_check_interval`*).",
    ),
    _seconds(
        "health_check_timeout", 0.5, 0.01, 300,
        "Timeout of one probe. A probe that does not answer in time is unhealthy.",
    ),
    _integer(
        "health_check_probes", 1, 1, 10,
        "Probes per check and round; combined by `health_check_policy`.",
    ),
    _seconds(
        "health_check_probe_delay", 0.05, 0, 60,
        "Pause between two probes of the same round.",
    ),
    _choice(
        "health_check_policy", "all", _POLICIES,
        "How probes of one round combine: `all` must pass, `any` may pass, or a strict `majority`.",
    ),
    _choice(
        "health_check_combine", "all", _POLICIES,
        "How several checks of one endpoint combine: `all` must pass, `any` may pass, or a strict `majority`.",
    ),
    _integer(
        "failure_threshold", 3, 1, 10_000,
        "Consecutive connection errors/timeouts on the command path that open an endpoint's "
        "circuit breaker. A refused connection opens it at once.",
    ),
    _seconds(
        "breaker_reset_timeout", 2.0, 0, 3600,
        "Minimum time an opened breaker stays open before a healthy probe may close it again.",
    ),
    _flag(
        "auto_failback", True,
        "Return to a higher-weight endpoint once it has been healthy for the grace period.",
    ),
    _seconds(
        "failback_grace_period", 10.0, 0, 86_400,
        "How long a higher-weight endpoint must be continuously healthy before traffic returns to it.",
    ),
    _choice(
        "retry_on_failover", "read_only", ("all", "read_only", "none"),
        "Which commands are re-sent on the new endpoint when their endpoint failed under them: "
        "`all`, `read_only` (reads, plus any command that provably never reached the server), or `none`.",
    ),
    _seconds(
        "confirm_timeout", 1.0, 0.01, 60,
        "Longest time a failed command waits for an immediate probe to confirm the endpoint is "
        "down (and then retries on the next one) instead of raising at once.",
    ),
    _flag(
        "control_plane", True,
        "Read operators' override records and publish this process's heartbeat each interval, so "
        "`geofailover failover`/`status` act on and report the whole fleet.",
    ),
    Setting(
        "control_key_prefix", "geofailover", "",
        "Prefix of the control-plane keys (override record, heartbeats) written to every endpoint.",
        "key",
    ),
    Setting(
        "control_db", None, "",
        "Database of the control-plane keys on every endpoint. `None`: database 15 (14 when the "
        "application uses 15), so `KEYS`, `SCAN`, `DBSIZE` and `FLUSHDB` of the application's "
        "database never see them; on a server with one database (Redis Software, Redis Cloud) "
        "the application's, under the key prefix. Every process of a fleet and the "
        "`geofailover` command must agree on it.",
        "integer", minimum=0, maximum=1023, nullable=True,
    ),
    Setting(
        "app_label", "", "",
        "Label of this application in heartbeats and fleet status (e.g. `web`, `worker`).",
        "text",
    ),
)

#: Per-endpoint settings and the redis-py connection options whose values
#: geofailover checks (wherever they are given: settings, URL query, keyword
#: arguments). ``default`` None: redis-py's own default.
CONNECTION_SETTINGS: Final[tuple[Setting, ...]] = (
    Setting(
        "weight", 1.0, "",
        "Endpoint priority: the highest-weight healthy endpoint is active, ties go to the one listed first.",
        "number", "endpoint", 0.001, 1_000_000,
    ),
    _integer(
        "port", 6379, 1, 65_535,
        "TCP port in an endpoint URL (`redis://host:port/db`).",
        scope="endpoint",
    ),
    _integer(
        "db", 0, 0, 1023,
        "Database number (URL path or `?db=`). Redis has 16 by default; more than 1024 is refused as a typo.",
        scope="connection",
    ),
    _integer(
        "max_connections", None, 1, 1_000_000,
        "Size limit of a client's connection pool (redis-py: unbounded).",
        scope="connection",
    ),
    _seconds(
        "health_check_interval", 0, 0, 3600,
        "redis-py's connection health check: PING a connection before use when it has been idle this long "
        "(0: never). Not the probe interval (`probe_interval`).",
        scope="connection",
    ),
    _integer(
        "socket_read_size", None, 1, 16 * 1024 * 1024,
        "Bytes read from the socket at a time.",
        scope="connection", unit="bytes",
    ),
    _choice(
        "protocol", None, (2, 3),
        "RESP version (redis-py: 2).",
        scope="connection", nullable=True,
    ),
    _choice(
        "ssl_cert_reqs", "required", ("none", "optional", "required"),
        "Certificate verification of `rediss://` endpoints (an `ssl.VerifyMode` is accepted too; None means none).",
        scope="connection", nullable=True,
    ),
    _flag(
        "ssl_check_hostname", True,
        "Check that the server certificate names the host. geofailover turns it on for every redis-py "
        "version (redis-py 5 left it off) unless you turn it off or set `ssl_cert_reqs=\"none\"`.",
        scope="connection",
    ),
    _flag("ssl", False, "Use TLS (same as a `rediss://` URL).", scope="connection"),
    _flag("socket_keepalive", True, "TCP keepalive on every connection (geofailover's default).", scope="connection"),
    _flag("retry_on_timeout", False, "redis-py's retry flag (geofailover never lets redis-py retry: failover does).", scope="connection"),
    _flag("decode_responses", False, "Return `str` instead of `bytes`.", scope="connection"),
    Setting("encoding", "utf-8", "", "Codec of `decode_responses` and of str arguments.", "codec", "connection"),
    Setting("encoding_errors", "strict", "", "Error handler of that codec.", "codec_errors", "connection"),
)


DEFAULTS: Final[dict[str, Any]] = {s.name: s.default for s in SETTINGS}

#: Every setting by name: the one table config.py validates against.
BOUNDS: Final[dict[str, Setting]] = {s.name: s for s in (*SETTINGS, *CONNECTION_SETTINGS)}

_SCOPE_TEXT = {
    "engine": "engine",
    "client": "per client",
    "endpoint": "per endpoint",
    "connection": "per client or endpoint",
}


def _default_text(s: Setting) -> str:
    if s.default is None:
        return "redis-py's"
    value = f'"{s.default}"' if isinstance(s.default, str) else repr(s.default)
    return f"`{value} {s.unit}`" if s.unit and s.kind == "seconds" else f"`{value}`"


def _table(settings: tuple[Setting, ...]) -> list[str]:
    lines = ["| Option | Default | Allowed | Scope | Meaning |", "|---|---|---|---|---|"]
    for s in settings:
        lines.append(f"| `{s.name}` | {_default_text(s)} | {s.allowed} | {_SCOPE_TEXT[s.scope]} | {s.doc} |")
    return lines


def markdown_table() -> str:
    """Render the option tables embedded in the README (engine options, then
    endpoint and connection options)."""
    return "\n".join(
        [
            *_table(SETTINGS),
            "",
            "Endpoint settings and the redis-py connection options whose values are checked",
            "(in settings, in an endpoint URL's query, or as keyword arguments):",
            "",
            *_table(CONNECTION_SETTINGS),
        ]
    )


if __name__ == "__main__":  # pragma: no cover - documentation helper
    print(markdown_table())
