"""The figures of a run (DESIGN section 6 fixes the JSON), as JSON and as a Markdown table.

Every time is also given as a ratio to the scenario's own bound (DESIGN section 9): cold
scenarios against LB = max(S/U, S/B), scenarios where the cluster already holds the image
(p2p-warm, the pulls after a preheat) against S/B, since the upstream is idle. The `*_lb` keys
hold these ratios; `bound` and `bound_seconds` say which bound. Every upstream egress is also a
ratio to S, so runs of different profiles read the same way. Percentiles interpolate linearly
between the closest ranks (numpy's default); over a few nodes p99 is close to the maximum.
With `--repeat`, pull times of all repeats are pooled, and the egress, peer and cost figures are
the largest of the repeats (each repeat's own figures are under `runs`; the table shows their
range).

The cost side: the agents' CPU seconds per GiB they delivered to clients, their largest peak
RSS, and how busy the machine's CPUs were; a run during which they were CPU_BOUND busy or more
is flagged CPU-bound, its times saying as much about the machine as about the system.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.measurement import Measurement

MiB = 1 << 20
CPU_BOUND = 0.9  # share of the machine's CPU time busy from which a run counts as CPU-bound
STOLEN = 0.05  # share of it taken by the hypervisor (steal) from which a run says so


@dataclass(frozen=True)
class Target:
    """A goal of the default profile (issue 6), checked on whatever profile ran."""

    name: str
    scenario: str
    key: str
    limit: float
    at_least: bool = False  # `limit` is a floor, not a ceiling


TARGETS = (
    Target("p2p-cold p50 / LB", "p2p-cold", "p50_lb", 1.2),
    Target("p2p-cold p99 / LB", "p2p-cold", "p99_lb", 1.3),
    Target("p2p-cold upstream egress / S", "p2p-cold", "egress_ratio", 1.05),
    Target("p2p-cold-slow upstream egress / S", "p2p-cold-slow", "egress_ratio", 1.05),
    Target("churn upstream egress / S", "churn", "egress_ratio", 1.05),
    Target("p2p-cold-failover failed pulls", "p2p-cold-failover", "failed_pulls", 0),
    Target("p2p-cold-failover upstream egress / S", "p2p-cold-failover", "egress_ratio", 1.05),
    Target("p2p-cold-failover p50 / p2p-cold p50", "p2p-cold-failover", "p50_vs_p2p_cold", 1.2),
    Target(
        "p2p-cold-failover re-attach / heartbeat interval",
        "p2p-cold-failover",
        "reattach_max_heartbeats",
        2,
    ),
    Target(
        "p2p-cold-failover nodes never re-attached",
        "p2p-cold-failover",
        "reattach_never_count",
        0,
    ),
    Target("direct p50 / p2p-cold p50", "p2p-cold", "speedup_vs_direct", 4.0, at_least=True),
    Target("p2p-warm p50 / (S/B)", "p2p-warm", "p50_lb", 1.25),
    Target("p2p-warm p99 / (S/B)", "p2p-warm", "p99_lb", 1.5),
    Target("p2p-cold agents' CPU s / GiB", "p2p-cold", "agents_cpu_seconds_per_gib", 4.0),
    Target("p2p-warm agents' CPU s / GiB", "p2p-warm", "agents_cpu_seconds_per_gib", 4.0),
)


def bound_seconds(image_bytes: int, node_mbit: float, upstream_mbit: float) -> float:
    """LB = max(S/U, S/B): no cold pull can finish on every node sooner (DESIGN section 9)."""
    bits = image_bytes * 8
    return max(bits / (upstream_mbit * 1e6), bits / (node_mbit * 1e6))


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(runs: Sequence[Measurement], lb: float, image_bytes: int) -> dict[str, Any]:
    """One scenario's entry: pooled pull times, the worst repeat's bytes and costs, ratios,
    every run. Ratios are to the scenario's own bound where it has one (`bound_seconds`), else
    to LB."""
    lb = runs[0].bound_seconds or lb
    seconds = [s for run in runs for s in run.pull_seconds]
    failures = [f for run in runs for f in run.failures]
    egress = max(run.upstream_egress_bytes for run in runs)
    peers = [run.peer_bytes for run in runs if run.peer_bytes is not None]
    entry: dict[str, Any] = {"pull_seconds": [round(s, 3) for s in seconds]}
    entry["bound"] = runs[0].bound
    entry["bound_seconds"] = round(lb, 3)
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)):
        value = percentile(seconds, q) if seconds else None
        entry[f"{name}_seconds"] = _round(value)
        entry[f"{name}_lb"] = _round(value / lb if value is not None else None)
    entry |= {
        "upstream_egress_bytes": egress,
        "egress_ratio": round(egress / image_bytes, 3),
        "peer_bytes": max(peers) if peers else None,
        "pulls": len(seconds),
        "failed_pulls": len(failures),
        "failures": failures,
    }
    for key in COSTS:
        values = [v for v in (run.details.get(key) for run in runs) if isinstance(v, int | float)]
        entry[key] = max(values) if values else None
    busy = entry["machine_cpu_busy"]
    entry["cpu_bound"] = busy is not None and busy >= CPU_BOUND
    entry["runs"] = [_run_entry(run) for run in runs]
    return entry


# Figures of each run that the scenario's entry gives as their largest over the repeats.
COSTS = (
    "agents_cpu_seconds_per_gib",
    "agents_peak_rss_bytes",
    "machine_cpu_busy",
    "reattach_max_heartbeats",
    "reattach_never_count",
)


def document(
    params: dict[str, Any],
    runs: dict[str, list[Measurement]],
    outcome: dict[str, dict[str, Any]],
    lb: float,
    size: int,
) -> dict[str, Any]:
    """The results document: `outcome` holds a scenario's `skipped` or `error`, if any."""
    scenarios: dict[str, dict[str, Any]] = {}
    for name, measured in runs.items():
        entry = summarize(measured, lb, size) if measured else {}
        scenarios[name] = entry | outcome.get(name, {})
    return {"params": params, "scenarios": scenarios, "targets": check_targets(scenarios)}


