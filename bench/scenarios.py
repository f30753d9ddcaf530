"""The scenarios: how the same image reaches every node, one way each, each started cold.

    direct     every node pulls from the upstream registry
    proxy      every node pulls through one pull-through cache (docker-registry in proxy mode)
    p2p-cold   every node pulls through its distributed-images agent; nothing cached anywhere
    p2p-cold-slow  as p2p-cold, behind a slow link to the upstream (`--slow-upstream-mbit`),
               judged against its own LB: chunks wait long for their turn upstream
    p2p-warm   as p2p-cold, but one node pulled the image first; the others are measured,
               against S/B: the upstream is idle, each node's own link is the limit
    preheat    `distributed-images preheat --wait` places the image (its time, against LB, is
               reported apart), then every node pulls, against S/B
    churn      as p2p-cold, and a quarter of the nodes are killed (agent and client) mid-pull;
               the survivors are measured
    p2p-cold-failover  as p2p-cold with two tracker replicas sharing a Redis (on hosts of their
               own), the nodes split between them; the first is SIGKILLed once the upstream
               has sent a third of the image: no pull may fail, nor any byte come twice;
               each node that knew it first reports how long it took to move to the other
               (`bench.reattach`)

What is measured, and how, is `bench.measurement`'s.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.client import Pull, Pulls
from bench.cluster import CLI, Agent, Cluster, slug
from bench.egress import Egress
from bench.image import Image
from bench.measurement import Measurement, Window
from bench.netns import Host
from bench.progress import Progress
from bench.reattach import HEARTBEAT_INTERVAL, reattach_times
from distributed_images.cli import COMMANDS

MiB = 1 << 20
STATUS_INTERVAL = 0.5  # seconds between redraws of the live status line
CHURN_AT_LB = 0.5  # churn kills nodes when this fraction of the bound has elapsed
# The last line of `preheat --wait`: "preheat <task>: 7 done, 1 failed".
PREHEAT_SUMMARY = re.compile(r": (?P<done>\d+) done, (?P<failed>\d+) failed$")


class Skip(Exception):
    """The scenario cannot run in this build; the message says why."""


class ScenarioError(RuntimeError):
    """The system under test failed in a way that leaves nothing to measure."""


@dataclass
class Bench:
    """What every scenario works with."""

    cluster: Cluster
    image: Image
    progress: Progress
    lb_seconds: float
    pull_timeout: float  # 0: scaled to each scenario's own bound
    slow_upstream_mbit: float

    def timeout(self, bound: float) -> float:
        """Seconds before a pull counts as failed: --pull-timeout, or a minute plus twice the
        scenario's own bound, so a hung pull shows as a failure in minutes, not in N x LB."""
        return self.pull_timeout or 60 + 2 * bound

    def bound(self, upstream_copies: int = 1, upstream_mbit: float = 0.0) -> float:
        """The time no way of pulling can beat: the upstream sends `upstream_copies` of the
        image (at `upstream_mbit`, the profile's U unless given), and each node receives one.
        With no copy from upstream (the cluster holds the image) it is S/B."""
        links, size = self.cluster.links, self.image.blob_bytes
        upstream = (upstream_mbit or links.upstream_mbit) * 1e6 / 8
        return max(upstream_copies * size / upstream, size / (links.node_mbit * 1e6 / 8))


def pull_all(
    bench: Bench,
    label: str,
    hosts: Sequence[Host],
    registry: Callable[[Host], str],
    out: Path,
    bound: float,
    during: Callable[[float, Pulls], None] | None = None,
) -> Pulls:
    """Start one pull per host at once, wait for all, show each as it ends, check the copies.
    A pull not done `bench.timeout(bound)` seconds after the start has failed."""
    pulls = Pulls(hosts, lambda h: Cluster.reference(registry(h)), out)
    progress, lb = bench.progress, bench.lb_seconds
    upstream = Egress(bench.cluster.upstream_sent)
    shown = [0.0]

    def tick(elapsed: float) -> None:
        sent = upstream.sample(elapsed)
        if during is not None:
            during(elapsed, pulls)
        if progress.live and elapsed - shown[0] >= STATUS_INTERVAL:
            shown[0] = elapsed
            done = sum(p.done for p in pulls.pulls)
            progress.status(
                f"{label}: {done}/{len(pulls.pulls)} pulls done, {elapsed:.1f} s "
                f"({elapsed / lb:.2f} LB), upstream sent {sent / MiB:.0f} MiB"
            )

    def on_done(pull: Pull) -> None:
        seconds = pull.seconds
        if seconds is not None:
            progress.line(f"{label}: {pull.host.name} {seconds:.2f} s ({seconds / lb:.2f} LB)")
        elif pull.killed:
            progress.line(f"{label}: {pull.host.name} killed (churn)")
        else:
            progress.line(f"{label}: {pull.host.name} FAILED: {pull.error}")

    pulls.start(bench.cluster.env)
    pulls.wait(bench.timeout(bound), tick, on_done)
    pulls.upstream = upstream.figures(bench.image.blob_bytes)
    pulls.verify(bench.image)
    return pulls


