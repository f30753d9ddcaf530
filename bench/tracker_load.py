"""Tracker load benchmark, run by hand: `python -m bench.tracker_load`.

Starts `--replicas` real `distributed-images tracker` processes (on `--store memory`, one; on
`--store redis`, any number sharing a redis-server the benchmark starts on a free loopback port),
then:
  1. a worker process joins `--nodes` simulated nodes, spread over the replicas, holds a Tasks
     stream open for each (as real nodes do) and heartbeats every node once per
     `--heartbeat-interval`;
  2. the nodes announce `--chunks` distinct chunks (blobs of `--chunks-per-blob`, each held by
     `--holders` nodes in 3 zones) and their metainfo is published;
  3. for `--duration` seconds, `--rate` Locate calls per second (open loop: each call starts on
     schedule, however slow the previous ones), spread over the replicas, ask for a random blob
     from a random node, a tenth of them for a cold blob that takes leases. With `--find-max`
     the rate doubles, run after run, until the p99 reaches 20 ms: the last rate under it is
     the highest these replicas sustain.
It prints Locate latency as the caller saw it (p50/p99/max) and as the trackers measured it
(their histograms), the trackers' CPU use and RSS during the steady phase, with Redis its CPU
and the Redis commands and bytes each Locate cost (the heartbeats' own traffic, measured in a
quiet window of the same length before, taken off), and a JSON line per run.
Targets (issue 3): p99 under 20 ms, RSS under 500 MiB. The machine should be otherwise idle:
the caller, the simulated nodes and the trackers share it, and any other load shows up as
latency. For diagnosis, BENCH_TRACE=1 prints each Locate's start and latency to stderr, and
BENCH_TRACKER names a script to run as the tracker instead of `distributed-images tracker`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
import redis
from prometheus_client.parser import text_string_to_metric_families

from tracker.client import CHANNEL_OPTIONS, HeldBlob, NodeAddress, TrackerClient
from tracker.errors import MetainfoUnconfirmed, TrackerError
from tracker.v1 import tracker_pb2 as pb
from tracker.v1 import tracker_pb2_grpc

ZONES = ("zone-a", "zone-b", "zone-c")
METAINFO_BYTES = 450  # a 16-piece chunk torrent's metainfo, as node.p2p.metainfo writes it
MiB = 1 << 20
HEARTBEATS_IN_FLIGHT = 1024


@dataclass(frozen=True)
class Shape:
    nodes: int
    chunks: int
    chunks_per_blob: int
    holders: int

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
    """Blob b is held by `holders` nodes; every node holds the same number of blobs."""
    return [(b * shape.holders + k) % shape.nodes for k in range(shape.holders)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- the tracker process ----


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RedisProcess:
    """Debian's redis-server on a free loopback port, without persistence."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
        self.log = (workdir / "redis.log").open("wb")
        self.process = subprocess.Popen(argv, stdout=self.log, stderr=self.log)
        self.client = redis.Redis(port=self.port, socket_timeout=30)

    def wait_ready(self) -> None:
        for _ in range(200):
            try:
                if self.client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise TimeoutError("redis-server did not answer")

    def counters(self) -> dict[str, float]:
        """Commands run (scripts' own included), bytes in and out, CPU seconds."""
        stats = self.client.info("stats")
        commands = self.client.info("commandstats")
        return {
            "commands": float(sum(c["calls"] for c in commands.values())),
            "bytes": float(stats["total_net_input_bytes"] + stats["total_net_output_bytes"]),
            "cpu": cpu_seconds(self.process.pid),
            "memory": float(self.client.info("memory")["used_memory"]),
        }

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(15)
        self.log.close()


class TrackerProcess:
    def __init__(
        self, workdir: Path, heartbeat_interval: float, store: str = "memory", index: int = 0
    ) -> None:
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
            *("--store", store),
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DI_")}
        self.log = (workdir / f"tracker{index}.log").open("wb")
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
        return cpu_seconds(self.process.pid)

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


