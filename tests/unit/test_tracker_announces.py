"""A replica runs a bounded number of Announce calls at once (`tracker.cluster`): with a store
whose holdings take a while to record (as Redis's do), a burst of nodes announcing their whole
inventory at once, as after Redis restarted, never has more in progress than the bound, and
every announcement is recorded."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

from tracker.cluster import ANNOUNCES_AT_ONCE, Cluster, Holding
from tracker.store import Announced, Claim
from tracker.store.memory import MemoryStore

D = "sha256:" + "d" * 64


class SlowStore(MemoryStore):
    """Records announcements after a pause, counting the calls in progress."""

    in_progress = 0
    most = 0

    async def announce(
        self, node_id: str, claims: Sequence[Claim], now: float, fanout: int, max_blobs: int = 0
    ) -> Announced:
        SlowStore.in_progress += 1
        SlowStore.most = max(SlowStore.most, SlowStore.in_progress)
        try:
            await asyncio.sleep(0.005)
            return await super().announce(node_id, claims, now, fanout, max_blobs)
        finally:
            SlowStore.in_progress -= 1


async def test_a_burst_of_announcements_runs_a_few_at_a_time() -> None:
    store = SlowStore(random.Random(1))
    cluster = Cluster(store=store)
    await cluster.start()
    nodes = [f"n{i}" for i in range(5 * ANNOUNCES_AT_ONCE)]
    for node in nodes:
        await cluster.join(node, "10.0.0.1:8080", "10.0.0.1:6881", "", "i")
    holding = Holding(D, 4 << 20, 4, complete=(0, 1, 2, 3))
    await asyncio.gather(*(cluster.announce(node, [holding], []) for node in nodes))
    assert SlowStore.most == ANNOUNCES_AT_ONCE
    assert sorted(await store.peers.holders(D)) == sorted(nodes)
    await cluster.close()
