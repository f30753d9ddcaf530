"""Seeding benchmark: a directory of image archives (a legacy `docker save`, an `oci-archive`
tar, an OCI layout directory and a zstd-compressed `oci-archive`, equal shares of `--size`)
imported by a node, timed against `sha256sum` of the same files, with the node's memory.

    python -m bench.seed_import [--size 2GiB] [--mode node|seeds] [--workers 2] [--repeat 3]
                                [--workdir DIR] [--out DIR]

`--mode node` (the default when node/app.py runs the seeder) starts `distributed-images node
--images-dir` with no reachable upstream and times it from its start until every seeded tag is
served; `--mode seeds` times the seeder alone (store and `Seeds` in a child process). Both read
the archives from the page cache, as `sha256sum` does after a warm-up read. Memory is the
process's peak resident set (VmHWM) over the whole run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import zstandard

from bench import image
from bench.daemon import Daemon, DaemonError, child_environment
from bench.local import ADDRESS, Loopback, free_port
from distributed_images.settings import parse_size
from node.oci import mediatypes

REPO = "bench"
FORMATS = ("legacy", "oci", "layout", "zstd")
SAMPLE_SECONDS = 0.05


def write_archives(images_dir: Path, scratch: Path, size: int) -> list[str]:
    """One archive per format, two layers each; returns the tags they seed."""
    share = size // len(FORMATS)
    refs: list[str] = []
    for name in FORMATS:
        tag = f"docker.io/{REPO}/{name}:1"
        layout = scratch / name if name != "layout" else images_dir / "layout"
        built = image.build(layout, share, 2, tag)
        if name == "legacy":
            _tar(_legacy_members(built), images_dir / "legacy.tar")
        elif name == "oci":
            _tar(_layout_members(layout), images_dir / "oci.tar")
        elif name == "zstd":
            _tar(_layout_members(layout), images_dir / "oci.tar.zst", compress=True)
        if name != "layout":
            shutil.rmtree(layout)
        refs.append(tag)
    return refs


def _layout_members(layout: Path) -> list[tuple[Path, str]]:
    files = sorted(p for p in layout.rglob("*") if p.is_file())
    return [(p, p.relative_to(layout).as_posix()) for p in files]


def _legacy_members(built: image.Image) -> list[tuple[Path, str]]:
    """A legacy `docker save` of an image with uncompressed layers; manifest.json last."""
    blobs = built.layout / "blobs" / "sha256"
    members = []
    names = []
    for i, layer in enumerate(built.layers):
        names.append(f"{i:064x}/layer.tar")
        members.append((blobs / layer.digest.removeprefix("sha256:"), names[-1]))
    config = built.config.digest.removeprefix("sha256:")
    members.append((blobs / config, f"{config}.json"))
    entry = {"Config": f"{config}.json", "RepoTags": [built.tag], "Layers": names}
    index = built.layout / "manifest.json"
    index.write_text(json.dumps([entry]))
    members.append((index, "manifest.json"))
    return members


def _tar(members: list[tuple[Path, str]], out: Path, compress: bool = False) -> None:
    with out.open("wb") as raw:
        if compress:
            compressor = zstandard.ZstdCompressor(level=1, threads=-1)
            with compressor.stream_writer(raw) as f, tarfile.open(fileobj=f, mode="w|") as tar:
                for path, name in members:
                    tar.add(path, arcname=name)
        else:
            with tarfile.open(fileobj=raw, mode="w|") as tar:
                for path, name in members:
                    tar.add(path, arcname=name)


def archive_files(images_dir: Path) -> list[Path]:
    return sorted(p for p in images_dir.rglob("*") if p.is_file())


def timed(argv: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def hashlib_seconds(files: list[Path]) -> float:
    started = time.monotonic()
    for path in files:
        with path.open("rb") as f:
            hashlib.file_digest(f, "sha256")
    return time.monotonic() - started


class RssSampler:
    """The peak resident set of a process, sampled, and its VmHWM at the end."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.peak = max(self.peak, _status_kib(self.pid, "VmHWM:") * 1024)

    def stop(self) -> int:
        self.peak = max(self.peak, _status_kib(self.pid, "VmHWM:") * 1024)
        self._stop.set()
        self._thread.join()
        return self.peak


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def served(url: str, ref: str) -> str | None:
    ns, _, rest = ref.partition("/")
    repo, _, tag = rest.rpartition(":")
    request = urllib.request.Request(
        f"{url}/v2/{repo}/manifests/{tag}?ns={ns}",
        method="HEAD",
        headers={"Accept": ", ".join(mediatypes.MANIFEST_TYPES)},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            digest: str | None = response.headers.get("Docker-Content-Digest")
            return digest
    except (urllib.error.URLError, OSError):
        return None


def run_node(images_dir: Path, workdir: Path, refs: list[str], workers: int) -> dict[str, float]:
    port = free_port()
    url = f"http://{ADDRESS}:{port}"
    dead = f"http://{ADDRESS}:{free_port()}"
    argv = [
        sys.executable, "-m", "distributed_images.cli", "node",
        "--listen", f"{ADDRESS}:{port}",
        "--data-dir", str(workdir / "data"),
        "--images-dir", str(images_dir),
        "--registry", f"docker.io={dead}",
        "--peer-listen", f"{ADDRESS}:{free_port()}",
        "--upstream-retries", "0",
        "--seed-workers", str(workers),
        "--seed-scan-interval", "0.5",
        "--log-level", "info",
    ]  # fmt: skip
    daemon = Daemon("node", Loopback(), argv, workdir, child_environment())
    started = time.monotonic()
    daemon.start()
    sampler = RssSampler(daemon.pid)
    try:
        daemon.wait_http(f"{url}/healthz", 60)
        rss_at_start = _status_kib(daemon.pid, "VmRSS:") * 1024
        # Ready once the archives found at start are imported.
        daemon.wait_http(f"{url}/readyz", 600)
        ready = time.monotonic() - started
        pending = set(refs)
        while pending:
            pending = {ref for ref in pending if served(url, ref) is None}
            if not daemon.running:
                raise DaemonError(f"node exited\n{daemon.log_tail()}")
            time.sleep(0.02)
        seconds = time.monotonic() - started
        return {
            "seconds": seconds,
            "node_ready_seconds": ready,
            "peak_rss": sampler.stop(),
            "rss_at_start": rss_at_start,
        }
    finally:
        sampler.stop()
        daemon.stop()


def run_seeds(images_dir: Path, workdir: Path, workers: int) -> dict[str, float]:
    argv = [sys.executable, "-m", "bench.seed_import", "--child", str(images_dir)]
    argv += ["--child-data", str(workdir / "data"), "--workers", str(workers)]
    started = time.monotonic()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    sampler = RssSampler(child.pid)
    out, _ = child.communicate()
    seconds = time.monotonic() - started
    report = json.loads(out)
    peak = max(sampler.stop(), report["peak_rss"])
    if report["failures"]:
        raise RuntimeError(f"archives failed: {report['failures']}")
    return {"seconds": seconds, "import_seconds": report["seconds"], "peak_rss": peak}


def child(images_dir: Path, data_dir: Path, workers: int) -> None:
    """The seeder alone: import every archive once, print what it took."""
    from node.seed import SeedConfig, Seeds
    from node.store.contentstore import ContentStore

    async def seed() -> dict[str, object]:
        store = ContentStore.open(data_dir)
        seeds = Seeds(images_dir, store, SeedConfig(seed_workers=workers))
        started = time.monotonic()
        await seeds.sync()
        seconds = time.monotonic() - started
        store.close()
        return {"seconds": seconds, "failures": seeds.failures(), "refs": len(seeds.refs())}

    report = asyncio.run(seed())
    report["peak_rss"] = _status_kib(os.getpid(), "VmHWM:") * 1024
    print(json.dumps(report))


def run(size: int, mode: str, workers: int, repeat: int, workdir: Path) -> dict[str, object]:
    images_dir = workdir / "images"
    images_dir.mkdir()
    refs = write_archives(images_dir, workdir, size)
    old = time.time() - 60  # written a minute ago: imported at the first scan
    for path in [images_dir, *images_dir.rglob("*")]:
        os.utime(path, (old, old))
    files = archive_files(images_dir)
    total = sum(p.stat().st_size for p in files)
    timed(["cat", *map(str, files)])  # warm the page cache for both contenders
    # Alternated, so that both see the same load from whatever else runs on the machine.
    sha256sum, python_sha256, results = [], [], []
    for i in range(repeat):
        sha256sum.append(timed(["sha256sum", *map(str, files)]))
        python_sha256.append(hashlib_seconds(files))
        attempt = workdir / f"run{i}"
        attempt.mkdir()
        if mode == "node":
            results.append(run_node(images_dir, attempt, refs, workers))
        else:
            results.append(run_seeds(images_dir, attempt, workers))
        shutil.rmtree(attempt)
    mib = total / (1 << 20)
    base = statistics.median(sha256sum)
    seconds = statistics.median(r["seconds"] for r in results)
    details = {
        k: round(statistics.median(r[k] for r in results), 2)
        for k in results[0]
        if k.endswith("_seconds")
    }
    return {
        "mode": mode,
        "archive_bytes": total,
        "archives": sorted({p.relative_to(images_dir).parts[0] for p in files}),
        "workers": workers,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "repeat": repeat,
        "sha256sum_seconds": round(base, 2),
        "sha256sum_mib_s": round(mib / base, 1),
        "python_hashlib_sha256_seconds": round(statistics.median(python_sha256), 2),
        "ready_and_serving_seconds": round(seconds, 2),
        **details,
        "import_mib_s": round(mib / seconds, 1),
        "vs_sha256sum": round(seconds / base, 2),
        "runs_vs_sha256sum": [
            round(r["seconds"] / b, 2) for r, b in zip(results, sha256sum, strict=True)
        ],
        "peak_rss_mib": round(max(r["peak_rss"] for r in results) / (1 << 20), 1),
        **(
            {"rss_before_import_mib": round(results[0]["rss_at_start"] / (1 << 20), 1)}
            if "rss_at_start" in results[0]
            else {}
        ),
        "targets": {"vs_sha256sum": "<= 1.5", "peak_rss_mib": "< 200"},
    }


def node_runs_seeds() -> bool:
    spec = importlib.util.find_spec("node.app")
    return spec is not None and spec.origin is not None and "Seeds" in Path(spec.origin).read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=2 << 30)
    parser.add_argument("--mode", choices=("node", "seeds"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="where archives and the store go")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.child_data, args.workers)
        return
    mode = args.mode or ("node" if node_runs_seeds() else "seeds")
    with tempfile.TemporaryDirectory(prefix="bench-seed-", dir=args.workdir) as tmp:
        result = run(args.size, mode, args.workers, args.repeat, Path(tmp))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "seed_import.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