def _run_entry(run: Measurement) -> dict[str, Any]:
    return {
        "pull_seconds": [round(s, 3) for s in run.pull_seconds],
        "upstream_egress_bytes": run.upstream_egress_bytes,
        "peer_bytes": run.peer_bytes,
        "node_tx_bytes": run.node_tx_bytes,
        **run.details,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def check_targets(scenarios: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    cold, direct = scenarios.get("p2p-cold", {}), scenarios.get("direct", {})
    if cold.get("p50_seconds") and direct.get("p50_seconds"):
        speedup = round(direct["p50_seconds"] / cold["p50_seconds"], 2)
        scenarios = scenarios | {"p2p-cold": cold | {"speedup_vs_direct": speedup}}
    failover = scenarios.get("p2p-cold-failover", {})
    if cold.get("p50_seconds") and failover.get("p50_seconds"):
        slower = round(failover["p50_seconds"] / cold["p50_seconds"], 2)
        scenarios = scenarios | {"p2p-cold-failover": failover | {"p50_vs_p2p_cold": slower}}
    checked = []
    for target in TARGETS:
        if target.scenario not in scenarios:
            continue
        value = scenarios[target.scenario].get(target.key)
        met = None
        if value is not None:
            met = value >= target.limit if target.at_least else value <= target.limit
        bound = f">= {target.limit:g}" if target.at_least else f"<= {target.limit:g}"
        checked.append({"target": target.name, "value": value, "limit": bound, "met": met})
    return checked


def markdown(document: dict[str, Any]) -> str:
    params = document["params"]
    size = params["image_bytes"]
    sb = size * 8 / (params["node_mbit"] * 1e6)
    lines = [
        "## distributed-images bench",
        "",
        f"`{params['command']}`",
        "",
        f"N = {params['nodes']} nodes, S = {size / MiB:.1f} MiB in {params['layers']} layers, "
        f"B = {params['node_mbit']:g} Mbit/s, U = {params['upstream_mbit']:g} Mbit/s: "
        f"LB = max(S/U, S/B) = {params['lb_seconds']:.2f} s, S/B = {sb:.2f} s. "
        f"{params['repeat']} repeat(s), {params['started_at']}, {params['cpus']} CPUs, "
        f"load average {params['load_average_1m']} at the start.",
        "",
        "Each scenario is judged against its own bound: cold ones against LB, those where the "
        "cluster holds the image against S/B (the upstream is idle). Agents' CPU is their CPU "
        "seconds per GiB they delivered to clients; RSS the largest peak among them; CPU busy "
        f"how busy the machine's CPUs were (a run at {CPU_BOUND:.0%} or more is CPU-bound: its "
        "times say as much about the machine as about the system), and how much of that time "
        "the hypervisor gave other guests (stolen: the run had that much less CPU than the "
        "machine's size says). With repeats, a cost cell gives the range of the runs.",
        "",
        "| scenario | bound s | pulls | failed | p50 s | p99 s | max s | p50/bound | p99/bound "
        "| max/bound | egress/S | peer MiB | agents' CPU s/GiB | agents' RSS MiB | CPU busy "
        "| preheat s | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, entry in document["scenarios"].items():
        lines.append(_row(name, entry))
    lines += ["", "| target | measured | goal | met |", "|---|---:|---:|---|"]
    for target in document["targets"]:
        met = {True: "yes", False: "**no**", None: "n/a"}[target["met"]]
        lines.append(
            f"| {target['target']} | {_cell(target['value'])} | {target['limit']} | {met} |"
        )
    efficiency = framing_efficiency(params["mtu"])
    lines += ["", _FOOTNOTE.format(goodput=efficiency, mtu=params["mtu"], floor=1 / efficiency)]
    return "\n".join(lines) + "\n"


_FOOTNOTE = (
    "Upstream egress is the upstream host's interface counter (tx_bytes): payload plus the "
    "headers of each TSO segment, well under 1% here. Links are shaped by tbf at the nominal "
    "rate with every packet's headers counted, so TCP payload moves at {goodput:.1%} of it at "
    "MTU {mtu}: even a perfect transfer measures about {floor:.2f} LB."
)


def framing_efficiency(mtu: int) -> float:
    """TCP payload per byte tbf counts: Ethernet 14 + IPv4 20 + TCP with timestamps 32."""
    return (mtu - 52) / (mtu + 14)


COLUMNS = 17


def _row(name: str, entry: dict[str, Any]) -> str:
    if "skipped" in entry:
        return _line([name, *[""] * (COLUMNS - 2), f"skipped: {entry['skipped']}"])
    if "error" in entry and "pull_seconds" not in entry:
        return _line([name, *[""] * (COLUMNS - 2), f"error: {escape(entry['error'])}"])
    runs = entry["runs"]
    peers = entry["peer_bytes"]
    cells = [
        name,
        f"{entry['bound']} {entry['bound_seconds']:.2f}",
        str(entry["pulls"]),
        str(entry["failed_pulls"]),
        *(_cell(entry[f"{p}_seconds"]) for p in ("p50", "p99", "max")),
        *(_cell(entry[f"{p}_lb"]) for p in ("p50", "p99", "max")),
        f"{entry['egress_ratio']:.2f}",
        "n/a" if peers is None else f"{peers / MiB:.1f}",
        _span([r.get("agents_cpu_seconds_per_gib") for r in runs], "{:.1f}"),
        _span([_mib(r.get("agents_peak_rss_bytes")) for r in runs], "{:.0f}"),
        _busy(
            [r.get("machine_cpu_busy") for r in runs], [r.get("machine_cpu_stolen") for r in runs]
        ),
        _preheat(runs),
        "; ".join(_notes(entry)),
    ]
    return _line(cells)


def _notes(entry: dict[str, Any]) -> list[str]:
    notes = []
    if entry["failed_pulls"]:
        notes.append(f"first failure: {escape(entry['failures'][0])}")
    for run in entry["runs"][:1]:
        if "killed_nodes" in run:
            killed = ", ".join(run["killed_nodes"])
            notes.append(f"killed {killed} at {run['kill_after_seconds']:.1f} s")
        if "upstream_mbit" in run:
            notes.append(f"U = {run['upstream_mbit']:g} Mbit/s")
    notes += _upstream_sending(entry["runs"])
    notes += _reattach(entry["runs"])
    redundant = [run.get("peer_redundant_bytes") for run in entry["runs"]]
    if any(redundant):
        notes.append(f"{_span([_mib(r) for r in redundant], '{:.1f}')} MiB of it redundant")
    fallbacks = sum(sum(run.get("agent_fallbacks", {}).values()) for run in entry["runs"])
    if fallbacks:
        notes.append(f"{fallbacks} fallbacks to upstream")
    return notes


def _upstream_sending(runs: list[dict[str, Any]]) -> list[str]:
    """When the upstream sent the image, run by run: the wait before, the tail after."""
    spans = [
        f"{run['upstream_first_byte_seconds']:.1f}-{run['upstream_last_byte_seconds']:.1f}"
        for run in runs
        if "upstream_first_byte_seconds" in run
    ]
    return [f"upstream sent at {', '.join(spans)} s"] if spans else []


def _reattach(runs: list[dict[str, Any]]) -> list[str]:
    """p2p-cold-failover: when the replica was killed, and how long its nodes took to move."""
    notes = []
    for run in runs:
        if "reattach_seconds" not in run:
            continue
        seconds = [s for s in run["reattach_seconds"].values() if s is not None]
        beats = run["heartbeat_interval_seconds"]
        moved = (
            f"{len(seconds)} nodes re-attached in {_span(seconds, '{:.2f}')} s "
            f"({_span([s / beats for s in seconds], '{:.2f}')} heartbeats)"
        )
        never = run["reattach_never"]
        if never:
            moved += f", never: {', '.join(never)}"
        killed = f"{run['killed_tracker']} killed at {run['kill_after_seconds']:.1f} s"
        notes.append(f"{killed}, {moved}")
    return notes


def _preheat(runs: list[dict[str, Any]]) -> str:
    """The preheat's own time and its ratio to LB, and the nodes it failed on, if any."""
    seconds = [r["preheat_seconds"] for r in runs if "preheat_seconds" in r]
    if not seconds:
        return ""
    text = f"{_span(seconds, '{:.1f}')} ({_span([r['preheat_lb'] for r in runs], '{:.2f}')} LB)"
    failed = sum(r.get("preheat_failed_nodes", 0) for r in runs)
    return f"{text}, {failed} nodes failed" if failed else text


def _busy(values: list[float | None], stolen: Sequence[float | None] = ()) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "n/a"
    text = _span([100 * v for v in known], "{:.0f}") + "%"
    text = f"{text} CPU-bound" if max(known) >= CPU_BOUND else text
    taken = [v for v in stolen if v is not None]
    if taken and max(taken) >= STOLEN:
        text += f", {_span([100 * v for v in taken], '{:.0f}')}% stolen"
    return text


def _span(values: Sequence[float | None], form: str) -> str:
    """The values' range as `low-high` (one value when they agree), n/a when none is known."""
    known = [v for v in values if v is not None]
    if not known:
        return "n/a"
    low, high = form.format(min(known)), form.format(max(known))
    return low if low == high else f"{low}-{high}"


def _mib(value: int | None) -> float | None:
    return None if value is None else value / MiB


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def escape(text: str) -> str:
    """Text fit for one Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")[:160]
