"""Tracker load benchmark, run by hand: `python -m bench.tracker_load`.

Starts a real `distributed-images tracker` process, then:
  1. a worker process joins `--nodes` simulated nodes, holds a Tasks stream open for each (as
     real nodes do) and heartbeats every node once per `--heartbeat-interval`;
  2. the nodes announce `--chunks` distinct chunks (blobs of `--chunks-per-blob`, each held by
     `--replicas` nodes in 3 zones) and their metainfo is published;
  3. for `--duration` seconds, `--rate` Locate calls per second (open loop: each call starts on
     schedule, however slow the previous ones) ask for a random blob from a random node, a tenth
     of them for a cold blob that takes leases.
It prints Locate latency as the caller saw it (p50/p99/max) and as the tracker measured it (its
histogram), the tracker's CPU use and RSS during the steady phase, and a JSON line.
Targets (issue 3): p99 under 20 ms, RSS under 500 MiB. The machine should be otherwise idle:
the caller, the simulated nodes and the tracker share it, and any other load shows up as latency.
For diagnosis, BENCH_TRACE=1 prints each Locate's start and latency to stderr, and BENCH_TRACKER
names a script to run as the tracker instead of `distributed-images tracker`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from tracker.client import CHANNEL_OPTIONS, HeldBlob, NodeAddress, TrackerClient
from tracker.errors import TrackerError
from tracker.v1 import tracker_pb2 as pb
from tracker.v1 import tracker_pb2_grpc

ZONES = ("zone-a", "zone-b", "zone-c")
METAINFO_BYTES = 450  # a 16-piece chunk torrent's metainfo, as node.p2p.metainfo writes it
MiB = 1 << 20


@dataclass(frozen=True)
class Shape:
    nodes: int
    chunks: int
    chunks_per_blob: int
    replicas: int

    @property
    def blobs(self) -> int:
        return self.chunks // self.chunks_per_blob

    @property
    def blob_size(self) -> int:
        return self.chunks_per_blob * 4 * MiB


def node_id(i: int) -> str:
    return f"node-{i:05d}"


def node_address(i: int) -> NodeAddress:
    host = f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}"
    return NodeAddress(node_id(i), f"{host}:8080", f"{host}:6881", ZONES[i % len(ZONES)])


def digest(b: int, cold: bool = False) -> str:
    return f"sha256:{b + (1 << 60 if cold else 0):064x}"


def holders(shape: Shape, b: int) -> list[int]:
    """Blob b is held by `replicas` nodes; every node holds the same number of blobs."""
    return [(b * shape.replicas + k) % shape.nodes for k in range(shape.replicas)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- the tracker process ----


class TrackerProcess:
    def __init__(self, workdir: Path, heartbeat_interval: float) -> None:
        self.port, self.http_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        # BENCH_TRACKER names a script to run instead (e.g. one that logs its GC pauses).
        launcher = os.environ.get("BENCH_TRACKER")
        command = [launcher] if launcher else ["-m", "distributed_images.cli", "tracker"]
        argv = [
            sys.executable,
            *command,
            *("--listen", self.address, "--http-listen", f"127.0.0.1:{self.http_port}"),
            *("--heartbeat-interval", str(heartbeat_interval)),
            *("--node-ttl", str(heartbeat_interval * 3), "--log-level", "warning"),
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DI_")}
        self.log = (workdir / "tracker.log").open("wb")
        self.process = subprocess.Popen(argv, stdout=self.log, stderr=self.log, env=env)

    def wait_healthy(self) -> None:
        for _ in range(600):
            try:
                with urllib.request.urlopen(self.url("/healthz"), timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"tracker exited with {self.process.returncode}")
            time.sleep(0.05)
        raise TimeoutError("tracker did not become healthy")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak RSS), in bytes."""
        found = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) * 1024
        return found

    def locate_histogram(self) -> dict[float, float]:
        with urllib.request.urlopen(self.url("/metrics"), timeout=10) as r:
            text = r.read().decode()
        buckets: dict[float, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.endswith("_bucket") and sample.labels.get("method") == "Locate":
                    buckets[float(sample.labels["le"])] = sample.value
        return buckets

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


# ---- the heartbeating worker (a separate process: its CPU is not the measured caller's) ----


def heartbeat_worker(address: str, shape: Shape, interval: float, ready: Any, stop: Any) -> None:
    # The simulated nodes would be on other hosts: on a small machine, let the tracker and the
    # measured caller go first.
    os.nice(10)
    asyncio.run(_heartbeats(address, shape, interval, ready, stop))


async def _heartbeats(address: str, shape: Shape, interval: float, ready: Any, stop: Any) -> None:
    clients = [TrackerClient(address, timeout=30) for _ in range(16)]
    client_of = [clients[i % len(clients)] for i in range(shape.nodes)]
    limit = asyncio.Semaphore(64)

    async def join(i: int) -> None:
        async with limit:
            await client_of[i].join(node_address(i), "bench")

    await asyncio.gather(*(join(i) for i in range(shape.nodes)))
    streams = [
        asyncio.create_task(_drain(client_of[i].tasks(node_id(i)))) for i in range(shape.nodes)
    ]
    ready.set()
    start = time.monotonic()
    beat = 0
    failures = 0
    while not stop.is_set():
        i = beat % shape.nodes
        due = start + beat * interval / shape.nodes
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        try:
            await client_of[i].heartbeat(node_id(i))
        except TrackerError:
            failures += 1
        beat += 1
    for task in streams:
        task.cancel()
    await asyncio.gather(*streams, return_exceptions=True)
    for client in clients:
        await client.close()
    if failures:
        print(f"heartbeat failures: {failures}", file=sys.stderr)


async def _drain(orders: Any) -> None:
    async for _ in orders:
        pass


# ---- setup and the measured Locate load ----


async def announce_and_publish(address: str, shape: Shape, publish: bool) -> float:
    clients = [TrackerClient(address, timeout=60) for _ in range(8)]
    limit = asyncio.Semaphore(64)
    held: dict[int, list[int]] = {}
    for b in range(shape.blobs):
        for n in holders(shape, b):
            held.setdefault(n, []).append(b)
    all_chunks = tuple(range(shape.chunks_per_blob))
    start = time.monotonic()

    async def announce(n: int, blobs: list[int]) -> None:
        inventory = [
            HeldBlob(digest(b), shape.blob_size, len(all_chunks), all_chunks) for b in blobs
        ]
        async with limit:
            await clients[n % len(clients)].announce(node_id(n), inventory)

    async def publish_one(b: int, c: int) -> None:
        async with limit:
            await clients[(b + c) % len(clients)].publish(
                node_id(holders(shape, b)[0]),
                digest(b),
                shape.blob_size,
                shape.chunks_per_blob,
                c,
                b"d4:info" + random.randbytes(METAINFO_BYTES - 8) + b"e",
            )

    await asyncio.gather(*(announce(n, blobs) for n, blobs in held.items()))
    if publish:
        work = [(b, c) for b in range(shape.blobs) for c in all_chunks]
        for i in range(0, len(work), 5000):
            await asyncio.gather(*(publish_one(b, c) for b, c in work[i : i + 5000]))
    for client in clients:
        await client.close()
    return time.monotonic() - start


async def locate_load(address: str, shape: Shape, rate: float, duration: float) -> list[float]:
    """Latency of Locate as a caller sees it: request out, response bytes in and decoded. The raw
    stub is used, so the figure is the tracker's and the wire's, not the client's conversion."""
    channels = [grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) for _ in range(4)]
    stubs = [tracker_pb2_grpc.TrackerStub(channel) for channel in channels]  # type: ignore[no-untyped-call]
    rng = random.Random(1)
    latencies: list[float] = []
    errors = 0

    async def one(k: int) -> None:
        nonlocal errors
        cold = rng.random() < 0.1
        request = pb.LocateRequest(
            node_id=node_id(rng.randrange(shape.nodes)),
            digest=digest(rng.randrange(shape.blobs), cold),
            size=shape.blob_size,
            chunk_count=shape.chunks_per_blob,
            max_leases=4 if cold else 0,
        )
        start = time.perf_counter()
        try:
            await stubs[k % len(stubs)].Locate(request, timeout=10)
        except grpc.aio.AioRpcError:
            errors += 1
            return
        latencies.append(time.perf_counter() - start)
        if os.environ.get("BENCH_TRACE"):
            print(f"{start:.3f} {latencies[-1] * 1000:.1f}", file=sys.stderr)

    tasks = []
    begin = time.monotonic()
    for k in range(int(rate * duration)):
        await asyncio.sleep(max(0.0, begin + k / rate - time.monotonic()))
        tasks.append(asyncio.create_task(one(k)))
    await asyncio.gather(*tasks)
    for channel in channels:
        await channel.close()
    if errors:
        print(f"locate errors: {errors}", file=sys.stderr)
    return latencies


