"""Tracker load benchmark, run by hand: `python -m bench.tracker_load`.

Starts `--replicas` real `distributed-images tracker` processes (on `--store memory`, one; on
`--store redis`, any number sharing a redis-server the benchmark starts on a free loopback port),
then:
  1. `--workers` processes simulate `--nodes` nodes, spread over the replicas: they join them
     at `--join-rate` a second at most, hold a Tasks stream open for each (as real nodes do)
     and heartbeat every node once per `--heartbeat-interval` (the trackers get `--node-ttl`
     three times it, and `--silent-after` half that, as their defaults are to 5 s); a node whose
     heartbeat is refused (it expired) joins again and announces anew, as a real node does;
  2. the nodes announce `--chunks` distinct chunks (blobs of `--chunks-per-blob`, each held by
     `--holders` nodes in 3 zones) and their metainfo is published, from as many processes;
     joins and these calls wait while a heartbeat has taken over 2 s (`LAGGING`);
  3. for `--duration` seconds, `--rate` Locate calls per second (open loop: each call starts on
     schedule, however slow the previous ones), spread over the replicas, ask for a random blob
     from a random node, a tenth of them for a cold blob that takes leases. With `--find-max`
     the rate doubles, run after run, until the p99 reaches 20 ms: the last rate under it is
     the highest these replicas sustain.
It prints Locate latency as the caller saw it (p50/p99/max) and as the trackers measured it
(their histograms), the trackers' CPU use and RSS during the steady phase, how the heartbeats
went meanwhile (answered, failed, how late the simulated nodes sent them), with Redis its CPU
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
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import redis
from prometheus_client.parser import text_string_to_metric_families

from tracker.client import CHANNEL_OPTIONS, HeldBlob, NodeAddress, TrackerClient
from tracker.errors import MetainfoUnconfirmed, NodeUnknown, TrackerError
from tracker.v1 import tracker_pb2 as pb
from tracker.v1 import tracker_pb2_grpc

ZONES = ("zone-a", "zone-b", "zone-c")
METAINFO_BYTES = 450  # a 16-piece chunk torrent's metainfo, as node.p2p.metainfo writes it
MiB = 1 << 20
HEARTBEATS_IN_FLIGHT = 1024
JOINS_IN_FLIGHT = 16  # per worker process
SETUP_IN_FLIGHT = 8  # announces or publishes per setting-up process
SETUP_TRIES = 10
TTL_HEARTBEATS = 3  # the tracker forgets a node after this many heartbeat intervals (its default)
# Seconds a heartbeat may take (answered, or still waiting) before joins and the inventory's
# setup wait for the tracker to catch up. A tracker whose loop falls behind its calls has them
# queued in gRPC, which cancels a call that waited 30 s (grpc.server_max_unrequested_time_in_server)
# unanswered: the heartbeats of the nodes joined already come back CANCELLED, those nodes go
# silent, expire and join again with their inventory, and the run never settles. The setup
# stands for state a cluster builds over hours; the heartbeats are the load being measured.
LAGGING = 2.0


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
            *("--node-ttl", str(heartbeat_interval * TTL_HEARTBEATS)),
            *("--silent-after", str(heartbeat_interval * TTL_HEARTBEATS / 2)),
            *("--log-level", "warning"),
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


# ---- the simulated nodes: worker processes (their CPU is not the measured caller's) ----


@dataclass
class Beats:
    """How the simulated nodes' heartbeats go, counted across the worker processes."""

    sent: Any  # answered
    failed: Any  # refused (an unknown node: it expired, and joins again) or failed
    rejoined: Any  # nodes that joined again after their heartbeat was refused
    late: Any  # the furthest behind schedule one left since last reset, in seconds
    joined: list[Any]  # one event per worker: all its nodes joined
    stop: Any
    lag: Any  # per worker: its slowest heartbeat of the last second, answered or waiting

    def lagging(self) -> bool:
        return bool(max(self.lag) > LAGGING)

    async def caught_up(self) -> float:
        """Wait while the heartbeats lag; returns the seconds waited."""
        start = time.monotonic()
        while self.lagging():
            await asyncio.sleep(0.25)
        return time.monotonic() - start

    def add(self, sent: int, failed: int, rejoined: int, late: float) -> None:
        for counter, value in ((self.sent, sent), (self.failed, failed), (self.rejoined, rejoined)):
            with counter.get_lock():
                counter.value += value
        with self.late.get_lock():
            self.late.value = max(self.late.value, late)

    def take(self) -> dict[str, float]:
        """The counts so far, and the lateness since the last call."""
        with self.late.get_lock():
            late, self.late.value = self.late.value, 0.0
        counts = {"sent": self.sent.value, "failed": self.failed.value}
        return counts | {"rejoined": self.rejoined.value, "late": late}


