"""Single-node pull benchmark: one large blob pulled directly from a registry, cold through a
node, and warm from the node's cache, side by side, from two upstreams:

    loopback  the registry, the node and the client on one host's 127.0.0.1: nothing but the
              node's own cost per byte separates a cold pull from a direct one
    link      the registry on a host of its own behind a link shaped to --upstream-mbit (2500,
              a datacenter registry), the node and its client on another host: a node must
              keep up with such a link

Then the node's peak memory while it serves --concurrency warm pulls at once (on loopback).

    python -m bench.node_pull [--size 512MiB] [--repeat 3] [--upstreams loopback,link]
                              [--upstream-mbit 2500] [--concurrency 20] [--out DIR]
                              [--profile DIR]

Every pull is `curl -o /dev/null` inside the client's host, so the client is the same for all.
Each repeat pulls direct, then cold through a fresh node, then warm, so drift on a shared
machine hits all three alike. Figures are throughputs and ratios to the direct pull of the same
repeat, given as ranges over the repeats, with how busy the machine's CPUs were during each pull
and the node's CPU seconds per GiB of its cold pull. `--profile DIR` records the node with
py-spy (`pip install py-spy`) during each cold pull, as speedscope files. Needs root: each
upstream lives in network namespaces (`bench.netns`), removed when the run ends.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.cli import signals_ignored, signals_interrupt
from bench.cluster import CLI, registry_daemon
from bench.daemon import Daemon, child_environment
from bench.measurement import cpu_ticks
from bench.netns import Host, Network, remove_stale
from distributed_images.settings import parse_size

REPO = "bench/blob"
REGISTRY_PORT = 5000
NODE = "127.0.0.1:8080"
PEER = "127.0.0.1:6881"
UPSTREAMS = ("loopback", "link")
START_TIMEOUT = 60.0
MiB = 1 << 20
GiB = 1 << 30
TARGETS = {"loopback": 0.5, "link": 0.95}  # cold through the node / direct, at least (issue 17)
MAX_RSS_MIB = 200  # while serving the concurrent warm pulls


@dataclass(frozen=True)
class Pull:
    seconds: float
    size: int
    cpu_busy: float  # share of the machine's CPU time busy while it ran
    node_cpu_seconds: float | None = None  # what the node spent on it, when through a node

    @property
    def mib_per_s(self) -> float:
        return self.size / self.seconds / MiB


@dataclass(frozen=True)
class Upstream:
    """Where one upstream's registry runs, and the host of the node and its client."""

    name: str
    registry_host: Host
    registry: str  # host:port, as the node and the client reach it
    client_host: Host


class Run:
    """One benchmark run: its network, its daemons, its scratch space."""

    def __init__(self, workdir: Path, upstream_mbit: float) -> None:
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.env = child_environment()
        self.network = Network.create()
        self.upstream_mbit = upstream_mbit
        self.daemons: list[Daemon] = []
        self.auth_file = workdir / "no-auth.json"
        self.auth_file.write_text(json.dumps({"auths": {}}))

    def upstream(self, name: str) -> Upstream:
        """The hosts of an upstream, its registry started."""
        if name == "loopback":
            host = self.network.add_host("local", None)
            upstream = Upstream(name, host, f"127.0.0.1:{REGISTRY_PORT}", host)
        else:
            registry = self.network.add_host("upstream", self.upstream_mbit)
            client = self.network.add_host("node", None)
            upstream = Upstream(name, registry, f"{registry.ip}:{REGISTRY_PORT}", client)
        data = self.workdir / f"{name}-registry"
        daemon = registry_daemon(
            f"{name}-registry", upstream.registry_host, upstream.registry, data, self.workdir,
            self.logs, self.env,
        )  # fmt: skip
        self.start(daemon, f"http://{upstream.registry}/v2/")
        return upstream

    def start(self, daemon: Daemon, ready_url: str) -> None:
        self.daemons.append(daemon)
        daemon.start()
        daemon.wait_http(ready_url, START_TIMEOUT)

    @contextmanager
    def node(self, upstream: Upstream, name: str) -> Iterator[Daemon]:
        """A node with an empty data directory, in the client's host, mirroring the upstream."""
        data = self.workdir / name
        argv = [
            *CLI, "node",
            "--listen", NODE,
            "--data-dir", str(data),
            "--registry", f"{upstream.registry}=http://{upstream.registry}",
            "--default-registry", upstream.registry,
            "--peer-listen", PEER,
            "--auth-file", str(self.auth_file),
            "--log-level", "warning",
        ]  # fmt: skip
        daemon = Daemon(name, upstream.client_host, argv, self.logs, self.env)
        try:
            self.start(daemon, f"http://{NODE}/readyz")
            yield daemon
        finally:
            daemon.stop()
            self.daemons.remove(daemon)
            shutil.rmtree(data, ignore_errors=True)

    def close(self) -> None:
        for daemon in reversed(self.daemons):
            daemon.stop(timeout=5.0)
        self.network.destroy()


