"""Blobs by digest: the local store first, then one shared download from upstream."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial

from node.downloads import Download, Downloads, Fill, UpstreamFill
from node.metrics import NodeMetrics
from node.oci.descriptors import Sizes
from node.p2p.swarm import Swarm
from node.store.backend import Segment
from node.store.contentstore import BlobInfo, ContentStore
from node.upstream.client import UpstreamClient
from node.upstream.registries import Upstream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlobHandle:
    """A blob ready to be sent: from the store (`info`) or following a download."""

    digest: str
    size: int
    info: BlobInfo | None
    download: Download | None
    store: ContentStore

    def source_at(self, offset: int) -> str:
        """The `blob_bytes_total` source of the byte at `offset`: cache, seed, peer, upstream."""
        if self.download is not None:
            return self.download.fill.source_at(offset)
        return "seed" if self.store.pinned(self.digest) else "cache"

    def pieces(self, start: int, end: int) -> AsyncIterator[bytes | Segment]:
        """Byte blocks or file segments; open a segment's file before the next await."""
        if self.info is not None:
            return self.store.pieces(self.info, start, end)
        assert self.download is not None
        return self.download.read(start, end)


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

    def _cached(self, digest: str) -> BlobHandle | None:
        info = self._store.stat(digest)
        if info is None:
            return None
        return BlobHandle(digest, info.size, info, None, self._store)

    async def open(self, upstream: Upstream, repo: str, digest: str) -> BlobHandle:
        cached = self._cached(digest)
        if cached:
            return cached
        download = self._downloads.get(digest)
        if download is None:
            fill = await self._fill(upstream, repo, digest)
            # Another request may have started it while we asked for the size.
            download = self._downloads.get(digest) or self._downloads.start(digest, fill)
        else:
            self._metrics.downloads_shared.inc()
        size = await download.size()
        return BlobHandle(digest, size, None, download, self._store)

    async def _fill(self, upstream: Upstream, repo: str, digest: str) -> Fill:
        source = partial(self._upstream.blob, upstream, repo, digest)
        swarm = self._swarm
        if swarm is not None and swarm.available:
            size = self._sizes.get(digest)
            if size is None:
                size = await self._upstream.blob_size(upstream, repo, digest)
            log.info("pulling blob through the swarm", extra={"digest": digest, "bytes": size})
            return swarm.pull(digest, size, source)
        log.info(
            "fetching blob from upstream",
            extra={"digest": digest, "registry": upstream.ns, "repo": repo},
        )
        after = partial(swarm.seed, publish=True) if swarm is not None else None
        return UpstreamFill(digest, source, after=after)

    async def size(self, upstream: Upstream, repo: str, digest: str) -> int:
        """What HEAD answers: known sizes locally, else the upstream's, without a download."""
        cached = self._cached(digest)
        if cached:
            return cached.size
        download = self._downloads.get(digest)
        if download is not None:
            return await download.size()
        return await self._upstream.blob_size(upstream, repo, digest)
