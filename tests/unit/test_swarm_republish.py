"""A tracker that started afresh asks a chunk's holders to publish its metainfo again, and takes it
once two of them agree. A node whose pull holds the chunk whole is one of those holders (the
tracker counted it so): it answers with the chunk's metainfo. Before, only a stored blob's chunks
had an answer, so a chunk held by one stored blob and one pull under way waited for a second
witness that never came, its pullers stalled, and each fetched it from upstream. The store is
real; fakes stand in for the libtorrent session and the tracker."""

from __future__ import annotations

import asyncio
from pathlib import Path

from node.metrics import NodeMetrics
from node.p2p import metainfo
from node.p2p.pull import PullConfig
from node.p2p.swarm import Swarm
from node.store.chunking import MiB, chunk_name, chunk_range
from node.store.contentstore import ContentStore
from tests.component.test_tracker_store import eventually
from tests.unit.test_swarm_pull import FakeSession, FakeTracker, Writer
from tracker.client import ChunkPlacement, Directive, Peer, Placement

DIGEST = "sha256:" + "d" * 64
SIZE = 8 * MiB  # two chunks of 4 MiB


class Tracker(FakeTracker):
    """Places chunk 0 with a source and its metainfo; chunk 1 waits on a fetch that never ends."""

    async def locate(self, *args: object, **kwargs: object) -> Placement:
        source = (Peer("node0", "", "10.0.0.2:6881", ""),)
        swarm = ChunkPlacement(
            0, Directive.SWARM, self.torrent.metainfo, source, frozenset(), None, 0.0
        )
        wait = ChunkPlacement(1, Directive.WAIT, None, (), frozenset(), None, 0.0)
        return Placement(DIGEST, 2, (swarm, wait))

    async def withdraw(self, *args: object, **kwargs: object) -> None:
        pass


class Session(FakeSession):
    """Chunk torrents finish as soon as they are added."""

    async def finished(self, infohash: str) -> None:
        pass


class Membership:
    joined = True
    embedded = False
    node_id = "node1"
    joins = 1

    def __init__(self, client: Tracker) -> None:
        self.client = client

    async def rejoined(self, since: int) -> bool:
        return False


async def test_a_pull_under_way_publishes_again_the_metainfo_of_a_chunk_it_holds_whole(
    tmp_path: Path,
) -> None:
    chunks = tmp_path / "chunks"
    chunks.mkdir()
    path = chunks / chunk_name(DIGEST, 0)
    start, end = chunk_range(SIZE, 0)
    path.write_bytes(b"x" * (end - start))
    torrent = metainfo.from_file(path, DIGEST, SIZE, 0)
    store = ContentStore.open(tmp_path / "store")
    swarm = Swarm(store, Session(), NodeMetrics(), PullConfig())  # type: ignore[arg-type]
    swarm.attach(Membership(Tracker(torrent)))  # type: ignore[arg-type]
    pull = swarm.pull(DIGEST, SIZE, upstream=None)  # type: ignore[arg-type]
    running = asyncio.create_task(pull.run(lambda size: Writer(chunks)))  # type: ignore[arg-type, return-value]
    try:

        def chunk_0_arrived() -> bool:
            held = pull.held()
            return held is not None and held.chunks == (0,)

        await eventually(chunk_0_arrived)
        assert await swarm.metainfo(DIGEST, 0) == torrent.metainfo
        assert await swarm.metainfo(DIGEST, 1) is None  # not here yet
        assert await swarm.metainfo("sha256:" + "e" * 64, 0) is None  # neither stored nor pulled
        await pull.failed(RuntimeError("the client went away"))
        assert await swarm.metainfo(DIGEST, 0) is None  # an ended pull holds nothing
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
