"""The benchmark's cluster: N node hosts, an upstream registry, a tracker host and a pull-through
cache host, each in its own network namespace, with links shaped to the profile's bandwidths.

The upstream registry runs for the whole run. The pull-through cache, the tracker and the node
agents are started per scenario run with empty state (`proxy()`, `tracker()`, `agents()`), so
every scenario starts cold, and are stopped when it ends. `close()` stops whatever still runs and
removes every namespace; it is what the harness calls on success, failure and Ctrl-C alike.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench import egress
from bench.daemon import Daemon, child_environment, http_text
from bench.image import Image, push_argv
from bench.netns import Host, Network
from bench.security import IDENTITY, TrackerSecurity

REPOSITORY = "bench/app"
TAG = "1"
REGISTRY_PORT = 5000
NODE_PORT = 8080
PEER_PORT = 6881
TRACKER_PORT = 7070
TRACKER_HTTP_PORT = 7071
STORE_PORT = 6379
START_TIMEOUT = 60.0
CLI = [sys.executable, "-m", "distributed_images.cli"]


@dataclass(frozen=True)
class Links:
    """The profile's network: how many nodes, and each link's rate in Mbit/s."""

    nodes: int
    node_mbit: float
    upstream_mbit: float
    mtu: int = 1500


@dataclass
class Agent:
    """A node agent running in a node host."""

    host: Host
    daemon: Daemon

    @property
    def registry(self) -> str:
        return f"{self.host.ip}:{NODE_PORT}"

    def metrics(self) -> dict[str, float]:
        """Every sample of the agent's /metrics, keyed `name{label="value",...}`."""
        text = self.host.call(lambda: http_text(f"http://{self.registry}/metrics"))
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples


def registry_daemon(
    name: str,
    host: Host,
    listen: str,
    data: Path,
    workdir: Path,
    logs: Path,
    env: dict[str, str],
    remote: str | None = None,
) -> Daemon:
    """Debian's `docker-registry` in `host` on `listen`, storing under `data`; a pull-through
    cache of `remote` when given. Its config goes in `workdir`."""
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "info", "fields": {"service": name}},
        "storage": {
            "cache": {"blobdescriptor": "inmemory"},
            "filesystem": {"rootdirectory": str(data)},
            "delete": {"enabled": True},
        },
        "http": {"addr": listen, "secret": "bench-only-secret"},
    }
    if remote:
        config["proxy"] = {"remoteurl": remote}
    path = workdir / f"{name}.yml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    return Daemon(name, host, ["docker-registry", "serve", str(path)], logs, env)


def slug(run: str) -> str:
    """A run's label as a file name: `churn #2` -> `churn-2`."""
    return "-".join("".join(c if c.isalnum() or c in "-_." else " " for c in run).split())