def heartbeat_worker(
    addresses: list[str], shape: Shape, interval: float, ready: Any, stop: Any
) -> None:
    # The simulated nodes would be on other hosts: on a small machine, let the tracker and the
    # measured caller go first.
    os.nice(10)
    asyncio.run(_heartbeats(addresses, shape, interval, ready, stop))


async def _heartbeats(
    addresses: list[str], shape: Shape, interval: float, ready: Any, stop: Any
) -> None:
    """Node i talks to replica i % replicas, over one of 16 channels per replica. A node
    heartbeats from the moment it joined: joining them all may take longer than the node TTL."""
    clients = [TrackerClient(a, timeout=30) for _ in range(16) for a in addresses]
    client_of = [clients[i % len(clients)] for i in range(shape.nodes)]
    limit = asyncio.Semaphore(64)
    joined = [False] * shape.nodes
    streams: list[asyncio.Task[None]] = []

    async def join(i: int) -> None:
        async with limit:
            await client_of[i].join(node_address(i), "bench")
        joined[i] = True
        streams.append(asyncio.create_task(_drain(client_of[i].tasks(node_id(i)))))

    async def join_all() -> None:
        await asyncio.gather(*(join(i) for i in range(shape.nodes)))
        ready.set()

    joining = asyncio.create_task(join_all())
    start = time.monotonic()
    beat = 0
    failures = 0
    in_flight: set[asyncio.Task[None]] = set()

    async def heartbeat(i: int) -> None:
        nonlocal failures
        try:
            await client_of[i].heartbeat(node_id(i))
        except TrackerError:
            failures += 1

    # Open loop, as real nodes beat on their own clocks: each heartbeat leaves on schedule,
    # however long the previous ones take (up to HEARTBEATS_IN_FLIGHT unanswered).
    while not stop.is_set():
        i = beat % shape.nodes
        due = start + beat * interval / shape.nodes
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        if not joined[i]:
            beat += 1
            continue
        if len(in_flight) >= HEARTBEATS_IN_FLIGHT:
            await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(heartbeat(i))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        beat += 1
    await asyncio.gather(*in_flight)
    await joining
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


async def announce_and_publish(addresses: list[str], shape: Shape, publish: bool) -> float:
    clients = [TrackerClient(a, timeout=60) for _ in range(8) for a in addresses]
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
        """Two holders publish the same metainfo: a node without the chunk's lease is a
        witness, taken once a second one agrees (`tracker.witnesses`)."""
        metainfo = b"d4:info" + random.randbytes(METAINFO_BYTES - 8) + b"e"
        client = clients[(b + c) % len(clients)]
        first, second = holders(shape, b)[:2]
        async with limit:
            with contextlib.suppress(MetainfoUnconfirmed):
                await client.publish(
                    node_id(first), digest(b), shape.blob_size, shape.chunks_per_blob, c, metainfo
                )
            await client.publish(
                node_id(second), digest(b), shape.blob_size, shape.chunks_per_blob, c, metainfo
            )

    await asyncio.gather(*(announce(n, blobs) for n, blobs in held.items()))
    if publish:
        work = [(b, c) for b in range(shape.blobs) for c in all_chunks]
        for i in range(0, len(work), 5000):
            await asyncio.gather(*(publish_one(b, c) for b, c in work[i : i + 5000]))
    for client in clients:
        await client.close()
    return time.monotonic() - start


async def locate_load(
    addresses: list[str], shape: Shape, rate: float, duration: float
) -> list[float]:
    """Latency of Locate as a caller sees it: request out, response bytes in and decoded. The raw
    stub is used, so the figure is the tracker's and the wire's, not the client's conversion.
    Calls go to the replicas in turn."""
    channels = [
        grpc.aio.insecure_channel(a, options=CHANNEL_OPTIONS) for _ in range(4) for a in addresses
    ]
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


@dataclass
class Run:
    """The processes of one benchmark run."""

    trackers: list[TrackerProcess]
    redis: RedisProcess | None
    shape: Shape
    heartbeat_interval: float

    @property
    def addresses(self) -> list[str]:
        return [t.address for t in self.trackers]


