"""Text for people on a terminal: colour when it helps, plain text when piped.

Shared by the ``geofailover`` command line and the demo, so both look alike.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import TextIO

from .control.records import format_duration


class Style:
    """ANSI colour only when asked for or on a terminal (and not with NO_COLOR)."""

    CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}

    def __init__(self, out: TextIO, mode: str = "auto") -> None:
        if mode == "always":
            self.enabled = True
        elif mode == "never" or os.environ.get("NO_COLOR"):
            self.enabled = False
        else:
            isatty = getattr(out, "isatty", None)
            self.enabled = bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"
        encoding = (getattr(out, "encoding", None) or "utf-8").lower()
        self.unicode = "utf" in encoding

    def __call__(self, text: str, *styles: str) -> str:
        if not self.enabled or not styles or not text:
            return text
        codes = ";".join(self.CODES[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def sym(self, fancy: str, plain: str) -> str:
        return fancy if self.unicode else plain


Cell = str | tuple[str, tuple[str, ...]]


def table(
    headers: Sequence[str], rows: Sequence[Sequence[Cell]], style: Style, indent: str = "",
    groups: Sequence[tuple[str, int]] = (),
) -> list[str]:
    """Aligned columns; ``groups`` (title, number of columns) adds a line of titles
    above the headers, each over the columns it spans (``FLEET``, ``THIS HOST``)."""
    plain = [[c if isinstance(c, str) else c[0] for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in plain]) for i, h in enumerate(headers)]
    lines = []
    if groups:
        titles, column = [], 0
        for title, span in groups:
            width = sum(widths[column:column + span]) + 2 * (span - 1)
            titles.append(title.ljust(width))
            column += span
        lines.append(indent + style("  ".join(titles).rstrip(), "bold"))
    lines.append(indent + style("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(), "bold"))
    for row in rows:
        cells = []
        for cell, width in zip(row, widths, strict=True):
            text, styles = (cell, ()) if isinstance(cell, str) else cell
            cells.append(style(text, *styles) + " " * (width - len(text)))
        lines.append(indent + "  ".join(cells).rstrip())
    return lines


def clock(ts: float | None) -> str:
    if ts is None:
        return "-"
    local = time.localtime(ts)
    if time.strftime("%Y-%m-%d", local) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", local)
    return time.strftime("%Y-%m-%d %H:%M:%S", local)


def ago(seconds: float | None) -> str:
    return "-" if seconds is None else f"{format_duration(max(0.0, seconds))} ago"


HEALTH_STYLE = {"healthy": ("green",), "unhealthy": ("red",), "inconclusive": ("yellow",), "unknown": ("dim",)}
BREAKER_STYLE = {"closed": ("green",), "open": ("red",), "half-open": ("yellow",)}


__all__ = ["BREAKER_STYLE", "HEALTH_STYLE", "Cell", "Style", "ago", "clock", "table"]
