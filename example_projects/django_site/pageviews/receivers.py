"""Example receivers of geofailover's signals: where a project pages, purges or warms.

They run on geofailover's event thread, not in a request, so a slow call here
delays no user. Keep them module-level functions: Django holds receivers
through weak references.
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import receiver

from geofailover_django import signals

logger = logging.getLogger("pageviews")


@receiver(signals.failover)
def on_failover(sender: Any, alias: str, event: Any, **kwargs: Any) -> None:
    # In production: page the on-call, post to chat, bump a metric...
    logger.warning(
        "cache %r failed over %s -> %s (%s): page counts restart on the new region",
        alias, event.from_endpoint, event.to_endpoint, event.reason,
    )


@receiver(signals.failback)
def on_failback(sender: Any, alias: str, event: Any, **kwargs: Any) -> None:
    logger.info("cache %r is back on %s (from %s, %s)", alias, event.to_endpoint, event.from_endpoint, event.reason)


@receiver(signals.all_down)
def on_all_down(sender: Any, alias: str, event: Any, **kwargs: Any) -> None:
    logger.error("cache %r: every Redis region is down; pages are served without the counter", alias)


@receiver(signals.recovered)
def on_recovered(sender: Any, alias: str, event: Any, **kwargs: Any) -> None:
    logger.warning("cache %r recovered on %s", alias, event.to_endpoint)
