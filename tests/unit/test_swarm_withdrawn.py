"""A chunk a holder withdrew from the cluster (its file failed a read once, or a check found it
damaged) is seeded again once its blob is read back whole and matches its digest, and the
tracker hears the node holds it. The store is real; fakes stand in for the libtorrent session
and the tracker."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from node.metrics import NodeMetrics
from node.p2p import metainfo
from node.p2p.metainfo import ChunkTorrent
from node.p2p.pull import PullConfig
from node.p2p.swarm import Swarm
from node.store.chunking import MiB, chunk_count, chunk_name
from node.store.contentstore import BlobInfo, ContentStore
from node.store.integrity import SCRUB, Damaged, Verdict
from tracker.client import HeldBlob


class Session:
    """What is seeded, by infohash."""

    def __init__(self) -> None:
        self.seeding: set[str] = set()

    async def add(self, torrent: ChunkTorrent, save_path: Path, *, seed: bool, **_: object) -> None:
        self.seeding.add(torrent.infohash)

    def remove(self, infohash: str) -> None:
        self.seeding.discard(infohash)


class Client:
    def __init__(self) -> None:
        self.withdrawn: list[tuple[list[str], list[int]]] = []

    async def withdraw(
        self, node_id: str, digests: Iterable[str], *_: object, chunks: Iterable[int] = ()
    ) -> None:
        self.withdrawn.append((list(digests), list(chunks)))


class Membership:
    joined = True
    embedded = False
    node_id = "node1"

    def __init__(self) -> None:
        self.client = Client()
        self.announced: list[HeldBlob] = []

    async def announce(self, held: HeldBlob) -> None:
        self.announced.append(held)


class Repair:
    """As `node.repair` does: a blob verified whole is seeded (again)."""

    def __init__(self, swarm: Swarm) -> None:
        self.swarm = swarm
        self.seeding: list[asyncio.Task[None]] = []

    def restored(self, info: BlobInfo) -> None:
        self.seeding.append(asyncio.create_task(self.swarm.seed(info)))

    def damaged(self, blob: Damaged) -> None:
        pass

    def verified(self, reason: str, length: int) -> None:
        pass


async def test_a_withdrawn_chunk_is_seeded_again_once_its_blob_is_verified_whole(
    tmp_path: Path,
) -> None:
    store = ContentStore.open(tmp_path)
    session, membership = Session(), Membership()
    swarm = Swarm(store, session, NodeMetrics(), PullConfig())  # type: ignore[arg-type]
    swarm.attach(membership)  # type: ignore[arg-type]
    repair = Repair(swarm)
    store.events = repair
    try:
        data = os.urandom(40 * MiB)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        info = await store.put(digest, data)
        count = chunk_count(info.size)
        await swarm.seed(info)
        directory = store.directory(digest)
        assert directory is not None
        torrent = metainfo.from_file(directory / chunk_name(digest, 1), digest, info.size, 1)
        assert len(session.seeding) == count and torrent.infohash in session.seeding

        swarm.unreadable(torrent.infohash)  # a read of its file failed, once
        await asyncio.sleep(0)
        assert torrent.infohash not in session.seeding
        assert membership.client.withdrawn == [([digest], [1])]
        assert (await swarm.inventory()).blobs[0].chunks == tuple(c for c in range(count) if c != 1)

        assert await store.verify(digest, SCRUB) is Verdict.GOOD
        await asyncio.gather(*repair.seeding)
        assert torrent.infohash in session.seeding and len(session.seeding) == count
        assert membership.announced[-1] == HeldBlob(digest, info.size, count, tuple(range(count)))
        assert (await swarm.inventory()).blobs[0].chunks == tuple(range(count))
    finally:
        store.close()
