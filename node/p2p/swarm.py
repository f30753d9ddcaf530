"""The node's side of the swarm: seed every complete blob, pull cold blobs through the cluster.

Every blob in the store is seeded as its chunk torrents (kept in the store's metadata, so a
restart seeds again without rehashing). A blob fetched from upstream in one stream is published
chunk by chunk once it is complete; a blob pulled through the swarm was published chunk by chunk
while it arrived. The tracker hears of each blob as it completes, and of the whole inventory at
every (re)join through `inventory()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from distributed_images.recent import Recent
from node.downloads import Source
from node.metrics import NodeMetrics
from node.p2p import metainfo
from node.p2p.announcer import Announcer
from node.p2p.metainfo import ChunkTorrent, MetainfoInvalid
from node.p2p.pull import PullConfig, SwarmPull
from node.p2p.session import PeerSession
from node.store import integrity
from node.store.chunking import chunk_count, chunk_name
from node.store.contentstore import BlobInfo, ContentStore
from tracker.client import HeldBlob, Inventory, Resolution, SeededRef, TrackerClient
from tracker.errors import MetainfoUnconfirmed, TrackerError

if TYPE_CHECKING:
    from node.membership import Membership

log = logging.getLogger(__name__)

MAX_DISTRUSTED = 1024
RESOLVE_RETRY_SECONDS = 0.5  # between asks for a seeded tag while the tracker settles


class Swarm:
    def __init__(
        self,
        store: ContentStore,
        session: PeerSession,
        metrics: NodeMetrics,
        config: PullConfig,
        refs: Callable[[], list[tuple[str, str]]] = list,
    ) -> None:
        self._refs = refs  # seeded (reference, manifest digest) pairs
        self._announced_refs: set[tuple[str, str]] = set()
        self._store = store
        self._session = session
        self._metrics = metrics
        self._config = config
        self._membership: Membership | None = None
        self._announcer: Announcer | None = None  # chunk announcements of the pulls, coalesced
        self._seeded: dict[str, list[str]] = {}  # digest -> infohashes
        # digest -> chunks seeded no more, their files unreadable or damaged: not announced again
        # until the blob leaves the store (purged by the scrub or a client's read, or evicted)
        # or is read back whole and matches its digest (then they are seeded again)
        self._unreadable: dict[str, set[int]] = {}
        self._pulls: weakref.WeakSet[SwarmPull] = weakref.WeakSet()  # under way, or just ended
        # Blobs that failed their digest check when pulled through the cluster: the next try
        # goes to the upstream, until one is stored.
        self._distrusted: Recent[str, None] = Recent(MAX_DISTRUSTED)

    def attach(self, membership: Membership) -> None:
        self._membership = membership
        self._announcer = Announcer(membership.client, membership.node_id)

    @property
    def available(self) -> bool:
        """Whether a cold blob can be pulled through the cluster right now. A node with an
        embedded tracker is a cluster of one: it fetches in one upstream stream instead."""
        membership = self._membership
        return membership is not None and membership.joined and not membership.embedded

    @property
    def pullable(self) -> bool:
        """Whether a cold blob is pulled through the cluster: the node is joined, or was a
        moment ago. A tracker that restarts (or a replica that moves) comes back within a stall
        timeout, and the pull waits that long for it rather than fetch the whole blob from
        upstream while the cluster may hold it (`SwarmPull._coordinate`)."""
        membership = self._membership
        return (
            membership is not None
            and not membership.embedded
            and membership.joined_within(self._config.stall_timeout)
        )

    def cluster(self) -> tuple[TrackerClient, str] | None:
        """The tracker client and this node's id, when it is part of a cluster right now."""
        if not self.available:
            return None
        assert self._membership is not None
        return self._membership.client, self._membership.node_id

    @property
    def node_id(self) -> str:
        return self._membership.node_id if self._membership is not None else ""

    async def resolve(self, ref: str) -> list[Resolution]:
        """The tracker's resolutions of a seeded reference (none when it has none, or cannot
        be asked). A node whose tracker is away a moment, or came back having forgotten the
        cluster (it learns the tags again as their seeders join again), asks until a stall
        timeout has passed since then, twice that at most in all: only the cluster has a seeded
        tag, and "not found" from a tracker rebuilding its state would fail a pull that a few
        seconds' wait serves."""
        membership = self._membership
        if membership is None or membership.embedded:
            return []
        loop = asyncio.get_running_loop()
        grace = self._config.stall_timeout
        give_up = loop.time() + 2 * grace  # for the tracker to come back, then to learn the tag
        while True:
            if membership.joined:
                try:
                    found = await membership.client.resolve(ref, membership.node_id)
                except TrackerError as e:
                    log.debug("resolve failed", extra={"ref": ref, "error": e.message})
                    found = []
                if found:
                    return found
            left = min(membership.unsettled_for(grace), give_up - loop.time())
            if left <= 0:
                return []
            wait = min(RESOLVE_RETRY_SECONDS, left)
            if membership.joined:
                await asyncio.sleep(wait)
            else:
                await membership.wait_joined(wait)

    @property
    def clustered(self) -> bool:
        """A standalone node (embedded tracker) has nobody to seed to."""
        return self._membership is not None and not self._membership.embedded

    def trusts(self, digest: str) -> bool:
        """Whether the blob may be pulled through the cluster (it has not failed its check)."""
        return digest not in self._distrusted

    def distrust(self, digest: str) -> None:
        self._distrusted.remember(digest, None)

    def pull(self, digest: str, size: int, upstream: Source) -> SwarmPull:
        assert self._membership is not None
        pull = SwarmPull(
            digest,
            size,
            upstream,
            self._session,
            self._membership.client,
            self._membership.node_id,
            self._config,
            self.completed,
            self.distrust,
            self._metrics,
            self._announcer,
            self._membership,
        )
        self._pulls.add(pull)
        return pull

    async def completed(self, info: BlobInfo, torrents: list[ChunkTorrent]) -> None:
        """A blob pulled through the swarm is in the store: its chunk torrents (those it still
        has: some may have been taken over by range fetches) seed from its final place."""
        directory = self._store.directory(info.digest)
        if directory is None:
            return
        for torrent in torrents:
            self._session.move(torrent.infohash, directory)
        if len(torrents) == chunk_count(info.size):
            self._store.set_torrents(info.digest, [t.metainfo for t in torrents])
            self._seeded[info.digest] = [t.infohash for t in torrents]
            await self._announce(info)
        else:
            await self.seed(info, publish=True)

    async def seed(self, info: BlobInfo, publish: bool = False) -> None:
        """Seed a complete blob's chunks; with `publish`, give their metainfo to the tracker. A
        blob seeded already (it was just verified whole) has the chunks it withdrew seeded
        again."""
        self._distrusted.pop(info.digest)  # stored, so verified
        directory = self._store.directory(info.digest)
        if directory is None or not self.clustered:
            return
        if info.digest in self._seeded:
            await self._seed_withdrawn(info, directory)
            return
        torrents = await self._torrents(info)
        for torrent in torrents:
            await self._session.add(torrent, directory, seed=True)
        self._seeded[info.digest] = [t.infohash for t in torrents]
        if publish:
            await self._publish(info, torrents)
        await self._announce(info)

    async def _seed_withdrawn(self, info: BlobInfo, directory: Path) -> None:
        """The blob was read back whole and matched its digest: the chunks it withdrew (a read
        that failed once, a check that found what the blob's digest does not) are seeded again,
        each piece checked when first asked for, and the tracker hears it holds them."""
        withdrawn = self._unreadable.pop(info.digest, set())
        if not withdrawn:
            return
        torrents = await self._torrents(info)
        seeded = self._seeded[info.digest]
        for chunk in sorted(withdrawn):
            seeded[chunk] = torrents[chunk].infohash
            await self._session.add(torrents[chunk], directory, seed=True)
        extra = {"digest": info.digest, "chunks": len(withdrawn)}
        log.info("withdrawn chunks seeded again: the blob verified whole", extra=extra)
        await self._announce(info)

    async def _torrents(self, info: BlobInfo) -> list[ChunkTorrent]:
        known = self._store.torrents(info.digest)
        if len(known) == chunk_count(info.size):
            with contextlib.suppress(MetainfoInvalid):
                return [metainfo.parse(m, info.digest, info.size, i) for i, m in enumerate(known)]
        directory = self._store.directory(info.digest)
        assert directory is not None
        torrents = [
            await asyncio.to_thread(
                metainfo.from_file,
                directory / chunk_name(info.digest, index),
                info.digest,
                info.size,
                index,
            )
            for index in range(chunk_count(info.size))
        ]
        self._store.set_torrents(info.digest, [t.metainfo for t in torrents])
        return torrents

    async def seed_store(self) -> None:
        """Seed everything the store holds (at start: a restarted node seeds its store again)."""
        blobs = self._store.blobs()
        for info in blobs:
            try:
                await self.seed(info)
            except (OSError, MetainfoInvalid) as e:
                log.warning("cannot seed blob", extra={"digest": info.digest, "error": str(e)})
        log.info(
            "seeding the store", extra={"blobs": len(blobs), "torrents": self._session.seeding()}
        )

    def corrupt(self, infohash: str) -> None:
        """A seeded chunk failed its piece hash when a peer first asked for it (libtorrent
        checks each piece of a blob seeded without hashing it again, after a restart, once):
        the blob on disk is damaged, `_damaged`."""
        seeded = self._seeded_chunk(infohash)
        if seeded is not None:
            self._damaged(*seeded)

    def unreadable(self, infohash: str) -> None:
        """A seeded chunk's file lost bytes or fails reads: peers sent here for it would wait on
        a source that cannot send it. It is seeded no more, and the tracker hears that this node
        lacks that chunk alone, so it sends pullers to its other holders, or leases it out when
        there are none; the blob's other chunks are seeded on. The blob is left to the scrub or
        a client's read, which purge it: purged now, its good chunks would go too, and pullers
        with no other source would fetch them all again from upstream."""
        seeded = self._seeded_chunk(infohash)
        if seeded is not None:
            self._withdraw_chunk(*seeded)

    def _withdraw_chunk(self, digest: str, chunk: int) -> bool:
        """Stop seeding the chunk and tell the tracker; False if it was withdrawn already."""
        withdrawn = self._unreadable.setdefault(digest, set())
        if chunk in withdrawn:
            return False
        withdrawn.add(chunk)
        self._session.remove(self._seeded[digest][chunk])
        self._spawn_withdrawal(digest, [chunk])
        return True

    def _damaged(self, digest: str, chunk: int) -> None:
        """A seeded chunk's bytes are not its torrent's: it is withdrawn as an unreadable one
        is, so the tracker leases it out and the cluster fetches it once, and the blob is
        served to no client of this node until it is verified again, which purges it
        (`ContentStore.suspect`). Its other chunks are seeded on meanwhile: purged at once, the
        blob would take their only source in a rollout away, and its pullers would fetch them
        all again from upstream."""
        if self._withdraw_chunk(digest, chunk):
            log.warning("seeded chunk damaged; withdrawn", extra={"digest": digest, "chunk": chunk})
            self._store.suspect(digest, integrity.SWARM)

    async def check(self, digest: str, chunks: Sequence[int]) -> None:
        """A peer's piece checks failed on these chunks (the tracker's check order): hash each
        one this node seeds against its torrent. One whose file a disk damaged behind the node's
        back (libtorrent checks a piece when it arrives, not each time it is sent) is
        `_damaged`."""
        size = self._store.size(digest)
        directory = self._store.directory(digest)
        seeded = self._seeded.get(digest)
        if size is None or directory is None or seeded is None:
            return
        withheld = self._unreadable.get(digest, set())
        for chunk in sorted({c for c in chunks if 0 <= c < len(seeded)} - withheld):
            path = directory / chunk_name(digest, chunk)
            extra: dict[str, object] = {"digest": digest, "chunk": chunk}
            try:
                found = await asyncio.to_thread(metainfo.from_file, path, digest, size, chunk)
                damaged = found.infohash != seeded[chunk]
            except (OSError, MetainfoInvalid) as e:
                damaged, extra["error"] = True, str(e)
            if not damaged:
                log.info("seeded chunk checked on a peer's report: intact", extra=extra)
            elif self._seeded.get(digest) is seeded:
                if "error" in extra:
                    log.info("seeded chunk could not be checked", extra=extra)
                self._damaged(digest, chunk)

    def _seeded_chunk(self, infohash: str) -> tuple[str, int] | None:
        """The blob and chunk index of a seeded chunk torrent, if it is one."""
        for digest, infohashes in self._seeded.items():
            if infohash in infohashes:
                return digest, infohashes.index(infohash)
        return None

    def forget(self, digest: str) -> None:
        """The blob left the store (evicted): stop seeding it and tell the tracker."""
        self._unreadable.pop(digest, None)
        for infohash in self._seeded.pop(digest, []):
            self._session.remove(infohash)
        self._spawn_withdrawal(digest)

    def _spawn_withdrawal(self, digest: str, chunks: list[int] | None = None) -> None:
        """Tell the tracker, in the background, that this node no longer holds the blob, or
        these chunks of it."""
        membership = self._membership
        if membership is not None and membership.joined:
            withdrawal = self._withdraw(membership, digest, chunks or [])
            task = asyncio.get_running_loop().create_task(withdrawal)
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _withdraw(self, membership: Membership, digest: str, chunks: list[int]) -> None:
        with contextlib.suppress(TrackerError):
            await membership.client.withdraw(membership.node_id, [digest], chunks=chunks)

    async def _publish(self, info: BlobInfo, torrents: list[ChunkTorrent]) -> None:
        membership = self._membership
        if membership is None or not membership.joined:
            return
        unconfirmed = 0
        try:
            for torrent in torrents:
                try:
                    await membership.client.publish(
                        membership.node_id,
                        info.digest,
                        info.size,
                        len(torrents),
                        torrent.index,
                        torrent.metainfo,
                    )
                except MetainfoUnconfirmed:
                    unconfirmed += 1  # no lease: taken once another node publishes the same
        except TrackerError as e:
            log.warning("publish failed", extra={"digest": info.digest, "error": e.message})
        if unconfirmed:
            log.debug(
                "metainfo awaits a second source",
                extra={"digest": info.digest, "chunks": unconfirmed},
            )

    async def _announce(self, info: BlobInfo) -> None:
        if self._membership is not None:
            await self._membership.announce(self._held(info))

    def _held(self, info: BlobInfo) -> HeldBlob:
        """A stored blob as the tracker should know it: every chunk whole, but those whose
        files were found unreadable (a tracker that restarted would send peers for them here
        again)."""
        count = chunk_count(info.size)
        lost = self._unreadable.get(info.digest, set())
        return HeldBlob(
            info.digest, info.size, count, tuple(c for c in range(count) if c not in lost)
        )

    async def inventory(self) -> Inventory:
        """Every stored blob, and what the pulls under way hold so far."""
        self._announced_refs = set(self._refs())
        stored = [self._held(info) for info in self._store.blobs()]
        known = {held.digest for held in stored}
        pulling = [h for p in list(self._pulls) if (h := p.held()) and h.digest not in known]
        return Inventory(
            blobs=(*stored, *pulling),
            refs=tuple(SeededRef(ref, digest) for ref, digest in sorted(self._announced_refs)),
        )

    async def metainfo(self, digest: str, chunk: int) -> bytes | None:
        """A chunk's metainfo, for the tracker's republish orders: from the stored blob (seeded
        first if it came in from an archive and was never seeded), or from a pull under way
        that holds the chunk whole (the tracker counts it among the chunk's holders, so it
        may be the second witness the chunk waits for)."""
        info = self._store.stat(digest)
        if info is not None and digest not in self._seeded:
            await self.seed(info)
        known = self._store.torrents(digest)
        if known:
            return known[chunk] if 0 <= chunk < len(known) else None
        for pull in list(self._pulls):
            if pull.digest == digest and (found := pull.metainfo(chunk)) is not None:
                return found
        return None

    async def images_changed(self) -> None:
        """The images directory changed: seed what was imported, tell the tracker which seeded
        references appeared and which went away."""
        await self.seed_store()
        cluster = self.cluster()
        current = set(self._refs())
        added, removed = current - self._announced_refs, self._announced_refs - current
        if cluster is None or not (added or removed):
            return
        client, node_id = cluster
        try:
            if removed:
                await client.withdraw(node_id, [], [SeededRef(r, d) for r, d in sorted(removed)])
            if added:
                await client.announce(node_id, [], [SeededRef(r, d) for r, d in sorted(added)])
            self._announced_refs = current
        except TrackerError as e:
            log.warning("could not announce seeded images", extra={"error": e.message})
