"""`distributed-images bench`: the cluster benchmark (issue 6, DESIGN sections 6 and 9).

One run builds a cluster in network namespaces (N node hosts at B Mbit/s, an upstream registry
at U, a tracker and a pull-through cache), pushes a synthetic image of S bytes to the upstream,
and runs the scenarios side by side, interleaved across repeats, so that drift on a shared
machine hits them all alike. It writes `results.json`, `results.md` and, when matplotlib (the
`bench` extra) is installed, `results.png` under `--out` (and the daemons' logs under
`--out/logs`). Needs root.

With several node counts (`--nodes 4,8,12,16`) it runs a sweep: one network with the largest N,
the image pushed once, the scenarios run on the first N node hosts for each N in turn; each N's
results go under `--out/nodes-<N>/`, and `sweep.json`, `sweep.md` and `sweep.png` beside them
show p50 and p99 against N for each scenario (`bench.sweep`).

Everything it starts is stopped and every namespace removed when it ends: normally, on an error,
on Ctrl-C and on SIGTERM. Namespaces left by a harness that was SIGKILLed are removed by the
next run.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import platform
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from bench import image, results, sweep
from bench.cluster import Cluster, Links
from bench.measurement import Measurement
from bench.netns import Network, remove_stale
from bench.progress import Progress
from bench.scenarios import SCENARIOS, Bench, ScenarioError, Skip
from bench.security import IDENTITY, parse_mode
from distributed_images.logs import level_field
from distributed_images.settings import parse_size

HELP = "benchmark a cluster in network namespaces: direct, pull-through cache and peer-to-peer"
TOOLS = ("ip", "tc", "skopeo", "docker-registry")
NO_CHART = "matplotlib, which draws it, is not installed: pip install 'distributed-images[bench]'"
MiB = 1 << 20
MAX_NODES = 200

log = logging.getLogger("bench")


def _node_count(text: str) -> int:
    count = int(text)
    if not 1 <= count <= MAX_NODES:
        raise ValueError(f"a node count is between 1 and {MAX_NODES} (one /24 holds the run)")
    return count


def _switch(text: str) -> str:
    value = text.strip().lower()
    if value not in ("on", "off"):
        raise ValueError(f"expected on or off, got {text!r}")
    return value


def _scenario_names(text: str) -> str:
    if text not in SCENARIOS:
        raise ValueError(f"unknown scenario {text!r} (known: {', '.join(SCENARIOS)})")
    return text


@dataclass
class Config:
    nodes: list[int] = field(
        default_factory=lambda: [8],
        metadata={
            "help": "node hosts (8); several, comma-separated, run a sweep over N",
            "metavar": "N,...",
            "parse": _node_count,
        },
    )
    image_size: int = field(
        default=256 * MiB,
        metadata={
            "min": 1,
            "help": "image size S (256MiB)",
            "parse": parse_size,
            "metavar": "SIZE",
        },
    )
    layers: int = field(
        default=3, metadata={"min": 1, "help": "layers of the image (3)", "metavar": "N"}
    )
    node_mbit: float = field(
        default=400.0,
        metadata={"above": 0, "help": "each node's link B, Mbit/s (400)", "metavar": "MBIT"},
    )
    upstream_mbit: float = field(
        default=200.0,
        metadata={"above": 0, "help": "the upstream's link U, Mbit/s (200)", "metavar": "MBIT"},
    )
    scenarios: list[str] = field(
        default_factory=lambda: list(SCENARIOS),
        metadata={
            "help": f"scenarios to run, comma-separated ({','.join(SCENARIOS)})",
            "metavar": "NAME,...",
            "parse": _scenario_names,
        },
    )
    repeat: int = field(
        default=1, metadata={"min": 1, "help": "runs of each scenario (1)", "metavar": "N"}
    )
    out: Path = field(
        default=Path("bench-results"),
        metadata={"help": "results directory (./bench-results)", "metavar": "DIR"},
    )
    workdir: Path | None = field(
        default=None,
        metadata={
            "help": "scratch space for registries, nodes and pulls (system temp)",
            "metavar": "DIR",
        },
    )
    mtu: int = field(
        default=1500, metadata={"min": 68, "help": "MTU of every link (1500)", "metavar": "BYTES"}
    )
    pull_timeout: float = field(
        default=0.0,
        metadata={
            "help": "seconds before a pull counts as failed (0: 60 + twice the scenario's own"
            " bound: LB, N S/U for direct pulls)",
            "metavar": "S",
        },
    )
    slow_upstream_mbit: float = field(
        default=0.0,
        metadata={
            "help": "the upstream's link during p2p-cold-slow, Mbit/s (0: U/8)",
            "metavar": "MBIT",
        },
    )
    tracker_security: str = field(
        default=IDENTITY,
        metadata={
            "help": "open (no credentials), identity (each node its credential) or tls"
            " (identity, over TLS) (identity)",
            "parse": parse_mode,
            "metavar": "MODE",
        },
    )
    fsync: str = field(
        default="on",
        metadata={
            "help": "the nodes put each blob on disk before it counts as stored (on), or not"
            " (off), to measure what that costs (on)",
            "parse": _switch,
            "metavar": "on|off",
        },
    )
    log_level: str = level_field("info")


def main(config: Config) -> int:
    problem = _check(config)
    if problem:
        log.error(problem)
        return 2
    progress = Progress()
    for netns in remove_stale():
        progress.line(f"removed namespace {netns} left by an earlier run")
    config.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(config.out / "logs", ignore_errors=True)
    if config.workdir is not None:
        config.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="di-bench-", dir=config.workdir))
    with signals_interrupt():
        try:
            documents = _run(config, workdir, progress)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    charts = _charts()
    png = ", results.png" if charts else ""
    if len(documents) == 1:
        (document,) = documents.values()
        _write(document, config.out, charts)
        progress.line(f"wrote {config.out}/results.json, results.md{png}")
        print(results.markdown(document), end="")
    else:
        for nodes, document in documents.items():
            _write(document, config.out / sweep.directory(nodes), charts)
        swept = sweep.document(_sweep_params(config, documents), documents)
        _write_sweep(swept, config.out, charts)
        png = ", sweep.png" if charts else ""
        progress.line(f"wrote {config.out}/sweep.json, sweep.md{png} and nodes-N/")
        print(sweep.markdown(swept), end="")
    if charts is None:
        pictures = "results.png" if len(documents) == 1 else "results.png nor sweep.png"
        progress.line(f"no {pictures}: {NO_CHART}")
    return 0 if all(_clean(d) for d in documents.values()) else 1


def _run(config: Config, workdir: Path, progress: Progress) -> dict[int, dict[str, Any]]:
    """Each node count's results document."""
    links = Links(max(config.nodes), config.node_mbit, config.upstream_mbit, config.mtu)
    network = Network.create()
    progress.line(f"network {network.prefix}-*: {network.subnet}.0/24")
    cluster: Cluster | None = None
    try:
        logs = config.out / "logs"
        cluster = Cluster(
            network, links, workdir, logs, config.tracker_security, fsync=config.fsync == "on"
        )
        return _measure(config, cluster, progress)
    finally:
        with signals_ignored():
            progress.line("tearing down")
            if cluster is not None:
                cluster.close()
            network.destroy()
            left = network.leftovers()
            if left:
                log.error("namespaces left behind", extra={"namespaces": " ".join(left)})


