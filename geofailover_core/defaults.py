"""The one place where geofailover's defaults live.

Every engine option is declared here once, with its default and a sentence
for operators.  :class:`geofailover_core.config.FailoverConfig` takes its
defaults from this table, the README's table of defaults is generated from it
(``python -m geofailover_core.defaults``) and a test keeps the two in step,
so the documentation cannot drift from the code the way the peer clients'
docs have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final


@dataclass(frozen=True)
class Setting:
    """One engine option: its name, default, unit and why it has that default."""

    name: str
    default: Any
    unit: str
    doc: str


SETTINGS: Final[tuple[Setting, ...]] = (
    Setting(
        "socket_timeout", 1.0, "s",
        "Read/write timeout of every connection to an endpoint. Finite so that a frozen "
        "or blackholed region costs about this long, not redis-py's minutes of nested retries.",
    ),
    Setting(
        "socket_connect_timeout", 1.0, "s",
        "TCP connect timeout per endpoint.",
    ),
    Setting(
        "health_check_interval", 1.0, "s",
        "Time between two probe rounds of the health monitor (all endpoints, concurrently).",
    ),
    Setting(
        "health_check_timeout", 0.5, "s",
        "Timeout of one probe. A probe that does not answer in time is unhealthy.",
    ),
    Setting(
        "health_check_probes", 1, "",
        "Probes per check and round; combined by `health_check_policy`.",
    ),
    Setting(
        "health_check_probe_delay", 0.05, "s",
        "Pause between two probes of the same round.",
    ),
    Setting(
        "health_check_policy", "all", "",
        "How probes of one round combine: `all` must pass, `any` may pass, or a strict `majority`.",
    ),
    Setting(
        "health_check_combine", "all", "",
        "How several checks of one endpoint combine: `all` must pass, `any` may pass, or a strict `majority`.",
    ),
    Setting(
        "failure_threshold", 3, "",
        "Consecutive connection errors/timeouts on the command path that open an endpoint's "
        "circuit breaker. A refused connection opens it at once.",
    ),
    Setting(
        "breaker_reset_timeout", 2.0, "s",
        "Minimum time an opened breaker stays open before a healthy probe may close it again.",
    ),
    Setting(
        "auto_failback", True, "",
        "Return to a higher-weight endpoint once it has been healthy for the grace period.",
    ),
    Setting(
        "failback_grace_period", 10.0, "s",
        "How long a higher-weight endpoint must be continuously healthy before traffic returns to it.",
    ),
    Setting(
        "retry_on_failover", "read_only", "",
        "Which commands are re-sent on the new endpoint when their endpoint failed under them: "
        "`all`, `read_only` (reads, plus any command that provably never reached the server), or `none`.",
    ),
    Setting(
        "confirm_timeout", 1.0, "s",
        "Longest time a failed command waits for an immediate probe to confirm the endpoint is "
        "down (and then retries on the next one) instead of raising at once.",
    ),
    Setting(
        "control_plane", True, "",
        "Read operators' override records and publish this process's heartbeat each interval, so "
        "`geofailover failover`/`status` act on and report the whole fleet.",
    ),
    Setting(
        "control_key_prefix", "geofailover", "",
        "Prefix of the control-plane keys (override record, heartbeats) written to every endpoint.",
    ),
    Setting(
        "app_label", "", "",
        "Label of this application in heartbeats and fleet status (e.g. `web`, `worker`).",
    ),
)


DEFAULTS: Final[dict[str, Any]] = {s.name: s.default for s in SETTINGS}


def markdown_table() -> str:
    """Render the defaults as the Markdown table embedded in the README."""
    lines = ["| Option | Default | Meaning |", "|---|---|---|"]
    for s in SETTINGS:
        value = f"{s.default!r}" if not isinstance(s.default, str) else f'"{s.default}"'
        if s.unit:
            value = f"{value} {s.unit}"
        lines.append(f"| `{s.name}` | `{value}` | {s.doc} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - documentation helper
    print(markdown_table())
