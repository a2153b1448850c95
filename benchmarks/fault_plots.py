"""Timelines of the fault matrix: one PNG per fault, one panel per surface.

Each panel shows every call's latency against the time since the fault (log
scale), failed calls as red crosses at the moment they returned, the fault
window shaded, and the moments the traffic switched region (a failover in
orange, a failback to ``a`` in green). Needs matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt


def timeline(path: Path, title: str, panels: list[dict[str, Any]]) -> None:
    """``panels``: label, records ([start, end, value, error]), t_fault, t_heal, t_end, switches [(t, from, to)], note."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 1.55 * len(panels) + 0.9), sharex=True, squeeze=False)
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        t0 = panel["t_fault"]
        ok_x = [r[1] - t0 for r in panel["records"] if r[3] is None]
        ok_y = [max(0.05, (r[1] - r[0]) * 1000) for r in panel["records"] if r[3] is None]
        err_x = [r[1] - t0 for r in panel["records"] if r[3] is not None]
        err_y = [max(0.05, (r[1] - r[0]) * 1000) for r in panel["records"] if r[3] is not None]
        ax.axvspan(0, panel["t_heal"] - t0, color="0.85", zorder=0, label="fault")
        ax.scatter(ok_x, ok_y, s=4, color="tab:blue", zorder=2, label="call")
        if err_x:
            ax.scatter(err_x, err_y, s=28, marker="x", color="tab:red", zorder=3, label="error")
        for t, _old, new in panel["switches"]:
            ax.axvline(t - t0, color="tab:green" if new == "a" else "tab:orange", lw=1.2, zorder=1)
        ax.set_yscale("log")
        ax.set_ylim(0.05, 20000)
        ax.set_yticks([0.1, 1, 10, 100, 1000, 10000])
        ax.set_yticklabels(["0.1", "1", "10", "100", "1 s", "10 s"], fontsize=7)
        ax.set_ylabel("ms", fontsize=7)
        ax.text(0.005, 0.93, panel["label"], transform=ax.transAxes, fontsize=8, va="top", weight="bold")
        if panel.get("note"):
            ax.text(0.995, 0.93, panel["note"], transform=ax.transAxes, fontsize=7, va="top", ha="right")
        ax.grid(True, axis="y", color="0.9", lw=0.5)
    last = axes[-1, 0]
    first = panels[0]
    last.set_xlim(-1.0, first["t_end"] - first["t_fault"] + 0.2)
    last.set_xlabel("seconds since the fault (grey: fault window; orange line: traffic left a; green: traffic back on a; red x: error)", fontsize=8)
    fig.suptitle(textwrap.fill(title, 130), fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