def quantile_from_buckets(buckets: dict[float, float], q: float) -> float:
    """The upper bound of the histogram bucket holding quantile q."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    for bound in bounds:
        if buckets[bound] >= q * total:
            return bound
    return float("inf")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracker_load", description=__doc__)
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--chunks-per-blob", type=int, default=40)
    parser.add_argument("--replicas", type=int, default=20)
    parser.add_argument("--rate", type=float, default=200.0, help="Locate calls per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of steady load")
    parser.add_argument("--heartbeat-interval", type=float, default=5.0)
    parser.add_argument("--no-publish", action="store_true", help="announce only, no metainfo")
    args = parser.parse_args(argv)
    shape = Shape(args.nodes, args.chunks, args.chunks_per_blob, args.replicas)

    with tempfile.TemporaryDirectory(prefix="tracker-load-") as tmp:
        tracker = TrackerProcess(Path(tmp), args.heartbeat_interval)
        spawn = multiprocessing.get_context("spawn")
        ready, stop = spawn.Event(), spawn.Event()
        worker = spawn.Process(
            target=heartbeat_worker,
            args=(tracker.address, shape, args.heartbeat_interval, ready, stop),
        )
        try:
            tracker.wait_healthy()
            worker.start()
            t0 = time.monotonic()
            if not ready.wait(300):
                raise TimeoutError("the nodes did not join")
            joined = time.monotonic() - t0
            print(f"{shape.nodes} nodes joined with Tasks streams open in {joined:.1f} s")
            setup = asyncio.run(announce_and_publish(tracker.address, shape, not args.no_publish))
            print(
                f"{shape.blobs} blobs x {shape.chunks_per_blob} chunks = {shape.chunks} chunks,"
                f" {shape.replicas} holders each, announced"
                f"{'' if args.no_publish else ' and published'} in {setup:.1f} s"
            )
            memory_before = tracker.memory()
            histogram_before = tracker.locate_histogram()
            cpu_before, wall_before = tracker.cpu_seconds(), time.monotonic()
            latencies = asyncio.run(locate_load(tracker.address, shape, args.rate, args.duration))
            cpu = (tracker.cpu_seconds() - cpu_before) / (time.monotonic() - wall_before)
            memory_after = tracker.memory()
            histogram = {
                le: count - histogram_before.get(le, 0.0)
                for le, count in tracker.locate_histogram().items()
            }
        finally:
            stop.set()
            worker.join(30)
            if worker.is_alive():
                worker.kill()
            tracker.stop()

    figures = {
        "nodes": shape.nodes,
        "chunks": shape.chunks,
        "locate_rate": args.rate,
        "locate_calls": len(latencies),
        "locate_achieved_per_second": len(latencies) / args.duration,
        "locate_p50_ms": round(statistics.median(latencies) * 1000, 2),
        "locate_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "locate_max_ms": round(max(latencies) * 1000, 2),
        "tracker_locate_p50_ms_at_most": quantile_from_buckets(histogram, 0.5) * 1000,
        "tracker_locate_p99_ms_at_most": quantile_from_buckets(histogram, 0.99) * 1000,
        "tracker_cpu_percent": round(cpu * 100, 1),
        "tracker_rss_mib": round(memory_after["VmRSS"] / MiB, 1),
        "tracker_rss_before_load_mib": round(memory_before["VmRSS"] / MiB, 1),
        "tracker_peak_rss_mib": round(memory_after["VmHWM"] / MiB, 1),
        "heartbeats_per_second": shape.nodes / args.heartbeat_interval,
    }
    print(
        f"Locate: {figures['locate_calls']} calls at {args.rate:.0f}/s:"
        f" p50 {figures['locate_p50_ms']} ms, p99 {figures['locate_p99_ms']} ms,"
        f" max {figures['locate_max_ms']} ms (as the caller saw it);"
        f" tracker histogram p50 <= {figures['tracker_locate_p50_ms_at_most']:g} ms,"
        f" p99 <= {figures['tracker_locate_p99_ms_at_most']:g} ms"
    )
    print(
        f"tracker: CPU {figures['tracker_cpu_percent']}% of one core"
        f" ({figures['heartbeats_per_second']:.0f} heartbeats/s + Locate),"
        f" RSS {figures['tracker_rss_mib']} MiB (peak {figures['tracker_peak_rss_mib']} MiB)"
    )
    print(json.dumps(figures))
    ok = figures["locate_p99_ms"] < 20 and figures["tracker_peak_rss_mib"] < 500
    print("targets (p99 < 20 ms, RSS < 500 MiB):", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