class Cluster:
    def __init__(
        self,
        network: Network,
        links: Links,
        workdir: Path,
        logs: Path,
        tracker_security: str = IDENTITY,
        *,
        fsync: bool = True,
    ) -> None:
        self.network = network
        self.links = links
        self.workdir = workdir
        self.logs = logs
        self.fsync = fsync
        self.env = child_environment()
        self.upstream = network.add_host("upstream", links.upstream_mbit, links.mtu)
        self.upstream_sent = self.upstream.tx_bytes  # cheaper once its registry runs
        self.proxy_host = network.add_host("proxy", links.node_mbit, links.mtu)
        self.tracker_host = network.add_host("tracker", links.node_mbit, links.mtu)
        # A second tracker replica and the Redis they share, for p2p-cold-failover.
        self.tracker2_host = network.add_host("tracker2", links.node_mbit, links.mtu)
        self.store_host = network.add_host("store", links.node_mbit, links.mtu)
        self._trackers = self.tracker_address  # what the agents are given as --tracker
        self.node_hosts = [
            network.add_host(f"node{i}", links.node_mbit, links.mtu) for i in range(links.nodes)
        ]
        self.nodes = list(self.node_hosts)  # the hosts scenarios run on: see `use_nodes`
        self._daemons: list[Daemon] = []
        self._auth_file = workdir / "no-auth.json"
        self._auth_file.write_text(json.dumps({"auths": {}}))
        self.security = TrackerSecurity(
            tracker_security, workdir / "security", [self.tracker_host.ip, self.tracker2_host.ip]
        )

    def use_nodes(self, count: int) -> None:
        """Run the next scenarios on the first `count` node hosts only (a sweep over N); the
        others stay idle, with nothing running in them."""
        if not 1 <= count <= len(self.node_hosts):
            raise ValueError(f"{count} nodes asked of a network of {len(self.node_hosts)}")
        self.nodes = self.node_hosts[:count]

    # Addresses.

    @property
    def upstream_registry(self) -> str:
        return f"{self.upstream.ip}:{REGISTRY_PORT}"

    @property
    def proxy_registry(self) -> str:
        return f"{self.proxy_host.ip}:{REGISTRY_PORT}"

    @property
    def tracker_address(self) -> str:
        return f"{self.tracker_host.ip}:{TRACKER_PORT}"

    @property
    def image_name(self) -> str:
        """The image's full name; the nodes map the upstream's host:port to its URL."""
        return f"{self.upstream_registry}/{REPOSITORY}:{TAG}"

    def operator_args(self) -> list[str]:
        """How `status` and `preheat` reach the tracker."""
        return ["--tracker", self.tracker_address, *self.security.operator_args()]

    @staticmethod
    def reference(registry: str) -> str:
        return f"{registry}/{REPOSITORY}:{TAG}"

    # The upstream.

    @contextmanager
    def upstream_at(self, mbit: float) -> Iterator[None]:
        """The upstream's link at `mbit` for a while, then back at the profile's rate."""
        self.network.reshape(self.upstream, mbit)
        try:
            yield
        finally:
            self.network.reshape(self.upstream, self.links.upstream_mbit)

    def start_upstream(self) -> None:
        daemon = self._registry("upstream", self.upstream, self.workdir / "upstream", None)
        self._start(daemon, f"http://{self.upstream_registry}/v2/")
        self.upstream_sent = egress.counter(daemon.pid)  # its namespace's counter, no exec

    def push(self, image: Image) -> None:
        """Push from inside the upstream host: over its loopback, so no link shaping applies
        and nothing is counted on its interface."""
        argv = push_argv(image, self.upstream_registry, f"{REPOSITORY}:{TAG}")
        result = subprocess.run(
            self.upstream.exec_argv(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=600,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pushing the image failed: {result.stderr.strip()}")

    # Per-scenario services, each started empty.

    @contextmanager
    def proxy(self, run: str) -> Iterator[Daemon]:
        remote = f"http://{self.upstream_registry}"
        data = self.workdir / slug(run) / "proxy"
        daemon = self._registry(f"{slug(run)}-proxy", self.proxy_host, data, remote)
        try:
            self._start(daemon, f"http://{self.proxy_registry}/v2/")
            yield daemon
        finally:
            self._stop(daemon)
            shutil.rmtree(data, ignore_errors=True)

    @contextmanager
    def tracker(self, run: str) -> Iterator[Daemon]:
        host = self.tracker_host
        argv = [*CLI, "tracker", "--listen", self.tracker_address]
        argv += ["--http-listen", f"{host.ip}:{TRACKER_HTTP_PORT}", "--log-level", "info"]
        argv += self.security.tracker_args()
        daemon = Daemon(f"{slug(run)}-tracker", host, argv, self.logs, self.env)
        try:
            self._start(daemon, f"http://{host.ip}:{TRACKER_HTTP_PORT}/healthz")
            yield daemon
        finally:
            self._keep_metrics(daemon, f"http://{host.ip}:{TRACKER_HTTP_PORT}/metrics")
            self._stop(daemon)

    @contextmanager
    def replicated_tracker(self, run: str) -> Iterator[list[Daemon]]:
        """A Redis on the store host and two tracker replicas sharing it; agents started
        meanwhile know both, half of them one first, half the other."""
        store = self.store_host
        argv = ["redis-server", "--port", str(STORE_PORT), "--bind", store.ip, "--save", ""]
        argv += ["--appendonly", "no", "--protected-mode", "no", "--dir", str(self.workdir)]
        redis = Daemon(f"{slug(run)}-redis", store, argv, self.logs, self.env)
        url = f"redis://{store.ip}:{STORE_PORT}/0"
        hosts = (self.tracker_host, self.tracker2_host)
        replicas = []
        for host in hosts:
            argv = [*CLI, "tracker", "--listen", f"{host.ip}:{TRACKER_PORT}"]
            argv += ["--http-listen", f"{host.ip}:{TRACKER_HTTP_PORT}", "--log-level", "info"]
            argv += ["--store", url, *self.security.tracker_args()]
            replicas.append(Daemon(f"{slug(run)}-{host.name}", host, argv, self.logs, self.env))
        try:
            self._daemons.append(redis)
            redis.start()
            for host, daemon in zip(hosts, replicas, strict=True):
                self._start(daemon, f"http://{host.ip}:{TRACKER_HTTP_PORT}/readyz")
            self._trackers = ",".join(f"{host.ip}:{TRACKER_PORT}" for host in hosts)
            yield replicas
        finally:
            self._trackers = self.tracker_address
            for host, daemon in zip(hosts, replicas, strict=True):
                self._keep_metrics(daemon, f"http://{host.ip}:{TRACKER_HTTP_PORT}/metrics")
                self._stop(daemon)
            self._stop(redis)

    @contextmanager
    def agents(self, run: str, hosts: Sequence[Host]) -> Iterator[list[Agent]]:
        """Node agents on `hosts`, all started at once, each with an empty data directory."""
        agents = [Agent(h, self._agent_daemon(run, h, i)) for i, h in enumerate(hosts)]
        try:
            for agent in agents:
                self._daemons.append(agent.daemon)
                agent.daemon.start()
            for agent in agents:
                agent.daemon.wait_http(f"http://{agent.registry}/readyz", START_TIMEOUT)
            yield agents
        finally:
            for agent in agents:
                self._keep_metrics(agent.daemon, f"http://{agent.registry}/metrics")
                self._stop(agent.daemon)
            shutil.rmtree(self.workdir / slug(run) / "agents", ignore_errors=True)

    def _agent_daemon(self, run: str, host: Host, index: int) -> Daemon:
        trackers = self._trackers.split(",")
        first = index % len(trackers)
        argv = [
            *CLI, "node",
            "--listen", f"{host.ip}:{NODE_PORT}",
            "--data-dir", str(self.workdir / slug(run) / "agents" / host.name),
            "--registry", f"{self.upstream_registry}=http://{self.upstream_registry}",
            "--default-registry", self.upstream_registry,
            "--peer-listen", f"{host.ip}:{PEER_PORT}",
            "--advertise-host", host.ip,
            "--tracker", ",".join(trackers[first:] + trackers[:first]),
            "--auth-file", str(self._auth_file),
            "--log-level", "info",
            *self.security.node_args(host.name),
            "--fsync" if self.fsync else "--no-fsync",
        ]  # fmt: skip
        return Daemon(f"{slug(run)}-{host.name}", host, argv, self.logs, self.env)

    def _registry(self, name: str, host: Host, data: Path, remote: str | None) -> Daemon:
        listen = f"{host.ip}:{REGISTRY_PORT}"
        return registry_daemon(name, host, listen, data, self.workdir, self.logs, self.env, remote)

    def _keep_metrics(self, daemon: Daemon, url: str) -> None:
        """Save what a daemon's /metrics says as it stops, beside its log, for a look later."""
        if not daemon.running:
            return
        try:
            text = daemon.host.call(lambda: http_text(url))
        except OSError:
            return
        daemon.log_path.with_suffix(".metrics").write_text(text)

    def _start(self, daemon: Daemon, ready_url: str) -> None:
        self._daemons.append(daemon)
        daemon.start()
        daemon.wait_http(ready_url, START_TIMEOUT)

    def _stop(self, daemon: Daemon) -> None:
        daemon.stop()
        if daemon in self._daemons:
            self._daemons.remove(daemon)

    def close(self) -> None:
        """Stop every daemon still running, then remove the network (and anything left in it)."""
        for daemon in reversed(self._daemons):
            daemon.stop(timeout=5.0)
        self._daemons.clear()
        self.network.destroy()
