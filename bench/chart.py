"""The chart: each scenario's pull times as points over a box of p50-p90, with the bound drawn in.

matplotlib draws it (Agg, no display needed); the figure is built on an explicit `Figure`, so
nothing global of pyplot's is touched.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.results import percentile

BOUND_COLOR = "#c0392b"
POINT_COLOR = "#1f4e79"
BOX_COLOR = "#a9c6e8"


def draw(document: dict[str, Any], path: Path) -> None:
    params = document["params"]
    lb = float(params["lb_seconds"])
    names = list(document["scenarios"])
    figure = Figure(figsize=(9, 1.2 + 0.7 * len(names)), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    jitter = random.Random(0)
    for row, name in enumerate(names):
        y = len(names) - 1 - row
        entry = document["scenarios"][name]
        seconds = entry.get("pull_seconds") or []
        if not seconds:
            reason = entry.get("skipped") or entry.get("error") or "no pull finished"
            axes.text(lb * 0.05, y, f"{name}: {reason}"[:90], va="center", fontsize=8, color="gray")
            continue
        p50, p90 = percentile(seconds, 0.5), percentile(seconds, 0.9)
        axes.barh(y, p90 - p50, left=p50, height=0.5, color=BOX_COLOR, zorder=1)
        axes.plot([p50, p50], [y - 0.25, y + 0.25], color=POINT_COLOR, linewidth=2, zorder=2)
        ys = [y + jitter.uniform(-0.18, 0.18) for _ in seconds]
        axes.scatter(seconds, ys, s=14, color=POINT_COLOR, zorder=3)
        own = entry.get("bound_seconds")
        if own:  # a scenario with a bound of its own (a slower upstream): marked on its row
            axes.plot([own, own], [y - 0.3, y + 0.3], color=BOUND_COLOR, linewidth=1.5, zorder=2)
    axes.axvline(lb, color=BOUND_COLOR, linestyle="--", linewidth=1.5, zorder=0)
    axes.text(lb, len(names) - 0.45, f" LB = {lb:.2f} s", color=BOUND_COLOR, fontsize=9)
    axes.set_yticks(range(len(names)), list(reversed(names)))
    axes.set_ylim(-0.6, len(names) - 0.2)
    axes.set_xlim(left=0)
    axes.set_xlabel("pull time per node, seconds (box: p50 to p90)")
    axes.set_title(
        f"{params['nodes']} nodes, {params['image_bytes'] / (1 << 20):.0f} MiB image, "
        f"B = {params['node_mbit']:g} Mbit/s, U = {params['upstream_mbit']:g} Mbit/s",
        fontsize=10,
    )
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
