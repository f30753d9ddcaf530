"""The charts: each scenario's pull times as points over a box of p50-p90, with the bound drawn
in (`draw`); and for a sweep over N, each scenario's p50 and p99 against N, as ratios to its own
bound (`draw_sweep`).

matplotlib draws them (Agg, no display needed); each figure is built on an explicit `Figure`, so
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
SERIES_COLORS = ("#1f4e79", "#c0392b", "#27ae60", "#8e44ad", "#d35400", "#16a085", "#7f8c8d")


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


def draw_sweep(sweep: dict[str, Any], path: Path) -> None:
    params = sweep["params"]
    figure = Figure(figsize=(8, 5), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for index, (name, points) in enumerate(sweep["scenarios"].items()):
        measured = [p for p in points if p.get("p50_lb") is not None]
        if not measured:
            continue
        color = SERIES_COLORS[index % len(SERIES_COLORS)]
        counts = [p["nodes"] for p in measured]
        bound = measured[0].get("bound", "LB")
        axes.plot(counts, [p["p50_lb"] for p in measured], "o-", color=color,
                  label=f"{name} p50 (/{bound})")  # fmt: skip
        axes.plot(counts, [p["p99_lb"] for p in measured], "s--", color=color, alpha=0.7,
                  label=f"{name} p99")  # fmt: skip
    axes.axhline(1.0, color=BOUND_COLOR, linestyle=":", linewidth=1.2)
    axes.set_xticks(params["nodes"])
    axes.set_xlabel("nodes N")
    axes.set_ylabel("pull time / the scenario's own bound")
    axes.set_ylim(bottom=0)
    axes.set_title(
        f"{params['image_bytes'] / (1 << 20):.0f} MiB image, B = {params['node_mbit']:g} Mbit/s, "
        f"U = {params['upstream_mbit']:g} Mbit/s: p50 (solid) and p99 (dashed) against N",
        fontsize=10,
    )
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path)