def make_blob(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, 8 << 20))
            digest.update(block)
            f.write(block)
            remaining -= len(block)
    return "sha256:" + digest.hexdigest()


def push_blob(registry: str, path: Path, digest: str) -> None:
    """A monolithic upload: POST for a session, then one PUT of the whole blob."""
    connection = http.client.HTTPConnection(registry)
    connection.request("POST", f"/v2/{REPO}/blobs/uploads/")
    response = connection.getresponse()
    response.read()
    location = urlsplit(response.headers["Location"])
    separator = "&" if location.query else ""
    target = f"{location.path}?{location.query}{separator}digest={digest}"
    with path.open("rb") as body:
        headers = {"Content-Length": str(path.stat().st_size)}
        connection.request("PUT", target, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
    if response.status != 201:
        raise RuntimeError(f"blob upload to {registry} failed: {response.status}")


def curl(host: Host, url: str, env: dict[str, str], node: Daemon | None = None) -> Pull:
    """One pull by curl inside `host`, and what the machine (and the node) spent meanwhile."""
    argv = ["curl", "-sf", "--noproxy", "*", "-o", "/dev/null"]
    argv += ["-w", "%{time_total} %{size_download}", url]
    busy, total = cpu_ticks()
    node_cpu = node.cpu_seconds() if node else 0.0
    out = subprocess.run(
        host.exec_argv(argv), check=True, capture_output=True, text=True, env=env, timeout=3600
    ).stdout.split()
    busy_after, total_after = cpu_ticks()
    share = (busy_after - busy) / max(total_after - total, 1)
    spent = node.cpu_seconds() - node_cpu if node else None
    return Pull(float(out[0]), int(out[1]), round(share, 3), spent)


@contextmanager
def profiled(node: Daemon, path: Path | None) -> Iterator[None]:
    """py-spy recording the node (all threads, native frames too) while the block runs."""
    if path is None:
        yield
        return
    argv = ["py-spy", "record", "--pid", str(node.pid), "--rate", "200", "--threads"]
    argv += ["--native", "--format", "speedscope", "--output", str(path)]
    recorder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached before the pull starts
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        recorder.wait(timeout=60)


def concurrent_warm(
    host: Host, node: Daemon, url: str, concurrency: int, env: dict[str, str]
) -> int:
    """The node's peak RSS while it serves `concurrency` warm pulls at once."""
    # Reset the peak so it measures serving, not the cold pull before it.
    Path(f"/proc/{node.pid}/clear_refs").write_text("5")
    command = host.exec_argv(["curl", "-sf", "--noproxy", "*", "-o", "/dev/null", url])
    pulls = [subprocess.Popen(command, env=env) for _ in range(concurrency)]
    if any(p.wait() != 0 for p in pulls):
        raise RuntimeError("a concurrent warm pull failed")
    peak = node.peak_rss_bytes()
    if peak is None:
        raise RuntimeError("the node exited while serving")
    return peak


@dataclass
class Pulls:
    """One upstream's pulls, a list per kind, one entry per repeat."""

    direct: list[Pull]
    cold: list[Pull]
    warm: list[Pull]


def measure(
    run: Run, upstream: Upstream, args: argparse.Namespace, blob: Path, digest: str
) -> tuple[Pulls, int | None]:
    upstream.registry_host.call(lambda: push_blob(upstream.registry, blob, digest))
    path = f"/v2/{REPO}/blobs/{digest}"
    host, env = upstream.client_host, run.env
    pulls = Pulls([], [], [])
    rss = None
    for i in range(args.repeat):
        pulls.direct.append(curl(host, f"http://{upstream.registry}{path}", env))
        with run.node(upstream, f"{upstream.name}-node{i}") as node:
            profile = args.profile / f"{upstream.name}-cold-{i}.json" if args.profile else None
            with profiled(node, profile):
                pulls.cold.append(curl(host, f"http://{NODE}{path}", env, node))
            pulls.warm.append(curl(host, f"http://{NODE}{path}", env, node))
            if upstream.name == "loopback" and i == args.repeat - 1:
                rss = concurrent_warm(host, node, f"http://{NODE}{path}", args.concurrency, env)
        print(
            f"{upstream.name} #{i + 1}: direct {pulls.direct[-1].mib_per_s:.0f} MiB/s, "
            f"cold {pulls.cold[-1].mib_per_s:.0f}, warm {pulls.warm[-1].mib_per_s:.0f}",
            file=sys.stderr,
        )
    return pulls, rss


def summary(pulls: Pulls) -> dict[str, Any]:
    """One upstream's figures, each a list over the repeats."""
    return {
        "direct_mib_s": _rounded([p.mib_per_s for p in pulls.direct], 1),
        "cold_mib_s": _rounded([p.mib_per_s for p in pulls.cold], 1),
        "warm_mib_s": _rounded([p.mib_per_s for p in pulls.warm], 1),
        "cold_vs_direct": _ratios(pulls.cold, pulls.direct),
        "warm_vs_direct": _ratios(pulls.warm, pulls.direct),
        "node_cpu_seconds_per_gib_cold": _rounded(
            [(p.node_cpu_seconds or 0.0) / (p.size / GiB) for p in pulls.cold], 2
        ),
        "machine_cpu_busy": {
            "direct": [p.cpu_busy for p in pulls.direct],
            "cold": [p.cpu_busy for p in pulls.cold],
            "warm": [p.cpu_busy for p in pulls.warm],
        },
    }


def report(
    params: dict[str, Any], by_upstream: dict[str, Pulls], rss: int | None
) -> dict[str, Any]:
    upstreams = {name: summary(pulls) for name, pulls in by_upstream.items()}
    targets = []
    for name, figures in upstreams.items():
        median = statistics.median(figures["cold_vs_direct"])
        limit = TARGETS[name]
        targets.append(_target(f"{name}: cold / direct, median", median, limit, at_least=True))
    if rss is not None:
        targets.append(_target("peak RSS serving warm pulls, MiB", rss / MiB, MAX_RSS_MIB))
    peak = None if rss is None else round(rss / MiB, 1)
    return {"params": params, "upstreams": upstreams, "node_peak_rss_mib": peak, "targets": targets}


def _target(name: str, value: float, limit: float, at_least: bool = False) -> dict[str, Any]:
    met = value >= limit if at_least else value < limit
    goal = f">= {limit:g}" if at_least else f"< {limit:g}"
    return {"target": name, "value": round(value, 3), "limit": goal, "met": met}


def markdown(document: dict[str, Any]) -> str:
    lines = [
        "| upstream | direct MiB/s | cold MiB/s | warm MiB/s | cold / direct | warm / direct "
        "| node CPU s/GiB, cold | CPU busy: direct, cold, warm |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    upstreams: dict[str, dict[str, Any]] = document["upstreams"]
    for name, figures in upstreams.items():
        busy: dict[str, list[float]] = figures["machine_cpu_busy"]
        cells = [name]
        for key, form in (
            ("direct_mib_s", "{:.0f}"), ("cold_mib_s", "{:.0f}"), ("warm_mib_s", "{:.0f}"),
            ("cold_vs_direct", "{:.2f}"), ("warm_vs_direct", "{:.2f}"),
            ("node_cpu_seconds_per_gib_cold", "{:.2f}"),
        ):  # fmt: skip
            cells.append(_span(figures[key], form))
        cells.append(", ".join(_span([100 * v for v in busy[k]], "{:.0f}%") for k in busy))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| target | measured | goal | met |", "|---|---:|---:|---|"]
    for target in document["targets"]:
        met = "yes" if target["met"] else "**no**"
        lines.append(f"| {target['target']} | {target['value']} | {target['limit']} | {met} |")
    return "\n".join(lines) + "\n"


def _span(values: Sequence[float], form: str) -> str:
    """`low-high (median)` over the repeats."""
    low, high = form.format(min(values)), form.format(max(values))
    middle = form.format(statistics.median(values))
    return middle if low == high else f"{low}-{high} ({middle})"


def _ratios(pulls: list[Pull], direct: list[Pull]) -> list[float]:
    """Each repeat's throughput over the direct pull's of the same repeat."""
    return [round(p.mib_per_s / d.mib_per_s, 3) for p, d in zip(pulls, direct, strict=True)]


def _rounded(values: Sequence[float], digits: int) -> list[float]:
    return [round(v, digits) for v in values]


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    blob = workdir / "blob"
    digest = make_blob(blob, args.size)
    params = {
        "blob_bytes": args.size, "repeat": args.repeat, "upstream_mbit": args.upstream_mbit,
        "concurrent_warm_pulls": args.concurrency, "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }  # fmt: skip
    by_upstream: dict[str, Pulls] = {}
    rss = None
    session = Run(workdir, args.upstream_mbit)
    try:
        for name in args.upstreams:
            upstream = session.upstream(name)
            by_upstream[name], peak = measure(session, upstream, args, blob, digest)
            rss = peak if peak is not None else rss
    finally:
        with signals_ignored():
            session.close()
    params["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    return report(params, by_upstream, rss)


def _upstreams(text: str) -> list[str]:
    names = [n for n in text.replace(",", " ").split() if n]
    unknown = [n for n in names if n not in UPSTREAMS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"upstreams are {', '.join(UPSTREAMS)}")
    return list(dict.fromkeys(names))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=512 << 20, help="blob size (512MiB)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each pull (3)")
    parser.add_argument("--upstreams", type=_upstreams, default=list(UPSTREAMS),
                        help="loopback, link or both (loopback,link)")  # fmt: skip
    parser.add_argument("--upstream-mbit", type=float, default=2500.0,
                        help="the link upstream's rate, Mbit/s (2500)")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=20, help="concurrent warm pulls (20)")
    parser.add_argument("--out", type=Path, help="write node_pull.json and node_pull.md here")
    parser.add_argument("--profile", type=Path, help="py-spy recordings of the cold pulls here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench.node_pull needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    missing = [t for t in ("ip", "tc", "curl", "docker-registry") if shutil.which(t) is None]
    if args.profile:
        missing += [] if shutil.which("py-spy") else ["py-spy (pip install py-spy)"]
        args.profile.mkdir(parents=True, exist_ok=True)
    if missing:
        print(f"bench.node_pull: missing {', '.join(missing)}", file=sys.stderr)
        return 2
    remove_stale()
    with tempfile.TemporaryDirectory(prefix="bench-node-") as tmp, signals_interrupt():
        document = run(args, Path(tmp))
    text = markdown(document)
    print(json.dumps(document, indent=2))
    print(text, end="")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "node_pull.json").write_text(json.dumps(document, indent=2) + "\n")
        (args.out / "node_pull.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