# The baselines.


def direct(bench: Bench, run: str) -> Measurement:
    cluster = bench.cluster
    window = Window(cluster)
    out = _out(bench, run)
    bound = bench.bound(upstream_copies=len(cluster.nodes))
    pulls = pull_all(bench, run, cluster.nodes, lambda h: cluster.upstream_registry, out, bound)
    return window.close(pulls)


def proxy(bench: Bench, run: str) -> Measurement:
    cluster = bench.cluster
    with cluster.proxy(run):
        window = Window(cluster, proxy=True)
        out = _out(bench, run)
        # The cache gets the image once, then sends every node a copy over its own link.
        nodes = len(cluster.nodes)
        bound = bench.bound() + nodes * bench.image.blob_bytes / (cluster.links.node_mbit * 1e6 / 8)
        pulls = pull_all(bench, run, cluster.nodes, lambda h: cluster.proxy_registry, out, bound)
        return window.close(pulls)


# Through distributed-images.


@contextmanager
def p2p(bench: Bench, run: str) -> Iterator[list[Agent]]:
    """A fresh tracker and a fresh agent on every node host."""
    for command in ("node", "tracker"):
        reason = missing_command(command)
        if reason:
            raise Skip(reason)
    with bench.cluster.tracker(run), bench.cluster.agents(run, bench.cluster.nodes) as agents:
        yield agents


def p2p_cold(bench: Bench, run: str) -> Measurement:
    with p2p(bench, run) as agents:
        window = Window(bench.cluster, agents)
        return window.close(_pull_through(bench, run, agents))


def p2p_cold_slow(bench: Bench, run: str) -> Measurement:
    mbit = bench.slow_upstream_mbit
    bound = bench.bound(upstream_mbit=mbit)
    with bench.cluster.upstream_at(mbit), p2p(bench, run) as agents:
        window = Window(bench.cluster, agents)
        measured = window.close(_pull_through(bench, run, agents, bound=bound), upstream_mbit=mbit)
    measured.bound_seconds = bound
    return measured


def p2p_warm(bench: Bench, run: str) -> Measurement:
    with p2p(bench, run) as agents:
        first = _pull_through(bench, f"{run} warm-up", agents[:1])
        if first.failures:
            raise ScenarioError(f"warming node0 failed: {first.failures[0]}")
        window = Window(bench.cluster, agents)
        pulls = _pull_through(bench, run, agents[1:])
        return _held(bench, window.close(pulls, warm_node="node0"))


def preheat(bench: Bench, run: str) -> Measurement:
    reason = missing_command("preheat")
    if reason:
        raise Skip(reason)
    cluster = bench.cluster
    with p2p(bench, run) as agents:
        window = Window(cluster, agents)
        bench.progress.line(f"{run}: preheat {cluster.image_name}")
        seconds, failed = _preheat(bench)
        ratio = seconds / bench.lb_seconds
        failures = f", {failed} nodes failed" if failed else ""
        bench.progress.line(f"{run}: preheat took {seconds:.2f} s ({ratio:.2f} LB){failures}")
        pulls = _pull_through(bench, run, agents)
        measured = window.close(
            pulls,
            preheat_seconds=round(seconds, 3),
            preheat_lb=round(ratio, 3),
            preheat_failed_nodes=failed,
        )
        return _held(bench, measured)


