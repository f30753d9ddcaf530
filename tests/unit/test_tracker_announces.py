"""A replica runs a bounded number of Announce calls at once (`tracker.cluster`): with a store
whose holdings take a while to record (as Redis's do), a burst of nodes announcing their whole
inventory at once, as after Redis restarted, never has more in progress than the bound, and
every announcement is recorded."""

from __future__ import annotations

import asyncio
import random

from tracker.cluster import ANNOUNCES_AT_ONCE, Cluster, Holding
from tracker.store.memory import MemoryPeers, MemoryStore

D = "sha256:" + "d" * 64


class SlowPeers(MemoryPeers):
    """Records holdings after a pause, counting the calls in progress."""

    in_progress = 0
    most = 0

    async def hold(self, node_id: str, digest: str, complete: int, partial: int) -> int:
        SlowPeers.in_progress += 1
        SlowPeers.most = max(SlowPeers.most, SlowPeers.in_progress)
        try:
            await asyncio.sleep(0.005)
            return await super().hold(node_id, digest, complete, partial)
        finally:
            SlowPeers.in_progress -= 1


async def test_a_burst_of_announcements_runs_a_few_at_a_time() -> None:
    store = MemoryStore(random.Random(1))
    store.peers = SlowPeers(store.peers.store)
    cluster = Cluster(store=store)
    await cluster.start()
    nodes = [f"n{i}" for i in range(5 * ANNOUNCES_AT_ONCE)]
    for node in nodes:
        await cluster.join(node, "10.0.0.1:8080", "10.0.0.1:6881", "", "i")
    holding = Holding(D, 4 << 20, 4, complete=(0, 1, 2, 3))
    await asyncio.gather(*(cluster.announce(node, [holding], []) for node in nodes))
    assert SlowPeers.most == ANNOUNCES_AT_ONCE
    assert sorted(await store.peers.holders(D)) == sorted(nodes)
    await cluster.close()
