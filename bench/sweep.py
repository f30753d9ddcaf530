"""A sweep over cluster sizes (`--nodes 4,8,12,16`): how each scenario's p50 and p99 move with N.

One network holds the largest N; the image is pushed once; for each N the scenarios run on the
first N node hosts and write their own results (DESIGN section 6) under `nodes-<N>/`. This module
gathers them into `sweep.json` and one table, `sweep.md` (and `chart.draw_sweep` the plot): per
scenario and N, p50 and p99 as ratios to the scenario's own bound, and the last column compares
the largest N's p50 ratio with the smallest's: a system that scales stays near 1.
"""

from __future__ import annotations

from typing import Any

from bench.results import escape

# Of each scenario's entry in one N's results, what the sweep keeps.
KEPT = (
    "bound", "bound_seconds", "pulls", "failed_pulls", "p50_seconds", "p99_seconds", "p50_lb",
    "p99_lb", "egress_ratio", "agents_cpu_seconds_per_gib", "machine_cpu_busy", "cpu_bound",
    "skipped", "error",
)  # fmt: skip


def directory(nodes: int) -> str:
    """Where one N's own results go, under the sweep's output directory."""
    return f"nodes-{nodes}"


def document(params: dict[str, Any], by_nodes: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The sweep's document from each N's results document."""
    scenarios: dict[str, list[dict[str, Any]]] = {}
    for nodes, results in sorted(by_nodes.items()):
        for name, entry in results["scenarios"].items():
            point = {"nodes": nodes} | {k: entry[k] for k in KEPT if k in entry}
            scenarios.setdefault(name, []).append(point)
    results_files = {str(n): f"{directory(n)}/results.json" for n in sorted(by_nodes)}
    return {"params": params, "results": results_files, "scenarios": scenarios}


def markdown(sweep: dict[str, Any]) -> str:
    params = sweep["params"]
    counts = params["nodes"]
    size = params["image_bytes"] / (1 << 20)
    lines = [
        "## distributed-images bench: a sweep over N",
        "",
        f"`{params['command']}`",
        "",
        f"S = {size:.1f} MiB in {params['layers']} layers, B = {params['node_mbit']:g} Mbit/s, "
        f"U = {params['upstream_mbit']:g} Mbit/s, LB = {params['lb_seconds']:.2f} s; "
        f"{params['repeat']} repeat(s) per N, {params['started_at']}. Each cell is p50 / p99 as "
        "ratios to the scenario's own bound; each N's full table is in its `nodes-N/results.md`.",
        "",
        "| scenario | bound | " + " | ".join(f"N = {n}" for n in counts)
        + f" | p50 at N = {counts[-1]} / at N = {counts[0]} |",
        "|---|---|" + "---:|" * (len(counts) + 1),
    ]  # fmt: skip
    for name, points in sweep["scenarios"].items():
        by_nodes = {p["nodes"]: p for p in points}
        bound = next((p["bound"] for p in points if "bound" in p), "")
        cells = [name, bound, *(_cell(by_nodes.get(n)) for n in counts)]
        first, last = by_nodes.get(counts[0], {}), by_nodes.get(counts[-1], {})
        growth = None
        if first.get("p50_lb") and last.get("p50_lb"):
            growth = last["p50_lb"] / first["p50_lb"]
        cells.append("n/a" if growth is None else f"{growth:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(point: dict[str, Any] | None) -> str:
    if point is None:
        return ""
    if "p50_lb" not in point or point["p50_lb"] is None:
        reason = point.get("skipped") or point.get("error") or "no pull finished"
        return "skipped" if "skipped" in point else f"error: {escape(str(reason))[:40]}"
    text = f"{point['p50_lb']:.2f} / {point['p99_lb']:.2f}"
    notes = []
    if point.get("failed_pulls"):
        notes.append(f"{point['failed_pulls']} failed")
    if point.get("cpu_bound"):
        notes.append("CPU-bound")
    return f"{text} ({', '.join(notes)})" if notes else text
