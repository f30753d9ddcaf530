"""Blobs by digest: the local store first, then one shared download from upstream."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial

from node.downloads import Download, Downloads, UpstreamFill
from node.metrics import NodeMetrics
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
    source: str  # a `blob_bytes_total` source label: cache, seed, peer or upstream
    info: BlobInfo | None
    download: Download | None
    store: ContentStore

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
    ) -> None:
        self._store = store
        self._downloads = downloads
        self._upstream = upstream
        self._metrics = metrics

    def _cached(self, digest: str) -> BlobHandle | None:
        info = self._store.stat(digest)
        if info is None:
            return None
        source = "seed" if self._store.pinned(digest) else "cache"
        return BlobHandle(digest, info.size, source, info, None, self._store)

    async def open(self, upstream: Upstream, repo: str, digest: str) -> BlobHandle:
        cached = self._cached(digest)
        if cached:
            return cached
        download = self._downloads.get(digest)
        if download is None:
            source = partial(self._upstream.blob, upstream, repo, digest)
            download = self._downloads.start(digest, UpstreamFill(digest, source))
            log.info(
                "fetching blob from upstream",
                extra={"digest": digest, "registry": upstream.ns, "repo": repo},
            )
        else:
            self._metrics.downloads_shared.inc()
        size = await download.size()
        return BlobHandle(digest, size, download.fill.source, None, download, self._store)

    async def size(self, upstream: Upstream, repo: str, digest: str) -> int:
        """What HEAD answers: known sizes locally, else the upstream's, without a download."""
        cached = self._cached(digest)
        if cached:
            return cached.size
        download = self._downloads.get(digest)
        if download is not None:
            return await download.size()
        return await self._upstream.blob_size(upstream, repo, digest)