class NodeWorkers:
    """`count` processes; worker w simulates the nodes i with i % count == w: it joins them at
    its share of `join_rate`, holds a Tasks stream open for each (as real nodes do) and
    heartbeats each once per `interval`."""

    def __init__(
        self, addresses: list[str], shape: Shape, interval: float, count: int, join_rate: float
    ) -> None:
        spawn = multiprocessing.get_context("spawn")
        self.beats = Beats(
            spawn.Value("q", 0),
            spawn.Value("q", 0),
            spawn.Value("q", 0),
            spawn.Value("d", 0.0),
            [spawn.Event() for _ in range(count)],
            spawn.Event(),
            spawn.Array("d", count),
        )
        self.processes = []
        for w in range(count):
            args = (addresses, shape, interval, w, count, join_rate / count, self.beats)
            process = spawn.Process(target=node_worker, args=args)
            process.start()
            self.processes.append(process)

    def wait_joined(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(e.wait(max(0.0, deadline - time.monotonic())) for e in self.beats.joined)

    def close(self) -> None:
        self.beats.stop.set()
        for process in self.processes:
            process.join(30)
            if process.is_alive():
                process.kill()


def node_worker(
    addresses: list[str],
    shape: Shape,
    interval: float,
    w: int,
    count: int,
    join_rate: float,
    beats: Beats,
) -> None:
    # The simulated nodes would be on other hosts: on a small machine, let the tracker and the
    # measured caller go first.
    os.nice(10)
    nodes = list(range(w, shape.nodes, count))
    asyncio.run(_simulate(addresses, shape, nodes, interval, join_rate, beats, w))


async def _simulate(
    addresses: list[str],
    shape: Shape,
    nodes: list[int],
    interval: float,
    join_rate: float,
    beats: Beats,
    w: int,
) -> None:
    """Node i talks to replica i % replicas, over one of 8 channels per replica. Joins leave at
    `join_rate` a second at most, JOINS_IN_FLIGHT at most unanswered; a node heartbeats from the
    moment it joined (joining them all may take longer than the node TTL)."""
    clients = [TrackerClient(a, timeout=30) for _ in range(8) for a in addresses]
    held = inventories(shape, set(nodes))
    joined: set[int] = set()
    streams: list[asyncio.Task[None]] = []
    pending: set[asyncio.Task[None]] = set()

    limit = asyncio.Semaphore(JOINS_IN_FLIGHT)

    async def join(i: int) -> None:
        client = clients[i % len(clients)]
        async with limit:
            await client.join(node_address(i), "bench")
        joined.add(i)
        streams.append(asyncio.create_task(_drain(client.tasks(node_id(i)))))

    async def join_all() -> None:
        due = time.monotonic()
        for i in nodes:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await beats.caught_up()
            due = max(due, time.monotonic() - 1.0) + 1 / join_rate
            # At most JOINS_IN_FLIGHT: joins past what the tracker answers would queue up in
            # it, ahead of the heartbeats of the nodes joined already.
            async with limit:
                pass
            task = asyncio.create_task(join(i))
            pending.add(task)
            task.add_done_callback(pending.discard)
        while pending:
            await asyncio.gather(*pending)
        beats.joined[w].set()

    joining = asyncio.create_task(join_all())
    sent = failed = 0
    late = 0.0
    in_flight: set[asyncio.Task[None]] = set()

    kinds: set[str] = set()
    rejoined = 0
    waiting: dict[int, float] = {}  # node -> when its heartbeat in flight left
    slowest = 0.0

    async def heartbeat(i: int) -> None:
        """As a real node: a refused heartbeat (the node expired) makes it join again."""
        nonlocal sent, failed, rejoined, slowest
        waiting[i] = started = time.monotonic()
        try:
            await clients[i % len(clients)].heartbeat(node_id(i))
            sent += 1
            return
        except TrackerError as e:
            failed += 1
            if type(e).__name__ not in kinds:  # say once what went wrong
                kinds.add(type(e).__name__)
                print(f"a heartbeat failed: {type(e).__name__}: {e}", file=sys.stderr)
            if not isinstance(e, NodeUnknown):
                return
        finally:
            waiting.pop(i, None)
            slowest = max(slowest, time.monotonic() - started)
        with contextlib.suppress(TrackerError):
            await join(i)
            if i in held:
                await clients[i % len(clients)].announce(node_id(i), inventory(shape, held[i]))
            rejoined += 1

    async def report_lag() -> None:
        """Every half second, even while this loop waits for heartbeats in flight to end."""
        nonlocal slowest
        while True:
            await asyncio.sleep(0.5)
            now = time.monotonic()
            beats.lag[w] = max(slowest, now - min(waiting.values(), default=now))
            slowest = 0.0

    reporting = asyncio.create_task(report_lag())
    # Open loop, as real nodes beat on their own clocks: each heartbeat leaves on schedule,
    # however long the previous ones take (up to HEARTBEATS_IN_FLIGHT unanswered).
    start = last_report = time.monotonic()
    beat = 0
    while not beats.stop.is_set():
        i = nodes[beat % len(nodes)]
        due = start + beat * interval / len(nodes)
        now = time.monotonic()
        await asyncio.sleep(max(0.0, due - now))
        late = max(late, now - due)
        if now - last_report > 1.0:
            last_report = now
            beats.add(sent, failed, rejoined, late)
            sent = failed = rejoined = 0
            late = 0.0
        beat += 1
        if i not in joined:
            continue
        if len(in_flight) >= HEARTBEATS_IN_FLIGHT:
            await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(heartbeat(i))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight)
    beats.add(sent, failed, rejoined, late)
    joining.cancel()
    reporting.cancel()
    for task in streams:
        task.cancel()
    await asyncio.gather(joining, reporting, *streams, return_exceptions=True)
    for client in clients:
        await client.close()