def measure(run: Run, rate: float, duration: float, quiet: float) -> dict[str, Any]:
    """One steady phase of Locate calls at `rate`, after a quiet window of `quiet` seconds
    (heartbeats only) that tells the heartbeats' share of Redis's work."""
    redis_quiet: dict[str, float] = {}
    if run.redis is not None and quiet > 0:
        before = run.redis.counters()
        time.sleep(quiet)
        after = run.redis.counters()
        redis_quiet = {k: (after[k] - before[k]) / quiet for k in ("commands", "bytes", "cpu")}
    memory_before = [t.memory() for t in run.trackers]
    histograms_before = [t.locate_histogram() for t in run.trackers]
    cpu_before, wall_before = [t.cpu_seconds() for t in run.trackers], time.monotonic()
    redis_before = run.redis.counters() if run.redis else {}
    latencies = asyncio.run(locate_load(run.addresses, run.shape, rate, duration))
    wall = time.monotonic() - wall_before
    cpu = [(t.cpu_seconds() - c) / wall for t, c in zip(run.trackers, cpu_before, strict=True)]
    redis_after = run.redis.counters() if run.redis else {}
    histogram: dict[float, float] = {}
    for tracker, before_h in zip(run.trackers, histograms_before, strict=True):
        for le, count in tracker.locate_histogram().items():
            histogram[le] = histogram.get(le, 0.0) + count - before_h.get(le, 0.0)
    memory_after = [t.memory() for t in run.trackers]
    figures: dict[str, Any] = {
        "store": "redis" if run.redis else "memory",
        "replicas": len(run.trackers),
        "nodes": run.shape.nodes,
        "chunks": run.shape.chunks,
        "locate_rate": rate,
        "locate_calls": len(latencies),
        "locate_achieved_per_second": round(len(latencies) / duration, 1),
        "locate_p50_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
        "locate_p99_ms": round(percentile(latencies, 0.99) * 1000, 2) if latencies else None,
        "locate_max_ms": round(max(latencies) * 1000, 2) if latencies else None,
        "tracker_locate_p50_ms_at_most": quantile_from_buckets(histogram, 0.5) * 1000,
        "tracker_locate_p99_ms_at_most": quantile_from_buckets(histogram, 0.99) * 1000,
        "tracker_cpu_percent": [round(c * 100, 1) for c in cpu],
        "tracker_rss_mib": [round(m["VmRSS"] / MiB, 1) for m in memory_after],
        "tracker_rss_before_load_mib": [round(m["VmRSS"] / MiB, 1) for m in memory_before],
        "tracker_peak_rss_mib": [round(m["VmHWM"] / MiB, 1) for m in memory_after],
        "heartbeats_per_second": run.shape.nodes / run.heartbeat_interval,
    }
    if run.redis is not None and latencies:
        spent = {k: redis_after[k] - redis_before[k] for k in ("commands", "bytes", "cpu")}
        own = {k: spent[k] - redis_quiet.get(k, 0.0) * wall for k in spent}
        figures |= {
            "redis_cpu_percent": round(spent["cpu"] / wall * 100, 1),
            "redis_commands_per_locate": round(own["commands"] / len(latencies), 1),
            "redis_bytes_per_locate": round(own["bytes"] / len(latencies)),
            "redis_quiet_commands_per_second": round(redis_quiet.get("commands", 0.0)),
            "redis_used_memory_mib": round(redis_after["memory"] / MiB, 1),
        }
    return figures


def report(figures: dict[str, Any]) -> None:
    print(
        f"Locate ({figures['store']}, {figures['replicas']} replica(s)):"
        f" {figures['locate_calls']} calls at {figures['locate_rate']:.0f}/s:"
        f" p50 {figures['locate_p50_ms']} ms, p99 {figures['locate_p99_ms']} ms,"
        f" max {figures['locate_max_ms']} ms (as the caller saw it);"
        f" tracker histogram p50 <= {figures['tracker_locate_p50_ms_at_most']:g} ms,"
        f" p99 <= {figures['tracker_locate_p99_ms_at_most']:g} ms"
    )
    print(
        f"trackers: CPU {figures['tracker_cpu_percent']}% of one core"
        f" ({figures['heartbeats_per_second']:.0f} heartbeats/s + Locate),"
        f" RSS {figures['tracker_rss_mib']} MiB (peak {figures['tracker_peak_rss_mib']} MiB)"
    )
    if "redis_cpu_percent" in figures:
        print(
            f"redis: CPU {figures['redis_cpu_percent']}%,"
            f" {figures['redis_commands_per_locate']} commands and"
            f" {figures['redis_bytes_per_locate']} bytes per Locate,"
            f" {figures['redis_quiet_commands_per_second']} commands/s without Locate"
            " (heartbeats, sweeps, notifications),"
            f" {figures['redis_used_memory_mib']} MiB"
        )
    print(json.dumps(figures))