def _measure(config: Config, cluster: Cluster, progress: Progress) -> dict[int, dict[str, Any]]:
    progress.line(f"starting the upstream registry on {cluster.upstream_registry}")
    cluster.start_upstream()
    progress.line(f"building a {config.image_size / MiB:.1f} MiB image in {config.layers} layers")
    built = image.build(cluster.workdir / "layout", config.image_size, config.layers)
    progress.line(f"pushing it to {cluster.image_name}")
    cluster.push(built)
    shutil.rmtree(built.layout)
    size = built.blob_bytes
    lb = results.bound_seconds(size, config.node_mbit, config.upstream_mbit)
    slow = config.slow_upstream_mbit or config.upstream_mbit / 8
    bench = Bench(cluster, built, progress, lb, config.pull_timeout, slow)
    progress.line(f"S = {size / MiB:.1f} MiB, LB = {lb:.2f} s")
    documents = {}
    for nodes in config.nodes:
        cluster.use_nodes(nodes)
        swept = f"N = {nodes}: " if len(config.nodes) > 1 else ""
        documents[nodes] = _scenarios(replace(config, nodes=[nodes]), bench, swept)
    return documents


def _scenarios(config: Config, bench: Bench, prefix: str) -> dict[str, Any]:
    """Every scenario of the run, on the cluster's nodes as they are; `prefix` labels them."""
    progress, size, lb = bench.progress, bench.image.blob_bytes, bench.lb_seconds
    params = _params(config, bench.cluster, size, lb)
    runs: dict[str, list[Measurement]] = {name: [] for name in config.scenarios}  # deduplicated
    outcome: dict[str, dict[str, Any]] = {}
    for repeat in range(config.repeat):
        for name in runs:
            if name in outcome:  # skipped, or failed: not tried again
                continue
            label = prefix + (name if config.repeat == 1 else f"{name} #{repeat + 1}")
            progress.line(f"{label}: starting")
            try:
                runs[name].append(SCENARIOS[name](bench, label))
            except Skip as e:
                progress.line(f"{label}: skipped: {e}")
                outcome[name] = {"skipped": str(e)}
            except ScenarioError as e:
                progress.line(f"{label}: FAILED: {e}")
                outcome[name] = {"error": str(e)}
            except Exception as e:
                log.exception("scenario failed", extra={"scenario": label})
                outcome[name] = {"error": f"{type(e).__name__}: {e}"}
    return results.document(params, runs, outcome, lb, size)