async def _drain(orders: Any) -> None:
    with contextlib.suppress(TrackerError):  # the node joined again, or its replica failed
        async for _ in orders:
            pass


# ---- setup and the measured Locate load ----


def set_up(addresses: list[str], shape: Shape, publish: bool, parts: int, beats: Beats) -> float:
    """Announce every node's inventory and publish every chunk's metainfo, from `parts`
    processes at once (each takes the nodes and blobs i with i % parts == its part), each call
    after the heartbeats caught up (`LAGGING`); returns the seconds it took."""
    spawn = multiprocessing.get_context("spawn")
    start = time.monotonic()
    processes = [
        spawn.Process(target=set_up_part, args=(addresses, shape, publish, part, parts, beats))
        for part in range(parts)
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
            if process.exitcode != 0:
                raise RuntimeError(f"setting the inventory up failed ({process.exitcode})")
    finally:
        for process in processes:
            process.kill()
    return time.monotonic() - start


def set_up_part(
    addresses: list[str], shape: Shape, publish: bool, part: int, parts: int, beats: Beats
) -> None:
    os.nice(15)  # after the simulated nodes' heartbeats, which keep them members meanwhile
    waited = asyncio.run(announce_and_publish(addresses, shape, publish, part, parts, beats))
    if waited > 0:
        print(f"setup part {part}: waited {waited:.0f} s in all for the heartbeats to catch up")


def inventory(shape: Shape, blobs: list[int]) -> list[HeldBlob]:
    all_chunks = tuple(range(shape.chunks_per_blob))
    return [HeldBlob(digest(b), shape.blob_size, len(all_chunks), all_chunks) for b in blobs]


def inventories(shape: Shape, nodes: Collection[int]) -> dict[int, list[int]]:
    """The blobs each of `nodes` holds."""
    held: dict[int, list[int]] = {}
    for b in range(shape.blobs):
        for n in holders(shape, b):
            if n in nodes:
                held.setdefault(n, []).append(b)
    return held


async def patiently(call: Callable[[], Awaitable[Any]]) -> Any:
    """The call, tried again while its node is unknown: a node whose heartbeats were lost
    expired, and its worker makes it join again and announce anew."""
    for _ in range(SETUP_TRIES - 1):
        try:
            return await call()
        except NodeUnknown:
            await asyncio.sleep(1.0)
    return await call()


async def announce_and_publish(
    addresses: list[str], shape: Shape, publish: bool, part: int, parts: int, beats: Beats
) -> float:
    """Returns the seconds its calls waited for the heartbeats to catch up, in all."""
    waited = 0.0
    clients = [TrackerClient(a, timeout=60) for _ in range(8) for a in addresses]
    limit = asyncio.Semaphore(SETUP_IN_FLIGHT)
    held = inventories(shape, range(part, shape.nodes, parts))
    all_chunks = tuple(range(shape.chunks_per_blob))

    async def announce(n: int, blobs: list[int]) -> None:
        nonlocal waited
        async with limit:
            waited += await beats.caught_up()
            client = clients[n % len(clients)]
            await patiently(lambda: client.announce(node_id(n), inventory(shape, blobs)))

    async def publish_one(b: int, c: int) -> None:
        """Two holders publish the same metainfo: a node without the chunk's lease is a
        witness, taken once a second one agrees (`tracker.witnesses`)."""
        metainfo = b"d4:info" + random.randbytes(METAINFO_BYTES - 8) + b"e"
        client = clients[(b + c) % len(clients)]
        first, second = holders(shape, b)[:2]

        def by(n: int) -> Callable[[], Awaitable[None]]:
            return lambda: client.publish(
                node_id(n), digest(b), shape.blob_size, shape.chunks_per_blob, c, metainfo
            )

        nonlocal waited
        async with limit:
            waited += await beats.caught_up()
            # Taken at the second witness; a witness whose node had expired meanwhile (its
            # call refused after the tracker heard it) is heard again.
            for n in (first, second, first):
                with contextlib.suppress(MetainfoUnconfirmed):
                    await patiently(by(n))
                    return
            await patiently(by(second))

    await asyncio.gather(*(announce(n, blobs) for n, blobs in held.items()))
    if publish:
        work = [(b, c) for b in range(part, shape.blobs, parts) for c in all_chunks]
        for i in range(0, len(work), 5000):
            await asyncio.gather(*(publish_one(b, c) for b, c in work[i : i + 5000]))
    for client in clients:
        await client.close()
    return waited


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
    beats: Beats

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
    beats_before = run.beats.take()
    latencies = asyncio.run(locate_load(run.addresses, run.shape, rate, duration))
    wall = time.monotonic() - wall_before
    beats = run.beats.take()
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
        "heartbeat_interval_s": run.heartbeat_interval,
        "heartbeats_per_second": run.shape.nodes / run.heartbeat_interval,
        "heartbeats_answered_per_second": round((beats["sent"] - beats_before["sent"]) / wall),
        "heartbeats_failed": int(beats["failed"] - beats_before["failed"]),
        "nodes_rejoined": int(beats["rejoined"] - beats_before["rejoined"]),
        "heartbeats_late_s_max": round(beats["late"], 2),
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
    print(
        f"heartbeats (every {figures['heartbeat_interval_s']:g} s, node TTL"
        f" {figures['heartbeat_interval_s'] * TTL_HEARTBEATS:g} s):"
        f" {figures['heartbeats_answered_per_second']}/s answered,"
        f" {figures['heartbeats_failed']} failed ({figures['nodes_rejoined']} nodes had expired"
        " and joined again), the latest left"
        f" {figures['heartbeats_late_s_max']} s behind schedule"
    )
    if figures["heartbeats_failed"]:
        print(
            f"warning: heartbeats failed: nodes expired, fewer than {figures['nodes']} are members"
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
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=5.0,
        help="seconds between a node's heartbeats; the trackers get --node-ttl 3 times it",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes simulating the nodes (default: one per 2,500 nodes, up to 4)",
    )
    parser.add_argument(
        "--join-rate", type=float, default=400.0, help="nodes joining per second, at most"
    )
    parser.add_argument("--no-publish", action="store_true", help="announce only, no metainfo")
    args = parser.parse_args(argv)
    if args.replicas > 1 and args.store != "redis":
        parser.error("--replicas > 1 needs --store redis")
    shape = Shape(args.nodes, args.chunks, args.chunks_per_blob, args.holders)

    with tempfile.TemporaryDirectory(prefix="tracker-load-") as tmp:
        workdir = Path(tmp)
        store = RedisProcess(workdir) if args.store == "redis" else None
        trackers: list[TrackerProcess] = []
        workers = None
        try:
            if store is not None:
                store.wait_ready()
            url = store.url if store else "memory"
            for i in range(args.replicas):
                trackers.append(TrackerProcess(workdir, args.heartbeat_interval, url, i))
            for tracker in trackers:
                tracker.wait_healthy()
            addresses = [t.address for t in trackers]
            count = args.workers or max(1, min(4, -(-shape.nodes // 2500)))
            workers = NodeWorkers(addresses, shape, args.heartbeat_interval, count, args.join_rate)
            run = Run(trackers, store, shape, args.heartbeat_interval, workers.beats)
            t0 = time.monotonic()
            if not workers.wait_joined(600):
                raise TimeoutError("the nodes did not join")
            joined = time.monotonic() - t0
            print(
                f"{shape.nodes} nodes joined with Tasks streams open in {joined:.1f} s"
                f" ({count} worker processes, heartbeats every {args.heartbeat_interval:g} s)"
            )
            setup = set_up(addresses, shape, not args.no_publish, count, workers.beats)
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
            if workers is not None:
                workers.close()
            for tracker in trackers:
                tracker.stop()
            if store is not None:
                store.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
