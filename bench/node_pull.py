"""Single-node pull benchmark: one large blob pulled directly from the registry, cold through a
node, and warm from the node's cache, side by side in one run; then the node's peak memory
while it serves 20 concurrent warm pulls.

    python -m bench.node_pull [--size 512MiB] [--repeat 3] [--out DIR]

Every pull is `curl -o /dev/null` on loopback, so the client is the same for all three.
Figures are throughputs and their ratios to the direct pull, measured in this one run.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from distributed_images.settings import parse_size
from tests.support.process import Daemon, free_port, http_status, wait_until
from tests.support.registry import Registry

REPO = "bench/blob"


@dataclass(frozen=True)
class Pull:
    seconds: float
    size: int

    @property
    def mib_per_s(self) -> float:
        return self.size / self.seconds / (1 << 20)


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


def push_blob(registry: Registry, path: Path, digest: str) -> None:
    connection = http.client.HTTPConnection(registry.host)
    connection.request("POST", f"/v2/{REPO}/blobs/uploads/")
    response = connection.getresponse()
    response.read()
    location = urlsplit(response.headers["Location"])
    separator = "&" if location.query else ""
    target = f"{location.path}?{location.query}{separator}digest={digest}"
    with path.open("rb") as body:
        connection.request(
            "PUT", target, body=body, headers={"Content-Length": str(path.stat().st_size)}
        )
        response = connection.getresponse()
        response.read()
    if response.status != 201:
        raise RuntimeError(f"blob upload failed: {response.status}")


def curl(url: str) -> Pull:
    out = subprocess.run(
        ["curl", "-sf", "-o", "/dev/null", "-w", "%{time_total} %{size_download}", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return Pull(float(out[0]), int(out[1]))


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


class NodeProcess:
    def __init__(self, workdir: Path, registry: Registry, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [
            "distributed-images", "node",
            "--listen", f"127.0.0.1:{self.port}",
            "--data-dir", str(workdir / name),
            "--registry", f"{registry.host}={registry.url}",
            "--default-registry", registry.host,
            "--peer-listen", f"127.0.0.1:{free_port()}",
            "--log-level", "warning",
        ]  # fmt: skip
        self.daemon = Daemon(name, argv, workdir)

    def __enter__(self) -> NodeProcess:
        self.daemon.start()
        wait_until(lambda: http_status(f"{self.url}/readyz") == 200, 20, "node ready")
        return self

    def __exit__(self, *exc: object) -> None:
        self.daemon.stop()


def run(size: int, repeat: int, concurrency: int, workdir: Path) -> dict[str, object]:
    registry = Registry(workdir / "registry")
    registry.start()
    try:
        blob = workdir / "blob"
        digest = make_blob(blob, size)
        push_blob(registry, blob, digest)
        blob.unlink()
        path = f"/v2/{REPO}/blobs/{digest}"
        direct, cold, warm = [], [], []
        for i in range(repeat):
            direct.append(curl(registry.url + path))
            with NodeProcess(workdir, registry, f"node{i}") as node:
                cold.append(curl(node.url + path))
                warm.append(curl(node.url + path))
                if i == repeat - 1:
                    rss = concurrent_warm(node, path, concurrency)
        return report(size, direct, cold, warm, rss, concurrency)
    finally:
        registry.stop()


def concurrent_warm(node: NodeProcess, path: str, concurrency: int) -> int:
    # Reset the peak so it measures serving, not the cold pull before it.
    Path(f"/proc/{node.daemon.pid}/clear_refs").write_text("5")
    command = ["curl", "-sf", "-o", "/dev/null", node.url + path]
    pulls = [subprocess.Popen(command) for _ in range(concurrency)]
    if any(p.wait() != 0 for p in pulls):
        raise RuntimeError("a concurrent warm pull failed")
    return peak_rss_bytes(node.daemon.pid)


def report(
    size: int, direct: list[Pull], cold: list[Pull], warm: list[Pull], rss: int, concurrency: int
) -> dict[str, object]:
    def median(pulls: list[Pull]) -> float:
        return statistics.median(p.mib_per_s for p in pulls)

    base = median(direct)
    return {
        "blob_bytes": size,
        "repeat": len(direct),
        "direct_mib_s": round(base, 1),
        "cold_mib_s": round(median(cold), 1),
        "warm_mib_s": round(median(warm), 1),
        "cold_vs_direct": round(median(cold) / base, 2),
        "warm_vs_direct": round(median(warm) / base, 2),
        "concurrent_warm_pulls": concurrency,
        "node_peak_rss_mib": round(rss / (1 << 20), 1),
        "targets": {"cold_vs_direct": ">= 0.9", "warm_vs_direct": ">= 3", "rss_mib": "< 200"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=512 << 20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-node-") as tmp:
        result = run(args.size, args.repeat, args.concurrency, Path(tmp))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "node_pull.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