def _params(config: Config, cluster: Cluster, size: int, lb: float) -> dict[str, Any]:
    return {
        "nodes": len(cluster.nodes),
        "image_bytes": size,
        "layers": config.layers,
        "node_mbit": config.node_mbit,
        "upstream_mbit": config.upstream_mbit,
        "slow_upstream_mbit": config.slow_upstream_mbit or config.upstream_mbit / 8,
        "lb_seconds": round(lb, 3),
        "repeat": config.repeat,
        "scenarios": list(dict.fromkeys(config.scenarios)),
        "mtu": config.mtu,
        "tracker_security": config.tracker_security,
        "fsync": config.fsync,
        "shaping": "tbf on every host's link, both directions",
        "client": _version(["skopeo", "--version"]),
        "upstream": _version(["docker-registry", "--version"]),
        "command": command_line(config),
        "commit": _version(["git", "rev-parse", "--short", "HEAD"]),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "kernel": platform.release(),
        "netns_prefix": cluster.network.prefix,
    }


def _sweep_params(config: Config, documents: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """What every N's run shared, and the sweep's own command."""
    first = next(iter(documents.values()))["params"]
    shared = {k: v for k, v in first.items() if k not in ("nodes", "command", "load_average_1m")}
    return shared | {"nodes": list(documents), "command": command_line(config)}


def command_line(config: Config) -> str:
    """The command that reproduces this run's profile (scratch and output paths left out)."""
    defaults = Config()
    words = ["distributed-images", "bench"]
    for f in fields(Config):
        value = getattr(config, f.name)
        if f.name in ("out", "workdir", "log_level") or value == getattr(defaults, f.name):
            continue
        if f.name == "image_size":
            value = f"{value // MiB}MiB" if value % MiB == 0 else str(value)
        elif isinstance(value, list):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, float) and value.is_integer():
            value = int(value)
        words += ["--" + f.name.replace("_", "-"), str(value)]
    return shlex.join(words)


def _version(argv: list[str]) -> str | None:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def _charts() -> ModuleType | None:
    """`bench.chart`, or None without matplotlib (the bench extra). Imported only here: the
    console script imports this module for every command, the node's included."""
    if importlib.util.find_spec("matplotlib") is None:
        return None
    from bench import chart

    return chart


def _write(document: dict[str, Any], out: Path, charts: ModuleType | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    (out / "results.md").write_text(results.markdown(document))
    if charts is not None:
        charts.draw(document, out / "results.png")


def _write_sweep(swept: dict[str, Any], out: Path, charts: ModuleType | None) -> None:
    (out / "sweep.json").write_text(json.dumps(swept, indent=2) + "\n")
    (out / "sweep.md").write_text(sweep.markdown(swept))
    if charts is not None:
        charts.draw_sweep(swept, out / "sweep.png")


def _clean(document: dict[str, Any]) -> bool:
    """No scenario errored and no pull failed (skipped scenarios are not failures)."""
    return all(
        "error" not in entry and not entry.get("failed_pulls")
        for entry in document["scenarios"].values()
    )


def _check(config: Config) -> str | None:
    if os.geteuid() != 0:
        return "bench needs root (it creates network namespaces)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (make install-debian installs them)"
    if not config.nodes or config.layers < 1 or config.repeat < 1:
        return "--nodes, --layers and --repeat must be at least 1"
    if len(set(config.nodes)) != len(config.nodes) or config.nodes != sorted(config.nodes):
        return "--nodes of a sweep are distinct and in increasing order, e.g. 4,8,12,16"
    if config.image_size < config.layers * 1024:
        return "--image-size is too small for that many layers"
    if not 576 <= config.mtu <= 65535:
        return "--mtu is between 576 and 65535"
    if min(config.node_mbit, config.upstream_mbit) <= 0 or config.slow_upstream_mbit < 0:
        return "--node-mbit and --upstream-mbit must be positive"
    return None


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP end the run the way Ctrl-C does, so the same teardown runs. SIGINT is
    set too: a process started in the background by a shell inherits it ignored."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signums = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, interrupt) for s in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def signals_ignored() -> Iterator[None]:
    """A second Ctrl-C must not cut the teardown short."""
    signums = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
