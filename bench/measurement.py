"""What one run of a scenario measures, over a window that opens when its pulls are about to
start and closes when they are done. Every figure is a difference of counters read at both
ends, so nothing before the window (agents starting, a warm-up pull) is counted.

- Upstream egress: the upstream host's interface counter (`tx_bytes` of its eth0, read inside
  its namespace): what the kernel sent, headers included, whatever sent it.
- Peer bytes: what the agents report having downloaded from peers
  (`distributed_images_peer_bytes_total{direction="download"}`, summed over the agents), next to
  the node hosts' own interface counters (`node_tx_bytes`) as a cross-check.
- How busy the machine's CPUs were (from /proc/stat), how much of that the hypervisor took for
  other guests (steal), and the agents' CPU time: a run on a shared or CPU-bound machine says
  so in its results.
- What the agents cost: their CPU seconds per GiB they delivered to clients (every source
  counted: cache, peer, upstream, seed), and the largest peak RSS (VmHWM) among them when the
  window closes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.client import Pulls
from bench.cluster import Agent, Cluster

PEER_DOWNLOAD = 'distributed_images_peer_bytes_total{direction="download"}'
PEER_REDUNDANT = "distributed_images_peer_redundant_bytes_total"
UPSTREAM_BYTES = "distributed_images_upstream_bytes_total"
FALLBACKS = "distributed_images_fallbacks_total{reason="
BLOB_BYTES = "distributed_images_blob_bytes_total{source="
GiB = 1 << 30


@dataclass
class Measurement:
    """One run of one scenario."""

    pull_seconds: list[float]
    failures: list[str]
    upstream_egress_bytes: int
    peer_bytes: int | None
    node_tx_bytes: int
    details: dict[str, object] = field(default_factory=dict)
    bound_seconds: float | None = None  # the scenario's own bound, when it is not the run's LB
    bound: str = "LB"  # what the bound is: LB (a cold pull), S/B (the cluster holds the image)


@dataclass(frozen=True)
class Counters:
    """Interface byte counters, CPU time and the agents' own metrics, at one instant."""

    upstream: int
    nodes: int  # all node hosts together
    proxy: int
    cpu_busy: int  # clock ticks, all CPUs
    cpu_total: int
    cpu_stolen: int  # of cpu_busy, the hypervisor's
    agents: dict[str, dict[str, float]]  # host name -> metric samples, with "cpu_seconds"

    @classmethod
    def read(cls, cluster: Cluster, agents: Sequence[Agent]) -> Counters:
        nodes = sum(h.tx_bytes() for h in cluster.nodes)
        busy, total, stolen = cpu_times()
        samples = {}
        for agent in agents:
            try:
                metrics = agent.metrics()
            except OSError:  # a crashed agent: its pull has failed already, and says so
                continue
            samples[agent.host.name] = metrics | {"cpu_seconds": agent.daemon.cpu_seconds()}
        upstream, proxy = cluster.upstream.tx_bytes(), cluster.proxy_host.tx_bytes()
        return cls(upstream, nodes, proxy, busy, total, stolen, samples)


class Window:
    """The measured part of a run: counters read when it opens, deltas when it closes."""

    def __init__(
        self, cluster: Cluster, agents: Sequence[Agent] = (), *, proxy: bool = False
    ) -> None:
        self.cluster = cluster
        self.agents = list(agents)
        self.proxy = proxy
        self.start = Counters.read(cluster, self.agents)

    def close(self, pulls: Pulls, **details: object) -> Measurement:
        """The run's figures; agents that are gone by now (churn) are left out of them."""
        alive = [a for a in self.agents if a.daemon.running]
        end = Counters.read(self.cluster, alive)
        start = self.start
        details.update(pulls.upstream)
        if self.proxy:
            details["proxy_tx_bytes"] = end.proxy - start.proxy
        peer_bytes: int | None = 0
        if self.agents:
            peer_bytes = _agent_figures(start.agents, end.agents, details)
            peaks = [p for p in (a.daemon.peak_rss_bytes() for a in alive) if p is not None]
            details["agents_peak_rss_bytes"] = max(peaks, default=None)
        # The machine may be shared: how busy its CPUs were says how far times can be trusted.
        ticks = end.cpu_total - start.cpu_total
        details["machine_cpu_busy"] = round((end.cpu_busy - start.cpu_busy) / max(ticks, 1), 3)
        details["machine_cpu_stolen"] = round(
            (end.cpu_stolen - start.cpu_stolen) / max(ticks, 1), 3
        )
        details["load_average_1m"] = round(os.getloadavg()[0], 2)
        upstream, nodes = end.upstream - start.upstream, end.nodes - start.nodes
        return Measurement(pulls.seconds, pulls.failures, upstream, peer_bytes, nodes, details)


def _agent_figures(
    start: dict[str, dict[str, float]],
    end: dict[str, dict[str, float]],
    details: dict[str, object],
) -> int | None:
    """Sum each agent's counters over the window into `details`; return the peer bytes (None
    when the agents do not report them)."""
    common = [name for name in end if name in start]
    totals: dict[str, float] = {}
    for name in common:
        for key, value in end[name].items():
            totals[key] = totals.get(key, 0.0) + value - start[name].get(key, 0.0)
    by_source = {
        key.removeprefix(BLOB_BYTES).strip('"}'): int(value)
        for key, value in totals.items()
        if key.startswith(BLOB_BYTES)
    }
    cpu_seconds = totals.get("cpu_seconds", 0.0)
    delivered = sum(by_source.values())
    details["agents_cpu_seconds"] = round(cpu_seconds, 2)
    details["agents_cpu_seconds_per_gib"] = (
        round(cpu_seconds / (delivered / GiB), 2) if delivered else None
    )
    details["agent_upstream_bytes"] = int(totals.get(UPSTREAM_BYTES, 0.0))
    details["peer_redundant_bytes"] = int(totals.get(PEER_REDUNDANT, 0.0))
    details["agent_blob_bytes_by_source"] = by_source
    details["agent_fallbacks"] = {
        key.removeprefix(FALLBACKS).strip('"}'): int(value)
        for key, value in totals.items()
        if key.startswith(FALLBACKS) and value
    }
    silent = sorted(set(start) - set(end))
    if silent:
        details["agents_left_out"] = silent
    return int(totals[PEER_DOWNLOAD]) if PEER_DOWNLOAD in totals else None


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    busy, total, _ = cpu_times()
    return busy, total


def cpu_times() -> tuple[int, int, int]:
    """(busy, total, stolen) clock ticks of all CPUs since boot, from /proc/stat. Stolen ticks
    are the hypervisor's: the CPUs ran another guest's work (busy for us, but not ours)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle and iowait
    steal = values[7] if len(values) > 7 else 0
    total = sum(values[:8])  # guest time is counted in user time already
    return total - idle, total, steal