def churn(bench: Bench, run: str) -> Measurement:
    nodes = len(bench.cluster.nodes)
    if nodes < 2:
        raise Skip("churn needs at least 2 nodes")
    victims = max(1, nodes // 4)
    kill_at = CHURN_AT_LB * bench.lb_seconds
    with p2p(bench, run) as agents:
        doomed = agents[-victims:]

        def during(elapsed: float, pulls: Pulls) -> None:
            if elapsed < kill_at or not any(a.daemon.running for a in doomed):
                return
            for agent, pull in zip(agents, pulls.pulls, strict=True):
                if agent in doomed:
                    pull.kill()
                    agent.daemon.kill()
            bench.progress.line(f"{run}: killed {', '.join(a.host.name for a in doomed)}")

        window = Window(bench.cluster, agents)
        pulls = _pull_through(bench, run, agents, during)
        killed = [a.host.name for a in doomed]
        return window.close(pulls, killed_nodes=killed, kill_after_seconds=round(kill_at, 3))


def p2p_cold_failover(bench: Bench, run: str) -> Measurement:
    for command in ("node", "tracker"):
        reason = missing_command(command)
        if reason:
            raise Skip(reason)
    if not shutil.which("redis-server"):
        raise Skip("redis-server is not installed (Debian's redis-server)")
    cluster = bench.cluster
    third = bench.image.blob_bytes / 3
    with (
        cluster.replicated_tracker(run) as replicas,
        cluster.agents(run, cluster.nodes) as agents,
    ):
        victim = replicas[0]
        movers = agents[0::2]  # those that knew the victim first (`Cluster.replicated_tracker`)
        start = cluster.upstream.tx_bytes()
        killed_at: list[tuple[float, float]] = []  # (seconds into the pulls, epoch seconds)

        def during(elapsed: float, pulls: Pulls) -> None:
            if killed_at or cluster.upstream.tx_bytes() - start < third:
                return
            victim.kill()
            killed_at.append((elapsed, time.time()))
            bench.progress.line(f"{run}: killed tracker replica {victim.host.name}")

        window = Window(cluster, agents)
        pulls = _pull_through(bench, run, agents, during)
        measured = window.close(
            pulls,
            killed_tracker=victim.host.name,
            kill_after_seconds=round(killed_at[0][0], 3) if killed_at else None,
        )
        if killed_at:
            wait = 3 * HEARTBEAT_INTERVAL
            measured.details |= reattach_times(agents, movers, killed_at[0][1], wait)
        return measured


SCENARIOS: dict[str, Callable[[Bench, str], Measurement]] = {
    "direct": direct,
    "proxy": proxy,
    "p2p-cold": p2p_cold,
    "p2p-cold-slow": p2p_cold_slow,
    "p2p-warm": p2p_warm,
    "preheat": preheat,
    "churn": churn,
    "p2p-cold-failover": p2p_cold_failover,
}


def _held(bench: Bench, measured: Measurement) -> Measurement:
    """Judge a run whose image the cluster already held against S/B, not LB."""
    measured.bound_seconds = bench.bound(upstream_copies=0)
    measured.bound = "S/B"
    return measured


def _pull_through(
    bench: Bench,
    label: str,
    agents: Sequence[Agent],
    during: Callable[[float, Pulls], None] | None = None,
    bound: float = 0.0,
) -> Pulls:
    """Pull on every agent's host through it; `bound` is the run's LB unless given."""
    by_host = {a.host.name: a.registry for a in agents}
    hosts = [a.host for a in agents]
    out = _out(bench, label)
    bound = bound or bench.lb_seconds
    return pull_all(bench, label, hosts, lambda h: by_host[h.name], out, bound, during)


def _preheat(bench: Bench) -> tuple[float, int]:
    """Run `distributed-images preheat --wait` from the tracker's host: how long it took, and
    on how many nodes it failed (their pulls are then partly cold, and measured as such).

    A preheat that fails as a whole ends the scenario: pulls after it would be cold pulls under
    another name."""
    cluster = bench.cluster
    argv = [*CLI, "preheat", *cluster.operator_args(), cluster.image_name, "--wait"]
    started = time.monotonic()
    result = subprocess.run(
        cluster.tracker_host.exec_argv(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=cluster.env,
        timeout=bench.timeout(bench.lb_seconds),
    )
    seconds = time.monotonic() - started
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()] or ["-"]
    done = PREHEAT_SUMMARY.search(lines[-1])
    if result.returncode == 0 or (result.returncode == 1 and done and int(done["done"])):
        return seconds, int(done["failed"]) if done else 0
    first = next((line for line in lines[:-1] if "fail" in line.lower()), None)
    detail = f"{lines[-1]} (first: {first})" if first else lines[-1]
    raise ScenarioError(f"preheat exited with {result.returncode}: {detail[:600]}")


def missing_command(command: str) -> str | None:
    """Why `distributed-images <command>` cannot run in this build, or None."""
    module = COMMANDS[command][0]
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    return None if found else f"`distributed-images {command}` is not in this build ({module})"


def _out(bench: Bench, label: str) -> Path:
    return bench.cluster.workdir / "pulls" / slug(label)
