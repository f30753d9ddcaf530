"""A real `distributed-images node` process on free loopback ports, for integration tests.

    node = Node(tmp / "node", registries={upstream.host: upstream.url}, default=upstream.host)
    node.start()                     # waits for GET /readyz == 200, or fails with the node's log
    node.metric("distributed_images_blob_bytes_total", source="upstream")
    node.kill(); node.start()        # a crash, then a restart on the same data dir and ports

The node's stderr goes to a file that fixtures print when a test fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from base64 import b64encode
from collections.abc import Mapping, Sequence
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.process import LOOPBACK, Daemon, free_port, http_get, http_status, wait_until

CHECKOUT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def write_auth_file(path: Path, credentials: Mapping[str, tuple[str, str]]) -> Path:
    """A Docker config.json: registry host -> (user, password)."""
    auths = {
        host: {"auth": b64encode(f"{user}:{password}".encode()).decode()}
        for host, (user, password) in credentials.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": auths}))
    return path


class Node:
    def __init__(
        self,
        workdir: Path,
        registries: Mapping[str, str],
        default: str,
        *,
        auth_file: Path | None = None,
        extra_args: Sequence[str] = (),
        name: str = "node",
        host: str = LOOPBACK,
        wrapper: Sequence[str] = (),
        data_dir: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.data_dir = data_dir or workdir / "data"
        self.name = name
        self.port = free_port(host)
        self.peer_port = free_port(host)
        self.host = f"{host}:{self.port}"
        self.url = f"http://{self.host}"
        workdir.mkdir(parents=True, exist_ok=True)
        # Never the machine's own ~/.docker/config.json: an empty one unless the test gives one.
        self.auth_file = auth_file or write_auth_file(workdir / "no-auth.json", {})
        argv = [
            *wrapper,  # a command the node runs under (setpriv, to drop capabilities)
            sys.executable,
            "-m",
            "distributed_images.cli",
            "node",
            "--listen",
            self.host,
            "--data-dir",
            str(self.data_dir),
            "--default-registry",
            default,
            "--peer-listen",
            f"{host}:{self.peer_port}",
            "--advertise-host",
            host,
            "--auth-file",
            str(self.auth_file),
            "--log-level",
            "debug",
        ]
        for ns, url in registries.items():
            argv += ["--registry", f"{ns}={url}"]
        argv += list(extra_args)
        # DI_* variables of the machine running the tests would change the node's settings.
        env = {k: v for k, v in os.environ.items() if not k.startswith("DI_")}
        # The code under test is this checkout's, whatever copy of the package pip installed.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHECKOUT), env.get("PYTHONPATH")]))
        self._daemon = Daemon(name, argv, workdir, env=env, cwd=workdir)

    # Life cycle.

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Start (or restart on the same data dir and ports) and wait until ready."""
        self._daemon.start()
        wait_until(
            self._ready,
            timeout,
            f"{self.name} on {self.host} ready (/readyz 200)",
            on_timeout=self.log_tail,
        )

    def _ready(self) -> bool:
        if not self._daemon.running:
            code = self._daemon.returncode
            raise RuntimeError(f"node exited with {code} before ready:\n{self.log_tail()}")
        return http_status(f"{self.url}/readyz", timeout=1.0) == 200

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM and wait; the exit code (SIGKILL after `timeout` gives a negative one)."""
        return self._daemon.stop(timeout)

    def kill(self) -> None:
        self._daemon.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def signal(self, signum: int) -> None:
        """Send the node's process a signal (SIGSTOP freezes it, SIGCONT thaws it)."""
        self._daemon.signal(signum)

    @property
    def running(self) -> bool:
        return self._daemon.running

    @property
    def pid(self) -> int:
        return self._daemon.pid

    @property
    def log_path(self) -> Path:
        return self._daemon.stderr_path

    def log_tail(self, lines: int = 80) -> str:
        """The end of the node's log, without grpc's per-call debug lines (hundreds a pull)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return f"({self.log_path} does not exist)"
        kept = [line for line in text.splitlines() if "logger=grpc._cython" not in line]
        return f"--- {self.name} log ({self.log_path}) ---\n" + "\n".join(kept[-lines:])

    # Observation.

    def metrics(self) -> Metrics:
        """Every sample of GET /metrics, keyed `name{label="value",...}` (labels sorted)."""
        return parse_metrics(http_get(f"{self.url}/metrics").decode())

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels` (0 when none)."""
        return self.metrics().sum(name, **labels)

    def stored_paths(self, digest: str) -> list[Path]:
        """Every file or directory under the data dir whose name mentions the digest's hex."""
        hex_digest = digest.removeprefix("sha256:")
        found = []
        # os.walk, unlike rglob, skips a directory the node removes while we look.
        for directory, dirs, files in os.walk(self.data_dir):
            found += [Path(directory, n) for n in (*dirs, *files) if hex_digest in n]
        return found


class Metrics(dict[str, float]):
    """Samples keyed `name{label="value",...}` (labels sorted), as the exposition shows them."""

    def __init__(self) -> None:
        super().__init__()
        self._labels: dict[str, tuple[str, dict[str, str]]] = {}

    def add(self, name: str, labels: Mapping[str, str], value: float) -> None:
        inner = ",".join(f'{k}="{labels[k]}"' for k in sorted(labels))
        key = f"{name}{{{inner}}}" if labels else name
        self[key] = value
        self._labels[key] = (name, dict(labels))

    def sum(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels` (0 when none)."""
        total = 0.0
        for key, (sample_name, sample_labels) in self._labels.items():
            if sample_name == name and labels.items() <= sample_labels.items():
                total += self[key]
        return total


def parse_metrics(text: str) -> Metrics:
    metrics = Metrics()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            metrics.add(sample.name, sample.labels, sample.value)
    return metrics


def node_available() -> bool:
    """Whether this checkout has the node command at all (it is being written concurrently)."""
    result = subprocess.run(
        [sys.executable, "-m", "distributed_images.cli", "node", "--help"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    return result.returncode == 0
