"""What one tracker call costs its store, run by hand: `python -m bench.tracker_costs`.

Runs the tracker's rules (`tracker.cluster.Cluster`, no gRPC) in this process on each store: in
memory, and on a redis-server it starts on a free loopback port. `--nodes` nodes in 3 zones hold
`--blobs` blobs of `--chunks-per-blob` chunks, whole, `--holders` nodes each, every chunk's
metainfo published; then it times `--calls` calls of each kind and, on Redis, reads Redis's own
counters around them (INFO commandstats, stats and cpu): commands, bytes in and out and CPU per
call. The kinds: a Locate of a blob held whole, with its reply built as the service builds it;
an Announce of one chunk of a blob being pulled; a node joining and announcing 20 whole blobs; a
Locate of a cold blob that takes leases; a heartbeat. Redis's CPU includes its network work, and
the machine's other load shows in every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from tempfile import TemporaryDirectory

import redis

from bench.tracker_load import RedisProcess
from tracker.cluster import Cluster, Holding, Load
from tracker.service import placement_message
from tracker.store.config import StoreConfig, open_store
from tracker.store.memory import MemoryStore

ZONES = ("zone-a", "zone-b", "zone-c")
INVENTORY_BLOBS = 20
METAINFO_BYTES = 450


def digest(b: int) -> str:
    return f"sha256:{b:064x}"


def node_id(i: int) -> str:
    return f"node-{i:05d}"


class Counters:
    """Redis's counters: commands, bytes in and out, CPU seconds."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def read(self) -> tuple[float, float, float]:
        commands = self.client.info("commandstats")
        stats = self.client.info("stats")
        cpu = self.client.info("cpu")
        return (
            float(sum(c["calls"] for c in commands.values())),
            float(stats["total_net_input_bytes"] + stats["total_net_output_bytes"]),
            float(cpu["used_cpu_sys"] + cpu["used_cpu_user"]),
        )


class Costs:
    def __init__(self, args: argparse.Namespace, counters: Counters | None) -> None:
        self.args = args
        self.counters = counters
        self.size = args.chunks_per_blob * 4 << 20
        self.rng = random.Random(1)

    async def measure(self, name: str, calls: int, call: Callable[[int], Awaitable[None]]) -> None:
        before = self.counters.read() if self.counters else None
        start = time.perf_counter()
        for k in range(calls):
            await call(k)
        wall = (time.perf_counter() - start) / calls
        line = f"  {name}: the caller waited {wall * 1000:.2f} ms"
        if self.counters and before:
            after = self.counters.read()
            commands, moved, cpu = ((a - b) / calls for a, b in zip(after, before, strict=True))
            line += (
                f"; Redis: {commands:.1f} commands, {moved / 1000:.1f} KB,"
                f" {cpu * 1000:.2f} ms of CPU"
            )
        print(line, flush=True)

    async def run(self, cluster: Cluster) -> None:
        args, rng, size = self.args, self.rng, self.size
        chunks = tuple(range(args.chunks_per_blob))
        await cluster.start()
        for i in range(args.nodes):
            host = f"10.0.{i // 250}.{i % 250 + 1}"
            await cluster.join(node_id(i), f"{host}:8080", f"{host}:6881", ZONES[i % 3], "b")
        held: dict[int, list[int]] = {}
        for b in range(args.blobs):
            for k in range(args.holders):
                held.setdefault((b * args.holders + k) % args.nodes, []).append(b)
        for n, blobs in held.items():
            inventory = [Holding(digest(b), size, len(chunks), chunks) for b in blobs]
            await cluster.announce(node_id(n), inventory, [])
        for b in range(args.blobs):
            for c in chunks:
                metainfo = b"d4:info" + rng.randbytes(METAINFO_BYTES - 8) + b"e"
                await cluster.store.blobs.publish(digest(b), c, metainfo)

        async def locate(cold: bool) -> None:
            node = node_id(rng.randrange(args.nodes))
            d = digest(rng.randrange(args.blobs) + (1 << 60 if cold else 0))
            views = await cluster.locate(node, d, size, len(chunks), (), 4 if cold else 0)
            await placement_message(cluster, d, len(chunks), views)

        async def announce_one(k: int) -> None:
            pulled = Holding(digest(args.blobs + k % 10), size, len(chunks), (k // 10,))
            await cluster.announce(node_id(k % args.nodes), [pulled], [])

        async def join_and_announce(k: int) -> None:
            node = f"node-new{k}"
            await cluster.join(node, "10.9.0.1:8080", "10.9.0.1:6881", ZONES[0], "b")
            first = k * INVENTORY_BLOBS % args.blobs
            blobs = [(first + b) % args.blobs for b in range(INVENTORY_BLOBS)]
            await cluster.announce(
                node, [Holding(digest(b), size, len(chunks), chunks) for b in blobs], []
            )

        async def heartbeat(k: int) -> None:
            await cluster.heartbeat(node_id(k % args.nodes), Load())

        calls = args.calls
        await self.measure(
            f"Locate of {len(chunks)} chunks held whole", calls, lambda _: locate(False)
        )
        await self.measure("Announce of one chunk", calls, announce_one)
        await self.measure(
            f"join and Announce of {INVENTORY_BLOBS} whole blobs",
            max(1, calls // 20),
            join_and_announce,
        )
        await self.measure("Locate of a cold blob, taking leases", calls, lambda _: locate(True))
        await self.measure("Heartbeat", calls, heartbeat)
        await cluster.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracker_costs", description=__doc__)
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--blobs", type=int, default=250)
    parser.add_argument("--chunks-per-blob", type=int, default=40)
    parser.add_argument("--holders", type=int, default=20, help="nodes holding each blob")
    parser.add_argument("--calls", type=int, default=200, help="calls of each kind")
    args = parser.parse_args(argv)
    print("memory:")
    costs = Costs(args, None)
    asyncio.run(costs.run(Cluster(store=MemoryStore(costs.rng), rng=costs.rng)))
    with TemporaryDirectory(prefix="tracker-costs-") as tmp:
        server = RedisProcess(Path(tmp))
        try:
            server.wait_ready()
            print("redis:")
            costs = Costs(args, Counters(server.client))
            store = open_store(StoreConfig(store=server.url), 10.0, costs.rng)
            asyncio.run(costs.run(Cluster(store=store, rng=costs.rng)))
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