P99_TARGET_MS = 20.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracker_load", description=__doc__)
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--chunks-per-blob", type=int, default=40)
    parser.add_argument("--holders", type=int, default=20, help="nodes holding each blob")
    parser.add_argument("--store", choices=("memory", "redis"), default="memory")
    parser.add_argument("--replicas", type=int, default=1, help="tracker replicas (redis only)")
    parser.add_argument("--rate", type=float, default=200.0, help="Locate calls per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of steady load")
    parser.add_argument(
        "--find-max", action="store_true", help="double the rate until p99 reaches 20 ms"
    )
    parser.add_argument("--heartbeat-interval", type=float, default=5.0)
    parser.add_argument("--no-publish", action="store_true", help="announce only, no metainfo")
    args = parser.parse_args(argv)
    if args.replicas > 1 and args.store != "redis":
        parser.error("--replicas > 1 needs --store redis")
    shape = Shape(args.nodes, args.chunks, args.chunks_per_blob, args.holders)

    with tempfile.TemporaryDirectory(prefix="tracker-load-") as tmp:
        workdir = Path(tmp)
        store = RedisProcess(workdir) if args.store == "redis" else None
        trackers: list[TrackerProcess] = []
        spawn = multiprocessing.get_context("spawn")
        ready, stop = spawn.Event(), spawn.Event()
        worker = None
        try:
            if store is not None:
                store.wait_ready()
            url = store.url if store else "memory"
            for i in range(args.replicas):
                trackers.append(TrackerProcess(workdir, args.heartbeat_interval, url, i))
            for tracker in trackers:
                tracker.wait_healthy()
            run = Run(trackers, store, shape, args.heartbeat_interval)
            worker = spawn.Process(
                target=heartbeat_worker,
                args=(run.addresses, shape, args.heartbeat_interval, ready, stop),
            )
            worker.start()
            t0 = time.monotonic()
            if not ready.wait(600):
                raise TimeoutError("the nodes did not join")
            joined = time.monotonic() - t0
            print(f"{shape.nodes} nodes joined with Tasks streams open in {joined:.1f} s")
            setup = asyncio.run(announce_and_publish(run.addresses, shape, not args.no_publish))
            print(
                f"{shape.blobs} blobs x {shape.chunks_per_blob} chunks = {shape.chunks} chunks,"
                f" {shape.holders} holders each, announced"
                f"{'' if args.no_publish else ' and published'} in {setup:.1f} s"
            )
            rate, best = args.rate, None
            quiet = min(10.0, args.duration / 3) if store else 0.0
            while True:
                figures = measure(run, rate, args.duration, quiet)
                report(figures)
                p99 = figures["locate_p99_ms"]
                under = p99 is not None and p99 < P99_TARGET_MS
                achieved = figures["locate_achieved_per_second"] >= 0.95 * rate
                if under and achieved:
                    best = rate
                if not args.find_max or not (under and achieved):
                    break
                rate *= 2
            if args.find_max:
                print(
                    f"highest rate with p99 under {P99_TARGET_MS:g} ms:"
                    f" {best if best is not None else 'none tried'} Locate/s"
                    f" ({args.replicas} replica(s), {args.store})"
                )
        finally:
            stop.set()
            if worker is not None:
                worker.join(30)
                if worker.is_alive():
                    worker.kill()
            for tracker in trackers:
                tracker.stop()
            if store is not None:
                store.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
