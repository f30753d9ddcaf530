"""Blobs by digest: the local store first, then one shared download from upstream; when the
store has no room (its disk is full), straight from the upstream for each request, stored
nowhere (a download that runs out of room mid-way goes on that way for its readers)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial

from distributed_images.recent import Recent
from node.downloads import HOLDBACK, Download, Downloads, Fill, Source, UpstreamFill, blocks_between
from node.errors import ContentInvalid, StoreFull
from node.metrics import NodeMetrics
from node.oci.descriptors import Sizes
from node.p2p.swarm import Swarm
from node.store.backend import Segment
from node.store.contentstore import BlobInfo, ContentStore, unwritable
from node.upstream.client import UpstreamClient
from node.upstream.registries import Upstream

log = logging.getLogger(__name__)

MAX_UNREAD = 1024


@dataclass
class BlobHandle:
    """A blob ready to be sent: from the store (`info`), following a download, or (neither)
    straight from the upstream."""

    digest: str
    size: int
    info: BlobInfo | None
    download: Download | None
    store: ContentStore
    fetched_by: Fill | None = None  # how a blob fetched ahead of its first client came in
    upstream: Source | None = None  # where to stream from when the store cannot take it
    uncached_from: int | None = None  # from this offset on, the bytes come straight from there

    def source_at(self, offset: int) -> str:
        """The `blob_bytes_total` source of the byte at `offset`: cache, seed, peer, upstream."""
        if self.uncached_from is not None and offset >= self.uncached_from:
            return "upstream"
        fill = self.download.fill if self.download is not None else self.fetched_by
        if fill is not None:
            return fill.source_at(offset)
        return "seed" if self.store.pinned(self.digest) else "cache"

    def pieces(self, start: int, end: int) -> AsyncIterator[bytes | Segment]:
        """Byte blocks or file segments; open a segment's file before the next await."""
        if self.info is not None:
            return self.store.pieces(self.info, start, end)
        if self.download is not None:
            return self._following(start, end)
        return self._uncached(start, end)

    async def _following(self, start: int, end: int) -> AsyncIterator[bytes | Segment]:
        assert self.download is not None
        position = start
        try:
            async for piece in self.download.read(start, end):
                yield piece
                position += piece.length if isinstance(piece, Segment) else len(piece)
        except (StoreFull, OSError) as e:
            if self.upstream is None or not unwritable(e):
                raise
            async for block in self._uncached(position, end):
                yield block

    async def _uncached(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes [start, end) straight from the upstream for this request. The whole blob is
        hashed as it goes, and its last HOLDBACK bytes sent only once it matches its digest."""
        assert self.upstream is not None
        self.uncached_from = start if self.uncached_from is None else self.uncached_from
        hasher = hashlib.sha256() if (start, end) == (0, self.size) else None
        held = b""
        async with self.upstream(start, None if end == self.size else end) as stream:
            async for block in blocks_between(stream, start, end):
                for piece in block:
                    if hasher is None:
                        yield piece
                        continue
                    hasher.update(piece)
                    held += piece
                    if len(held) > HOLDBACK:
                        yield held[:-HOLDBACK]
                        held = held[-HOLDBACK:]
        if hasher is not None and "sha256:" + hasher.hexdigest() != self.digest:
            raise ContentInvalid("upstream blob does not match its digest", {"digest": self.digest})
        if held:
            yield held


class Blobs:
    def __init__(
        self,
        store: ContentStore,
        downloads: Downloads,
        upstream: UpstreamClient,
        metrics: NodeMetrics,
        sizes: Sizes,
        swarm: Swarm | None = None,
    ) -> None:
        self._store = store
        self._downloads = downloads
        self._upstream = upstream
        self._metrics = metrics
        self._sizes = sizes
        self._swarm = swarm
        # Blobs fetched ahead of their clients (prefetch, preheat), none of which has read them
        # yet: the first is counted as served from where the bytes came, not from the cache.
        self._unread: Recent[str, Fill] = Recent(MAX_UNREAD)

    async def _cached(self, digest: str) -> BlobHandle | None:
        info = await self._store.check(digest)
        if info is None:
            return None
        fetched_by = self._unread.pop(digest)
        return BlobHandle(digest, info.size, info, None, self._store, fetched_by)

    def stored(self, digest: str) -> BlobHandle | None:
        """A stored blob or manifest as it is, to be sent (never a suspect's copy)."""
        info = self._store.stat(digest)
        return BlobHandle(digest, info.size, info, None, self._store) if info else None

    async def open(self, upstream: Upstream, repo: str, digest: str) -> BlobHandle:
        """The blob for a client: from the store, or following its download (started now)."""
        handle, started = await self._open(upstream, repo, digest)
        if handle.download is not None:
            self._unread.pop(digest)  # this client follows it: it is read
            if not started:
                self._metrics.downloads_shared.inc()
        return handle

    async def _open(
        self, upstream: Upstream, repo: str, digest: str, size: int | None = None
    ) -> tuple[BlobHandle, bool]:
        """The blob, and whether this call started its download."""
        cached = await self._cached(digest)
        if cached:
            return cached, False
        source = partial(self._upstream.blob, upstream, repo, digest)
        download = self._downloads.get(digest)
        started = False
        if download is None:
            known = size or self._sizes.get(upstream.ns, upstream.repository(repo), digest)
            if known is None and self._through_swarm(digest):  # it needs the size first
                known = await self._upstream_size(upstream, repo, digest)
            if known is not None and not self._store.room_for(known):
                return self._uncached(digest, known, source), False
            fill = await self._fill(upstream, repo, digest, known)
            # Another request may have started it while we asked for the size.
            download = self._downloads.get(digest)
            if download is None:
                self._unread.pop(digest)
                download, started = self._downloads.start(digest, fill), True
                self._note_origin(download, upstream, repo)
        try:
            size = await download.size()
        except StoreFull:
            size = await self._upstream_size(upstream, repo, digest)
            return self._uncached(digest, size, source), started
        handle = BlobHandle(digest, size, None, download, self._store, upstream=source)
        return handle, started

    def _uncached(self, digest: str, size: int, source: Source) -> BlobHandle:
        self._metrics.uncached_blobs.inc()
        return BlobHandle(digest, size, None, None, self._store, upstream=source)

    def _note_origin(self, download: Download, upstream: Upstream, repo: str) -> None:
        """Once stored, the blob's origin is kept: where to fetch it again if it is damaged."""

        def stored(_: object) -> None:
            if download.info is not None:
                self._store.set_origin(download.digest, upstream.ns, repo)

        assert download.task is not None
        download.task.add_done_callback(stored)

    async def verified(self, handle: BlobHandle) -> BlobHandle:
        """The blob once it is verified and stored: a handle that follows a download waits for
        the download's end (and raises its error)."""
        if handle.download is None:
            return handle
        info = await handle.download.stored()
        return BlobHandle(handle.digest, info.size, info, None, self._store, handle.download.fill)

    def present(self, digest: str) -> bool:
        """Whether the blob is stored or on its way."""
        return self._store.stat(digest) is not None or self._downloads.get(digest) is not None

    async def fetch(
        self, upstream: Upstream, repo: str, digest: str, size: int | None = None
    ) -> None:
        """Get the blob into the store as a client's pull would; return once it is stored.
        `size`, when the caller knows it, spares asking the upstream."""
        if self._store.stat(digest) is not None:
            return
        handle, started = await self._open(upstream, repo, digest, size)
        download = handle.download
        if handle.info is None and download is None:
            raise StoreFull("no room in the store", {"digest": digest})
        if download is None or download.task is None:
            return  # stored meanwhile
        if started:
            # Unread until a client opens it: noted now, so a client that comes the moment
            # it is stored still counts its bytes by their source.
            self._unread.remember(digest, download.fill)
        await asyncio.shield(download.task)
        if download.error is not None:
            raise download.error

    def _through_swarm(self, digest: str) -> bool:
        swarm = self._swarm
        return swarm is not None and swarm.pullable and swarm.trusts(digest)

    async def _fill(self, upstream: Upstream, repo: str, digest: str, size: int | None) -> Fill:
        """How the blob comes in; `size`, if known (the swarm needs it)."""
        source = partial(self._upstream.blob, upstream, repo, digest)
        swarm = self._swarm
        if swarm is not None and self._through_swarm(digest):
            if size is None:
                size = await self._upstream_size(upstream, repo, digest)
            log.info("pulling blob through the swarm", extra={"digest": digest, "bytes": size})
            return swarm.pull(digest, size, source)
        if swarm is not None and swarm.pullable:
            log.warning(
                "blob failed its digest check through the cluster; fetching it from upstream",
                extra={"digest": digest},
            )
            self._metrics.fallbacks.labels("corrupt").inc()
        elif swarm is not None and swarm.clustered:
            self._metrics.fallbacks.labels("tracker").inc()  # not joined: no tracker answers
        log.info(
            "fetching blob from upstream",
            extra={"digest": digest, "registry": upstream.ns, "repo": repo},
        )
        after = partial(swarm.seed, publish=True) if swarm is not None else None
        return UpstreamFill(digest, source, after=after)

    async def size(self, upstream: Upstream, repo: str, digest: str) -> int:
        """What HEAD answers: known sizes locally, else the upstream's, without a download."""
        info = await self._store.check(digest)
        if info is not None:
            return info.size
        download = self._downloads.get(digest)
        if download is not None:
            return await download.size()
        return await self._upstream_size(upstream, repo, digest)

    async def _upstream_size(self, upstream: Upstream, repo: str, digest: str) -> int:
        """The blob's size as the upstream says it, if this node fetches blobs that large."""
        size = await self._upstream.blob_size(upstream, repo, digest)
        return self._downloads.check_size(digest, size)
