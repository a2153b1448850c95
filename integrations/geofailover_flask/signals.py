"""Blinker signals for failover events, sent with the Flask app as sender.

Receivers get ``event`` (the core's event) and ``instance`` (the
``GeoFailover`` name); see docs/flask.md. Why the relay looks as it does:

* The core delivers events on its dispatcher thread, where no app context
  exists; the relay pushes the app's, so receivers can use ``current_app``.
* ``Signal.send`` stops at the first receiver that raises, and the error would
  land in the core's dispatcher; the relay calls each receiver and logs failures.
* blinker holds receivers *weakly*: a lambda connected without ``weak=False``
  is collected and silently never called. The relay holds the app weakly too
  (tests create many apps) and unsubscribes when the app is collected.
* A command-line process only observes: the core mutes its engines' events
  for the command, so ``flask geofailover status`` never pages anyone.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

from blinker import NamedSignal, Namespace

if TYPE_CHECKING:
    from flask import Flask

    from geofailover_core.engine import FailoverEngine
    from geofailover_core.events import GeoEvent

logger = logging.getLogger("geofailover.flask")

_signals = Namespace()

failover = _signals.signal(
    "geofailover-failover", doc="Traffic moved away from an endpoint (it failed, or an operator moved it). Sender: the app."
)
failback = _signals.signal("geofailover-failback", doc="Traffic returned to a higher-priority endpoint. Sender: the app.")
health_changed = _signals.signal("geofailover-health-changed", doc="An endpoint's health verdict changed. Sender: the app.")
all_down = _signals.signal("geofailover-all-down", doc="No endpoint can serve; commands fail fast. Sender: the app.")
recovered = _signals.signal("geofailover-recovered", doc="An endpoint serves again after all were down. Sender: the app.")

#: Core event kind -> signal.
SIGNALS: dict[str, NamedSignal] = {
    "failover": failover,
    "failback": failback,
    "health_changed": health_changed,
    "all_down": all_down,
    "recovered": recovered,
}

__all__ = ["SIGNALS", "all_down", "failback", "failover", "health_changed", "recovered"]


def send(signal: NamedSignal, app: Flask, **kwargs: Any) -> int:
    """Call every receiver of ``signal`` for ``app`` inside an app context;
    log (never raise) a receiver's exception. Returns how many receivers ran."""
    if signal.is_muted or not signal.has_receivers_for(app):
        return 0
    called = 0
    with app.app_context():
        for receiver in list(signal.receivers_for(app)):
            called += 1
            try:
                app.ensure_sync(receiver)(app, **kwargs)
            except Exception:
                logger.exception("geofailover: receiver %r of signal %r raised; ignored", receiver, signal.name)
    return called


def relay(app: Flask, engine: FailoverEngine, instance: str) -> None:
    """Forward ``engine``'s events to the signals with ``app`` as sender, for as long as ``app`` lives."""
    app_ref = weakref.ref(app)

    def on_event(event: GeoEvent) -> None:
        target = app_ref()
        signal = SIGNALS.get(event.kind)
        if target is None or signal is None:
            return
        send(signal, target, event=event, instance=instance)

    unsubscribe = engine.on("*", on_event)
    weakref.finalize(app, unsubscribe)
